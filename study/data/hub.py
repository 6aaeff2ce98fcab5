"""The paper's five reasoning corpora as sources of rendered training examples.

    cfg = HubCorpusConfig(source="bespoke_stratos")            # or path="/data/Bespoke-Stratos-17k"
    corpus = load_hub_corpus(cfg, student_tokenizer)            # read, render, filter, split
    corpus.rejected                                             # {"no_cot": 12, "too_long": 640, ...}
    encoded = encode(corpus.train, student_tokenizer)           # pipeline.Encoded: ids + P/CoT/A

Sources (``SOURCES``), their hub ids (``DEFAULT_PATHS``), the files a split needs
(``HUB_PATTERNS``) and the columns read (``COLUMNS``) follow ../shared/SCALE.md:

- ``openthoughts`` (``open-thoughts/OpenThoughts-114k``, ``data/train-*.parquet``; the
  ``metadata/`` config is never read), ``bespoke_stratos`` (``bespokelabs/Bespoke-Stratos-17k``,
  ``data/train-*.parquet``) and ``sky_t1`` (``NovaSky-AI/Sky-T1_data_17k``, one JSON array
  ``Sky-T1_data_17k.json``): ``system`` and ``conversations`` (``[{from, value}, ...]``, a list
  or a JSON string). The assistant value's ``<|begin_of_thought|>``/``<|end_of_thought|>``
  become ``<think>``/``</think>``; ``<|begin_of_solution|>``/``<|end_of_solution|>`` are removed
  together with the whitespace around them, so rows that lack the ``\\n\\n`` before a closing tag
  (Sky-T1's reformatted rows) render like the others instead of keeping a literal tag.
- ``synthetic1`` (``PrimeIntellect/SYNTHETIC-1``, ``data/train-*.parquet``): rows with
  ``task_type == "verifiable_math"``; user = ``prompt``, assistant = ``llm_response``; gold
  answer = ``verification_info``'s ``ground_truth`` (a JSON string), else
  ``gold_standard_solution``. ``min_score`` (None = keep all, as the authors, who never read
  ``score``) drops rows whose ``score`` is below it or missing.
- ``nemotron`` (``nvidia/Llama-Nemotron-Post-Training-Dataset``, only ``SFT/math/*.jsonl``; the
  whole SFT folder is ~122 GB): user = the first ``input`` message (system messages skipped),
  assistant = ``output``; rows with ``reasoning: off`` have no think tags and end up ``no_cot``.

Rendering is the student's chat template, as the authors do:
``apply_chat_template([user, assistant], tokenize=False, add_generation_prompt=True,
enable_thinking=True)``; the system prompt (a ``system`` column, ``system`` turns, Nemotron's
``system_prompt``) is always dropped. An example is ``prompt + completion`` where ``prompt`` is
the user turn rendered with the generation prompt (P) and ``completion`` is what the template
renders after it: ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}<|im_end|>\\n`` with the Qwen3
hybrid template. ``cot_start``/``cot_end`` are the character offsets of ``<think>`` and just
after ``</think>`` in that text: P before, CoT from ``<think>`` to ``</think>`` inclusive, A
after, which is what ``study.sections.locate_sections`` finds in the token ids.

Recorded deviations from the authors' code (SCALE.md):
- ``add_generation_prompt=True`` on a finished conversation appends ``<|im_start|>assistant\\n``
  after the answer's end of turn, which the authors' labels supervise (inferred). That tail is
  cut from the text, so it is neither trained on nor counted by the length filter.
- Solution tags are stripped tolerantly (above), not by exact-string replacement.
- A row is kept only with a real CoT: one ``</think>`` after non-blank reasoning in the
  response itself. The Qwen3 template gives a response without ``</think>`` an empty think
  block, so a check on the rendered text would never fire; such rows are ``no_cot``. A response
  with ``</think>`` but no ``<think>`` (some SYNTHETIC-1 rows) gets ``<think>\\n`` prepended,
  which changes nothing under the Qwen3 template (it re-splits at ``</think>``) and gives other
  templates the same sections.
- Length filter: instead of the authors' hard-coded row-index lists, examples whose rendered
  text (without the cut tail) has at least ``max_tokens`` tokens are dropped (``too_long``). The
  lists depend on one dataset revision: pin ``revision``.

Rejected rows are counted under the first reason that applies, in the order of ``REASONS``:
``wrong_task_type`` (SYNTHETIC-1 not ``verifiable_math``), ``low_score`` (SYNTHETIC-1 below
``min_score``), ``unknown_role`` (a turn that is not user, assistant or system), ``no_user``,
``no_assistant`` (no non-blank assistant turn after the first user turn), ``no_cot``,
``extra_think_tags`` (more than one ``<think>`` or ``</think>`` in the rendered text, e.g. a
prompt quoting one: ``locate_sections`` needs exactly one of each) and ``too_long``.

Split, as ``datasets``' ``train_test_split(test_size=val_examples, seed=split_seed)`` that the
authors call on the length-filtered rows: ``np.random.default_rng(split_seed).permutation(N)``
over the N *kept* rows (in file order: files sorted by name, rows in file order), the first
``val_examples`` to validation, the next ``train_examples`` to train, both in permutation order.

Hub ids are fetched with ``huggingface_hub.snapshot_download`` limited to ``HUB_PATTERNS``
(works offline from the local hub cache with ``HF_HUB_OFFLINE=1``); an existing local folder
laid out as on the hub, or one data file, is read in place and nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

SOURCES = ("openthoughts", "bespoke_stratos", "sky_t1", "synthetic1", "nemotron")

DEFAULT_PATHS = {
    "openthoughts": "open-thoughts/OpenThoughts-114k",
    "bespoke_stratos": "bespokelabs/Bespoke-Stratos-17k",
    "sky_t1": "NovaSky-AI/Sky-T1_data_17k",
    "synthetic1": "PrimeIntellect/SYNTHETIC-1",
    "nemotron": "nvidia/Llama-Nemotron-Post-Training-Dataset",
}

# The files of the split the paper uses, relative to the dataset repository (glob patterns,
# also passed to snapshot_download's allow_patterns).
HUB_PATTERNS = {
    "openthoughts": ("data/train-*.parquet",),
    "bespoke_stratos": ("data/train-*.parquet",),
    "sky_t1": ("Sky-T1_data_17k.json",),
    "synthetic1": ("data/train-*.parquet",),
    "nemotron": ("SFT/math/*.jsonl",),
}

# The columns (keys) read from each row; all must be present.
COLUMNS = {
    "openthoughts": ("system", "conversations"),
    "bespoke_stratos": ("system", "conversations"),
    "sky_t1": ("system", "conversations"),
    "synthetic1": ("task_type", "prompt", "llm_response", "gold_standard_solution", "verification_info", "score"),
    "nemotron": ("input", "output", "reasoning"),
}

# Paper split sizes (train, validation) where the paper gives them; SYNTHETIC-1 and Nemotron are
# not wired into the authors' training script, so their sizes are unknown.
PAPER_SPLITS = {"openthoughts": (40_000, 1_000), "bespoke_stratos": (8_000, 1_000), "sky_t1": (8_000, 1_000)}

REASONS = ("wrong_task_type", "low_score", "unknown_role", "no_user", "no_assistant", "no_cot",
           "extra_think_tags", "too_long")

THINK, END_THINK = "<think>", "</think>"
_MATH_TASK = "verifiable_math"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SUFFIX = {"openthoughts": ".parquet", "bespoke_stratos": ".parquet", "sky_t1": ".json",
           "synthetic1": ".parquet", "nemotron": ".jsonl"}
_EXAMPLE_IDS = 5  # rejected ids kept per reason, for the warning


@dataclass(frozen=True)
class HubCorpusConfig:
    """Which hub corpus, where it lives and how it is filtered and split.

    ``path`` "" means the source's hub id (``DEFAULT_PATHS``); a local folder laid out as on the
    hub (or one data file) is read in place. ``revision`` "" is the hub's default branch; it only
    applies to downloads. ``max_rows`` 0 reads every row; N reads the first N rows in file order
    (an extension for the multi-million-row SYNTHETIC-1 and Nemotron math: the authors' code has
    no such cap)."""

    source: str = "bespoke_stratos"
    path: str = ""
    revision: str = ""
    max_tokens: int = 4096  # examples with >= max_tokens tokens after rendering are dropped
    train_examples: int = 8000  # paper: 40,000 for OpenThoughts, 8,000 for the 17k sets
    val_examples: int = 1000
    split_seed: int = 42
    min_score: float | None = None  # SYNTHETIC-1 only; None keeps all rows, as the authors
    max_rows: int = 0

    def __post_init__(self):
        # Messages start with the field's name, as the other configs' do.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "min_score":
                if value is None:
                    continue
                if isinstance(value, int) and not isinstance(value, bool):
                    object.__setattr__(self, "min_score", float(value))
                    continue
                if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
                    raise ValueError(f"min_score must be a finite number or null (keep every row), got {value!r}")
                continue
            expected = str if f.name in ("source", "path", "revision") else int
            if isinstance(value, bool) or not isinstance(value, expected):
                kind = "a string" if expected is str else "an integer"
                raise ValueError(f"{f.name} must be {kind}, got {value!r} ({type(value).__name__})")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {self.source!r}")
        if self.min_score is not None and self.source != "synthetic1":
            raise ValueError(f"min_score only applies to source synthetic1 (its score column); "
                             f"source {self.source!r} needs min_score null")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be an integer >= 2, got {self.max_tokens}")
        if self.train_examples < 1:
            raise ValueError(f"train_examples must be an integer >= 1, got {self.train_examples}")
        for name in ("val_examples", "split_seed", "max_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)}")
        if self.max_rows and self.max_rows < self.train_examples + self.val_examples:
            raise ValueError(f"max_rows {self.max_rows} is below train_examples + val_examples "
                             f"{self.train_examples + self.val_examples}; raise it or use 0 (every row)")

    @property
    def location(self) -> str:
        """The configured path, or the source's hub id when ``path`` is empty."""
        return self.path or DEFAULT_PATHS[self.source]


@dataclass(frozen=True)
class HubExample:
    """One rendered example. ``text`` = ``prompt + completion``: P is ``text[:cot_start]``, CoT
    ``text[cot_start:cot_end]`` (``<think>`` ... ``</think>``), A ``text[cot_end:]``."""

    id: str  # f"{source}-{row index in file order}"
    index: int  # the row's index in the corpus (files sorted by name, rows in file order)
    user: str  # the raw user message
    prompt: str  # the rendered user turn with the generation prompt
    completion: str  # <think>...</think> + answer + end of turn
    gold: str | None  # the row's reference answer (SYNTHETIC-1), else None
    cot_start: int
    cot_end: int
    n_tokens: int  # tokens of text, no special tokens added

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    @property
    def cot(self) -> str:
        return self.text[self.cot_start : self.cot_end]

    @property
    def answer_text(self) -> str:
        return self.text[self.cot_end :]


@dataclass(frozen=True)
class HubCorpus:
    """What ``load_hub_corpus`` returns: the two splits and what was read and rejected."""

    source: str
    location: str  # hub id or local path, as configured
    revision: str | None  # the resolved commit of a hub download; None for a local path
    files: tuple[str, ...]  # data files read, relative to the dataset root
    rows: int  # rows read
    kept: int  # rows left after rendering and filtering (the N of the split)
    train: list[HubExample]
    val: list[HubExample]
    rejected: dict[str, int]  # every reason of REASONS, zero included
    rejected_ids: dict[str, list[str]] = field(default_factory=dict)  # up to 5 ids per reason

    def summary(self) -> str:
        """One line for a warning: rows rejected per reason with example ids."""
        parts = [f"{r} {n} (e.g. {', '.join(self.rejected_ids.get(r, []))})" for r, n in self.rejected.items() if n]
        rejected = sum(self.rejected.values())
        return (f"{self.source}: {self.rows} rows read, {self.kept} kept, {rejected} rejected"
                + (": " + "; ".join(parts) if parts else ""))


class _Reject(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- files ---------------------------------------------------------------------------------------


def _download(repo_id: str, revision: str, patterns: tuple[str, ...]) -> Path:
    """The dataset snapshot with only ``patterns`` (the hub cache is reused; offline-capable)."""
    import huggingface_hub

    folder = huggingface_hub.snapshot_download(
        repo_id=repo_id, repo_type="dataset", revision=revision or None, allow_patterns=list(patterns)
    )
    return Path(folder)


def resolve_files(cfg: HubCorpusConfig) -> tuple[Path, list[Path], str | None]:
    """(dataset root, the data files of the split in read order, resolved revision or None).

    A local file or folder is used in place; anything else must be a hub id and is downloaded
    (only ``HUB_PATTERNS[cfg.source]``)."""
    location = cfg.location
    local = Path(location).expanduser()
    revision = None
    if local.is_file():
        if not local.name.endswith(_SUFFIX[cfg.source]):
            raise ValueError(f"path {location!r}: a {cfg.source} data file must end in {_SUFFIX[cfg.source]}")
        return local.parent, [local], None
    if local.is_dir():
        root = local
    elif _HUB_ID.match(location):
        root = _download(location, cfg.revision, HUB_PATTERNS[cfg.source])
        # snapshot_download returns .../snapshots/<commit>
        revision = root.name if re.fullmatch(r"[0-9a-f]{40}", root.name) else (cfg.revision or None)
    else:
        raise ValueError(f"path {location!r} is neither an existing local folder or file nor a hub id (owner/name)")
    files = sorted({p for pattern in HUB_PATTERNS[cfg.source] for p in root.glob(pattern) if p.is_file()},
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"no {cfg.source} data files under {root} matching {', '.join(HUB_PATTERNS[cfg.source])} "
                         "(a local folder must be laid out as the dataset repository on the hub)")
    return root, files, revision


def _check_columns(path: Path, present, source: str) -> None:
    missing = [c for c in COLUMNS[source] if c not in present]
    if missing:
        raise ValueError(f"{path}: {source} rows need the columns {', '.join(COLUMNS[source])}; "
                         f"missing {', '.join(missing)}")


def read_rows(source: str, files: list[Path]) -> Iterator[dict]:
    """Rows of ``files`` (read in the given order) as dicts of ``COLUMNS[source]``."""
    columns = COLUMNS[source]
    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            _check_columns(path, pf.schema_arrow.names, source)
            for batch in pf.iter_batches(batch_size=512, columns=list(columns)):
                yield from batch.to_pylist()
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    _check_columns(Path(f"{path}:{line_no}"), row, source)
                    yield {c: row[c] for c in columns}
        elif path.suffix == ".json":
            with path.open(encoding="utf-8") as fh:
                rows = json.load(fh)
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected one JSON array of rows, got {type(rows).__name__}")
            for i, row in enumerate(rows):
                _check_columns(Path(f"{path}[{i}]"), row, source)
                yield {c: row[c] for c in columns}
        else:
            raise ValueError(f"{path}: unsupported data file type {path.suffix!r}")


# --- rows to messages ----------------------------------------------------------------------------

_BEGIN_THOUGHT = re.compile(r"<\|begin_of_thought\|>\n*")
_END_THOUGHT = re.compile(r"\n*<\|end_of_thought\|>\n*")
_SOLUTION_TAG = re.compile(r"\s*<\|(?:begin|end)_of_solution\|>\s*")


def convert_thought_tags(value: str) -> str:
    """An OpenThoughts-style assistant value with ``<think>`` tags and no solution tags:
    ``<|begin_of_thought|>\\n\\nR\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\nS\\n\\n<|end_of_solution|>``
    becomes ``<think>\\nR\\n</think>\\n\\nS``, whatever whitespace surrounds the tags."""
    value = _SOLUTION_TAG.sub("", value)
    value = _END_THOUGHT.sub("\n" + END_THINK + "\n\n", value)
    return _BEGIN_THOUGHT.sub(THINK + "\n", value)


def _turns(value) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"conversations is a string but not JSON: {e}") from None
    if value is None:
        return []
    return list(value)


def _user_and_assistant(turns: list[dict], role_key: str, text_key: str) -> tuple[str, str]:
    """The first user message and the first assistant message after it; system turns are
    dropped, any other role rejects the row."""
    user = assistant = None
    for turn in turns:
        role, text = turn.get(role_key), turn.get(text_key)
        if role == "system":
            continue
        if role not in ("user", "assistant"):
            raise _Reject("unknown_role")
        if role == "user" and user is None:
            user = text
        elif role == "assistant" and user is not None and assistant is None:
            assistant = text
    if not isinstance(user, str) or not user.strip():
        raise _Reject("no_user")
    if not isinstance(assistant, str) or not assistant.strip():
        raise _Reject("no_assistant")
    return user, assistant


def _conversation_turns(turns: list[dict]) -> list[dict]:
    # ShareGPT keys {from, value}; tolerate {role, content}.
    return [{"role": t.get("from", t.get("role")), "content": t.get("value", t.get("content"))} for t in turns]


def _gold_synthetic1(row: dict) -> str | None:
    info = row.get("verification_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            info = None
    if isinstance(info, dict) and info.get("ground_truth") not in (None, ""):
        return str(info["ground_truth"])
    gold = row.get("gold_standard_solution")
    return gold if isinstance(gold, str) and gold.strip() else None


def row_messages(source: str, row: dict, min_score: float | None = None) -> tuple[str, str, str | None]:
    """(user, assistant, gold answer) of one row, the assistant with ``<think>`` tags; raises
    ``_Reject`` with the reason for rows that cannot become an example (before rendering)."""
    gold = None
    if source in ("openthoughts", "bespoke_stratos", "sky_t1"):
        user, assistant = _user_and_assistant(_conversation_turns(_turns(row["conversations"])), "role", "content")
        assistant = convert_thought_tags(assistant)
    elif source == "synthetic1":
        if row["task_type"] != _MATH_TASK:
            raise _Reject("wrong_task_type")
        if min_score is not None:
            score = row["score"]
            if score is None or not math.isfinite(score) or score < min_score:
                raise _Reject("low_score")
        user, assistant = _user_and_assistant(
            [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["llm_response"]}],
            "role", "content")
        gold = _gold_synthetic1(row)
    elif source == "nemotron":
        turns = [t for t in _turns(row["input"]) if t.get("role") != "system"][:1]
        user, assistant = _user_and_assistant(turns + [{"role": "assistant", "content": row["output"]}],
                                              "role", "content")
    else:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(SOURCES)}")
    return user, _with_cot(assistant), gold


def _with_cot(assistant: str) -> str:
    """The response if it has a real CoT (one ``</think>`` after non-blank reasoning), with
    ``<think>\\n`` prepended where only the closing tag is present."""
    n_open, n_close = assistant.count(THINK), assistant.count(END_THINK)
    if n_close == 0:
        raise _Reject("no_cot")
    if n_open > 1 or n_close > 1:
        raise _Reject("extra_think_tags")
    if n_open == 0:
        assistant = THINK + "\n" + assistant
    start, end = assistant.index(THINK), assistant.index(END_THINK)
    if end < start:
        raise _Reject("extra_think_tags")
    if not assistant[start + len(THINK) : end].strip():
        raise _Reject("no_cot")
    return assistant


# --- rendering -----------------------------------------------------------------------------------


def _chat(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         enable_thinking=True)


def render(tokenizer, user: str, assistant: str) -> tuple[str, str, int, int]:
    """(prompt, completion, cot_start, cot_end) of one conversation (module docstring).

    Raises ``_Reject("extra_think_tags")`` when the text holds more than one of either tag and
    ValueError when the template does not render the shape the study needs (a template problem,
    not a row's)."""
    u, a = {"role": "user", "content": user}, {"role": "assistant", "content": assistant}
    prompt, bare = _chat(tokenizer, [u], True), _chat(tokenizer, [u], False)
    full = _chat(tokenizer, [u, a], True)  # the authors' text
    if not prompt.startswith(bare) or not full.startswith(prompt):
        raise ValueError("the chat template does not render the user turn plus generation prompt as a prefix "
                         "of the whole conversation; cannot split the prompt section P off")
    tail = prompt[len(bare):]  # the generation prompt, appended again after the finished answer
    completion = full[len(prompt):]
    if tail:
        if not completion.endswith(tail):
            raise ValueError(f"the chat template does not end the conversation with the generation prompt {tail!r}")
        completion = completion[: -len(tail)]  # recorded deviation: the tail is not trained on
    text = prompt + completion
    if text.count(THINK) != 1 or text.count(END_THINK) != 1:
        raise _Reject("extra_think_tags")
    start, end = text.index(THINK), text.index(END_THINK) + len(END_THINK)
    reasoning = assistant[assistant.index(THINK) + len(THINK) : assistant.index(END_THINK)].strip()
    if end < start or reasoning not in text[start:end]:
        raise ValueError("the chat template did not render the response's reasoning between <think> and </think>")
    return prompt, completion, start, end


# --- the corpus ----------------------------------------------------------------------------------


def split_indices(n: int, val_examples: int, train_examples: int, seed: int) -> tuple[list[int], list[int]]:
    """``train_test_split(test_size=val_examples, seed=seed)`` then the first ``train_examples``
    of train: positions (into the n kept rows) of validation and train, in permutation order."""
    if n < val_examples + train_examples:
        raise ValueError(f"{n} rows for val_examples {val_examples} + train_examples {train_examples}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:val_examples].tolist(), perm[val_examples : val_examples + train_examples].tolist()


def load_hub_corpus(cfg: HubCorpusConfig, tokenizer, batch_size: int = 256) -> HubCorpus:
    """Read the corpus, render every row with ``tokenizer``'s chat template, drop rejected rows
    (counted by reason) and split the kept rows (module docstring)."""
    from .tokenizer import think_ids

    think_ids(tokenizer)  # <think> and </think> must be single tokens
    root, files, revision = resolve_files(cfg)
    rejected = {r: 0 for r in REASONS}
    rejected_ids: dict[str, list[str]] = {r: [] for r in REASONS}
    kept: list[HubExample] = []
    pending: list[HubExample] = []  # rendered, waiting for the batched length check
    rows = 0

    def reject(reason: str, ex_id: str) -> None:
        rejected[reason] += 1
        if len(rejected_ids[reason]) < _EXAMPLE_IDS:
            rejected_ids[reason].append(ex_id)

    def flush() -> None:
        lengths = [len(ids) for ids in tokenizer([ex.text for ex in pending], add_special_tokens=False)["input_ids"]]
        for ex, n in zip(pending, lengths):
            if n >= cfg.max_tokens:
                reject("too_long", ex.id)
            else:
                kept.append(dataclasses.replace(ex, n_tokens=n))
        pending.clear()

    for index, row in enumerate(read_rows(cfg.source, files)):
        if cfg.max_rows and index >= cfg.max_rows:
            break
        rows += 1
        ex_id = f"{cfg.source}-{index}"
        try:
            user, assistant, gold = row_messages(cfg.source, row, cfg.min_score)
            prompt, completion, start, end = render(tokenizer, user, assistant)
        except _Reject as r:
            reject(r.reason, ex_id)
            continue
        except ValueError as e:
            raise ValueError(f"corpus {cfg.source} ({cfg.location}) row {index}: {e}") from None
        pending.append(HubExample(ex_id, index, user, prompt, completion, gold, start, end, -1))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()

    location = cfg.location
    counts = ", ".join(f"{r} {n}" for r, n in rejected.items() if n) or "none"
    if not kept:
        raise ValueError(f"corpus {cfg.source} ({location}): none of its {rows} rows is usable; "
                         f"rejected by reason: {counts}")
    need = cfg.val_examples + cfg.train_examples
    if len(kept) < need:
        raise ValueError(f"corpus {cfg.source} ({location}): {len(kept)} of {rows} rows kept (rejected: {counts}), "
                         f"fewer than val_examples + train_examples = {need}; lower train_examples")
    val_idx, train_idx = split_indices(len(kept), cfg.val_examples, cfg.train_examples, cfg.split_seed)
    return HubCorpus(
        source=cfg.source, location=location, revision=revision,
        files=tuple(p.relative_to(root).as_posix() for p in files), rows=rows, kept=len(kept),
        train=[kept[i] for i in train_idx], val=[kept[i] for i in val_idx],
        rejected=rejected, rejected_ids={r: ids for r, ids in rejected_ids.items() if ids},
    )


def encode(examples: list[HubExample], tokenizer) -> list:
    """``pipeline.Encoded`` (ids and the section of every token) for rendered hub examples."""
    from ..sections import locate_sections
    from .pipeline import Encoded
    from .tokenizer import think_ids

    think, end_think = think_ids(tokenizer)
    out = []
    for ex in examples:
        ids = tokenizer.encode(ex.text, add_special_tokens=False)
        if len(ids) != ex.n_tokens:
            raise ValueError(f"example {ex.id}: {len(ids)} tokens, but {ex.n_tokens} when the corpus was loaded; "
                             "encode with the tokenizer the corpus was rendered with")
        out.append(Encoded(ex.id, ids, locate_sections(ids, think, end_think, example=ex.id)))
    return out
