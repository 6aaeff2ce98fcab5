"""Run records: one JSON file per run, the contract between training and analysis.

Top-level keys (outside checks read these names): run_id, config, env, teacher, student,
data, compute, quality, curve. Files are named ``<run_id>.json`` and written atomically (temp
file + rename), so a reader never sees half a record and a killed writer leaves no record.

    from study.records import load
    df = load("results/runs")        # one row per run, flattened columns: "compute.train_seconds"
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd

import study

REQUIRED = ("run_id", "config", "env", "teacher", "student", "data", "compute", "quality", "curve")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def env_info(device) -> dict:
    import torch
    import transformers

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "study": study.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device) if str(device) == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }


def record_path(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / f"{run_id}.json"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename, so a reader (or a
    resumed grid) sees the old file or the whole new one, never a part. A writer killed
    midway leaves only ``.<name>.<pid>.tmp``, which ``temporaries`` finds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def temporaries(out_dir: str | Path, run_id: str) -> list[Path]:
    """Temporary files a killed writer of run ``run_id`` may have left in ``out_dir``."""
    return sorted(Path(out_dir).glob(f".{run_id}.*.tmp"))


def write(record: dict, out_dir: str | Path) -> Path:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks required keys: {', '.join(missing)}")
    return atomic_write_text(record_path(out_dir, record["run_id"]), json.dumps(record, indent=1))


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def load(folder: str | Path) -> pd.DataFrame:
    """All records under ``folder`` (recursively) as one DataFrame, one row per run, nested
    keys flattened with dots; the loss curve stays a list in column ``curve``."""
    rows = []
    for path in sorted(Path(folder).rglob("*.json")):
        if path.name.endswith(".lm_eval.json") or path.name.startswith("."):
            continue
        rec = read(path)
        if not all(k in rec for k in REQUIRED):
            continue  # not a run record (e.g. a summary file)
        curve = rec.pop("curve")
        row = pd.json_normalize(rec, sep=".").iloc[0].to_dict()
        row["curve"] = curve
        row["path"] = str(path)
        rows.append(row)
    return pd.DataFrame(rows)
