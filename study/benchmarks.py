"""The paper's benchmarks: AIME24 and AIME25 (the paper's), MATH-500 and GPQA-Diamond.

Each benchmark is an lm-eval task YAML shipped in ``study/tasks/`` (``<name>.yaml``), a hub
dataset with its schema, and a rule that turns a row into a prompt and a target:

- ``aime24`` (``HuggingFaceH4/aime_2024``, split ``train``: ``id, problem, solution, answer,
  url, year``), ``aime25`` (``yentinglin/aime_2025``, split ``train``, the same columns
  (assumed: only ``problem`` and ``answer`` are read)), ``math500`` (``HuggingFaceH4/MATH-500``,
  split ``test``: ``problem, solution, answer, subject, level, unique_id``): the prompt is
  lighteval's math prompt around ``problem``, the target is ``answer``, scored by the paper's
  rule (``study.scoring.correct``);
- ``gpqa_diamond`` (``Idavidrein/gpqa``, config ``gpqa_diamond``, split ``train``:
  ``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``, ``Record ID``, ...): the four
  choices are shuffled by a seed derived from the row itself (so the order is the same on every
  machine and run, whatever the file order), the target is the letter of the correct choice,
  scored by the last closed ``\\boxed{}`` letter (``study.scoring.correct_choice``).

Rows come from ``benchmark_dir/<name>.jsonl`` (the hub schema, one row per line) or, with
``benchmark_dir`` empty, from the hub (``snapshot_download``, offline from the hub cache with
``HF_HUB_OFFLINE=1``; the resolved commit is recorded). Each row is rendered through the
student tokenizer's chat template (``study.data.tokenizer.render_prompt``:
``apply_chat_template(..., add_generation_prompt=True)``) into a prepared JSONL file that the
task reads (``id, prompt, answer, kind``).

    from study.benchmarks import load_rows, prepare
    rows, source = load_rows("aime24", "tests/fixtures/benchmarks")
    path, source = prepare("aime24", "tests/fixtures/benchmarks", tokenizer, "cache/benchmarks")
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"
BACKENDS = ("hf", "vllm")

# lighteval 0.10.0's AIME prompt (``aime_prompt_fn`` in src/lighteval/tasks/default_prompts.py of
# huggingface/lighteval, read at commit 8736e8b; its MATH-500 prompt is the same text), which the
# paper's lighteval runs use. The double space after "clearly." is lighteval's.
MATH_PROMPT = (
    "Solve the following math problem efficiently and clearly.  The last line of your response should be of "
    "the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is correct' "
    "(without quotes) where ANSWER is just the final number or expression that solves the problem. Think step "
    "by step before answering.\n\n{problem}"
)
# GPQA is not in the paper. lighteval's GPQA prompt asks for "Answer: $LETTER"; ours keeps its
# question layout and asks for the boxed letter in the math prompt's words, so that one answer
# convention (the last closed \boxed{}) scores every benchmark.
CHOICE_PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'Therefore, the final answer is: $\\boxed{{LETTER}}$. I hope it is correct' (without "
    "quotes) where LETTER is one of ABCD. Think step by step before answering.\n\n{question}\n\n"
    "A) {A}\nB) {B}\nC) {C}\nD) {D}"
)
LETTERS = "ABCD"


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str
    hub_config: str | None  # the dataset's config (subset) on the hub
    split: str
    # "" = the hub's default branch: no commit of these repositories could be verified offline
    # here, so none is pinned; the commit actually read is recorded with every evaluation.
    revision: str
    schema: str  # "math" (problem -> answer) or "choice" (GPQA's columns -> letter)
    columns: tuple[str, ...]  # the columns read (a local file must have them)

    @property
    def yaml_path(self) -> Path:
        return TASKS_DIR / f"{self.name}.yaml"


_MATH = ("problem", "answer")
_CHOICE = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
BENCHMARKS = {
    b.name: b for b in (
        Benchmark("aime24", "HuggingFaceH4/aime_2024", None, "train", "", "math", _MATH),
        Benchmark("aime25", "yentinglin/aime_2025", None, "train", "", "math", _MATH),
        Benchmark("math500", "HuggingFaceH4/MATH-500", None, "test", "", "math", _MATH),
        Benchmark("gpqa_diamond", "Idavidrein/gpqa", "gpqa_diamond", "train", "", "choice", _CHOICE),
    )
}


def local_file(name: str, benchmark_dir: str) -> Path:
    return Path(benchmark_dir).expanduser() / f"{name}.jsonl"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_files(names, benchmark_dir: str) -> None:
    """Every requested benchmark has its ``<name>.jsonl`` in ``benchmark_dir`` (before any work)."""
    if not benchmark_dir:
        return
    missing = [str(local_file(n, benchmark_dir)) for n in names if not local_file(n, benchmark_dir).is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark_dir {benchmark_dir!r} lacks {', '.join(missing)}: put one "
                                "<name>.jsonl per benchmark there (hub schema), or set benchmark_dir='' for the hub")


def check_backend(backend: str) -> None:
    """The vLLM backend needs the vllm package; say so before any training."""
    import importlib.util

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError("eval_backend=vllm but the vllm package is not installed: install vllm (GPU only) "
                           "or set eval_backend=hf")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {i + 1} is not JSON ({e.msg}): one row per line") from None
    return rows


def load_rows(name: str, benchmark_dir: str = "") -> tuple[list[dict], dict]:
    """The benchmark's rows in the hub schema and where they came from (path, revision, sha256)."""
    b = BENCHMARKS[name]
    if benchmark_dir:
        path = local_file(name, benchmark_dir)
        rows = _read_jsonl(path)
        source = {"path": str(path.resolve()), "revision": None, "sha256": file_sha256(path)}
    else:
        import datasets
        import huggingface_hub

        folder = Path(huggingface_hub.snapshot_download(repo_id=b.hub_id, repo_type="dataset",
                                                        revision=b.revision or None))
        rows = [dict(r) for r in datasets.load_dataset(str(folder), b.hub_config, split=b.split)]
        commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else (b.revision or None)
        source = {"path": b.hub_id, "config": b.hub_config, "split": b.split, "revision": commit, "sha256": None}
    for i, row in enumerate(rows):
        missing = [c for c in b.columns if c not in row]
        if missing:
            raise ValueError(f"{name} row {i} of {source['path']} lacks column(s) {', '.join(missing)}; "
                             f"a {name} row needs {', '.join(b.columns)} (the hub schema of {b.hub_id})")
    return rows, {**source, "rows": len(rows)}


def shuffled_choices(row: dict) -> tuple[list[str], str]:
    """GPQA's four choices in an order fixed by the row's own text, and the correct letter."""
    choices = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    choices = [str(c).strip() for c in choices]
    key = json.dumps([row["Question"], *choices])
    order = list(range(4))
    random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(order)
    return [choices[i] for i in order], LETTERS[order.index(0)]


def row_id(name: str, row: dict, index: int) -> str:
    for key in ("id", "unique_id", "Record ID"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{name}-{index}"


def question_and_target(name: str, row: dict) -> tuple[str, str]:
    """The user turn (before the chat template) and the target of one row."""
    if BENCHMARKS[name].schema == "math":
        return MATH_PROMPT.format(problem=str(row["problem"]).strip()), str(row["answer"]).strip()
    choices, letter = shuffled_choices(row)
    return CHOICE_PROMPT.format(question=str(row["Question"]).strip(), **dict(zip(LETTERS, choices))), letter


def prepare(name: str, benchmark_dir: str, tokenizer, out_dir: str | Path) -> tuple[Path, dict]:
    """Write the task's prepared JSONL (rendered prompt and target per row) under ``out_dir``;
    returns its path and the source (path, revision, sha256, rows)."""
    from .data.tokenizer import render_prompt  # (lazily: study.config reads this module's names)
    from .records import atomic_write_text

    rows, source = load_rows(name, benchmark_dir)
    lines = []
    for i, row in enumerate(rows):
        question, target = question_and_target(name, row)
        lines.append(json.dumps({"id": row_id(name, row, i), "prompt": render_prompt(tokenizer, question),
                                 "answer": target, "kind": BENCHMARKS[name].schema}))
    text = "".join(line + "\n" for line in lines)
    path = Path(out_dir) / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.exists():
        atomic_write_text(path, text)
    return path, source
