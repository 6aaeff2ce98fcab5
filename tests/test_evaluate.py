"""The shipped lm-eval task: both answer rules as configured in its YAML, applied by lm-eval's
own regex filter."""

from pathlib import Path

import pytest
import yaml
from lm_eval.filters.extraction import RegexFilter

from study.evaluate import TASK, TASKS_DIR, task_manager


class _FunctionLoader(yaml.SafeLoader):
    pass


_FunctionLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _filter(name):
    spec = yaml.load((TASKS_DIR / f"{TASK}.yaml").read_text(), Loader=_FunctionLoader)
    (entry,) = [f for f in spec["filter_list"] if f["name"] == name]
    args = {k: v for k, v in entry["filter"][0].items() if k != "function"}
    return RegexFilter(**args)


@pytest.mark.parametrize("text, last, first", [
    (r"<think>So \boxed{7}. Wait. Yes, \boxed{3}.</think>The answer is \boxed{9}.", "9", "7"),
    (r"<think>So \boxed{4}. Let me verify. 4+1=5.", "4", "4"),
    ("no answer at all", "[no answer]", "[no answer]"),
])
def test_answer_rules(text, last, first):
    assert list(_filter("last_boxed").apply([[text]], [{}])) == [[last]]
    assert list(_filter("first_boxed").apply([[text]], [{}])) == [[first]]


def test_task_loads_offline_from_package(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text('{"id": "a", "prompt": "<|user|>Compute 1+2 mod 10.<|assistant|>", "answer": "3"}\n')
    tm = task_manager(str(data))
    assert TASK in tm.all_tasks and len(tm.all_tasks) < 10  # lm-eval's own tasks not indexed
    task = tm.load([TASK])["tasks"][TASK]
    docs = list(task.test_docs())
    assert docs[0]["answer"] == "3" and task.doc_to_text(docs[0]).endswith("<|assistant|>")
    assert Path(task.config.metadata["config_source"]).parent == TASKS_DIR
