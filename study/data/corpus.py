"""The run's corpus: rendered, tokenised training examples and a validation split, from the
synthetic generator (``corpus.source: synthetic``, the default) or one of the paper's five hub
corpora (study/data/hub.py). The run, the teacher cache and the records never learn where the
rows came from beyond ``Corpus.rejected`` and ``Corpus.info``.

    corpus = load_corpus(cfg.corpus, tokenizer)          # train, val, rejected rows by reason
    encoded = corpus.encode(corpus.train, tokenizer)     # pipeline.Encoded: ids + P/CoT/A
    table = answer_stats(corpus.train, tokenizer)        # tokens per section, first-answer position

``answer_stats`` is the cheap, reproducible counterpart of the paper's LLM-judged analysis of
where the answer first appears: the final answer (the row's gold answer where it has one, else
the last ``\\boxed{}`` of A) is searched in the CoT as a whole word (not inside a longer number
or word); its first occurrence, as a fraction of the CoT (and of the completion), is where the
answer first appears. Rows without a final answer, or whose CoT never states it, are kept in the
table with NaN positions and an ``answer`` column saying which.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from . import hub
from .synthetic import CorpusConfig, make_splits

log = logging.getLogger(__name__)

ANSWER_STATES = ("in_cot", "not_in_cot", "no_answer")


@dataclass(frozen=True)
class Corpus:
    """What a run trains on. ``train`` and ``val`` hold ``synthetic.Example`` or
    ``hub.HubExample``; ``rejected`` counts the rows dropped per reason (non-zero reasons only;
    empty for the synthetic corpus); ``info`` says where a hub corpus came from (location,
    resolved revision, files, rows read and kept) and is empty for the synthetic one."""

    source: str
    train: list
    val: list
    rejected: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def encode(self, examples, tokenizer) -> list:
        """``pipeline.Encoded`` of ``examples`` (of this corpus)."""
        if self.source == "synthetic":
            from .pipeline import encode

            return encode(examples, tokenizer)
        return hub.encode(examples, tokenizer)


def load_corpus(cfg: CorpusConfig, tokenizer) -> Corpus:
    """The corpus ``cfg`` names, rendered with ``tokenizer`` (for a hub corpus: the student's,
    whose chat template renders every row). Rejected rows are counted by reason and named in a
    warning; a hub corpus with no usable row, or too few for the split, raises ValueError."""
    if cfg.source == "synthetic":
        splits = make_splits(cfg)
        return Corpus("synthetic", splits["train"], splits["val"])
    loaded = hub.load_hub_corpus(cfg.hub_config(), tokenizer)
    rejected = {reason: n for reason, n in loaded.rejected.items() if n}
    if rejected:
        log.warning("corpus %s", loaded.summary())
    info = {"location": loaded.location, "revision": loaded.revision, "files": list(loaded.files),
            "rows": loaded.rows, "kept": loaded.kept}
    return Corpus(cfg.source, loaded.train, loaded.val, rejected, info)


def last_boxed(text: str) -> str | None:
    """The content of the last brace-balanced ``\\boxed{...}`` in ``text`` (None if none closes)."""
    found = None
    for m in re.finditer(r"\\boxed\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[m.end() : i - 1]
    return found


def final_answer(ex) -> str | None:
    """The row's gold answer where it has one, else the last ``\\boxed{}`` of its answer A."""
    gold = (ex.gold or "").strip()
    return gold or (last_boxed(ex.answer_text) or "").strip() or None


def answer_stats(examples, tokenizer):
    """One row per hub example, as ``pipeline.corpus_stats`` gives for the synthetic corpus:
    tokens per section and where the final answer first appears (module docstring), as a
    fraction of the completion (CoT + A) and of the CoT, plus ``answer`` (one of
    ``ANSWER_STATES``); positions are NaN where the answer is missing or not in the CoT."""
    import pandas as pd

    from .pipeline import position_row, sectioned
    from .tokenizer import think_ids

    if not examples:
        raise ValueError("answer_stats: there are no examples to measure (corpus.train_examples must be >= 1)")
    tags, rows = think_ids(tokenizer), []
    for ex in examples:
        ids, offsets, n = sectioned(tokenizer, ex.text, ex.id, tags)
        answer, state, end_char = final_answer(ex), "no_answer", None
        if answer is not None:
            # The reasoning between the tags, searched as a whole word (not inside 15 for 5).
            body_start, body_end = ex.cot_start + len(hub.THINK), ex.cot_end - len(hub.END_THINK)
            pattern = re.compile(r"(?<![0-9A-Za-z])" + re.escape(answer) + r"(?![0-9A-Za-z])")
            found = pattern.search(ex.text, body_start, body_end)
            state = "in_cot" if found else "not_in_cot"
            end_char = found.end() if found else None
        rows.append({**position_row(ex.id, ids, offsets, n, end_char), "answer": state})
    return pd.DataFrame(rows).set_index("id")
