"""Dataset loader for the study_synthetic lm-eval task (see study_synthetic.yaml)."""

import datasets


def load_split(data_files: str, **metadata) -> datasets.DatasetDict:
    """lm-eval passes the TaskManager's metadata as keyword arguments; only data_files is ours."""
    return datasets.load_dataset("json", data_files={"test": data_files})
