"""From examples to training batches: tokenise, locate P/CoT/A, truncate, mask, pad.

    encoded = encode(splits["train"], tokenizer)             # ids + section of every token
    items, empty = prepare(encoded, cfg)                      # truncation + supervision mask
    batch = collate(items[:16], tokenizer.pad_token_id)       # padded tensors, labels -100

Truncation happens here, before the forward pass: dropped tokens are never computed, which
is where the paper's time, memory and FLOPs savings come from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..sections import (
    Section,
    locate_sections,
    random_mask,
    supervised_by_section,
    supervision_mask,
    truncate,
)
from .tokenizer import render_sequence, think_ids


@dataclass(frozen=True)
class Encoded:
    id: str
    ids: list[int]
    sections: list[Section]


@dataclass(frozen=True)
class TrainItem:
    id: str
    ids: list[int]
    labels: list[int]  # -100 where not supervised
    supervised: dict[str, int]  # supervised target tokens per section
    full_length: int  # tokens before truncation
    # Cached teacher rows for these ids (study/teacher_cache.py): name -> [len(ids), ...] view.
    teacher: dict[str, torch.Tensor] | None = None


def encode(examples, tokenizer) -> list[Encoded]:
    """Render each example through the chat template and label every token's section."""
    think, end_think = think_ids(tokenizer)
    out = []
    for ex in examples:
        ids = tokenizer.encode(render_sequence(tokenizer, ex.question, ex.completion), add_special_tokens=False)
        out.append(Encoded(ex.id, ids, locate_sections(ids, think, end_think, example=ex.id)))
    return out


def _views(encoded: list[Encoded], cfg):
    """Each sequence as the run sees it, in corpus order: (encoded, kept ids, their sections,
    supervision mask). The random mask draws from one generator over the corpus, so a
    sequence's mask depends on the sequences before it."""
    rng = random.Random(f"random-mask-{cfg.seed}")  # derived from the run seed only
    for enc in encoded:
        ids, secs = truncate(enc.ids, enc.sections, cfg.lsp, cfg.window, cfg.cut_after_think, cfg.keep_answer)
        mask = target_mask(secs, cfg.condition)
        if cfg.random_mask:
            mask = random_mask(mask, cfg.random_mask, rng)
        yield enc, ids, secs, mask


def prepare(encoded: list[Encoded], cfg) -> tuple[list[TrainItem], list[str]]:
    """Apply the run's truncation and supervision to every sequence.

    Returns the items with at least one supervised token and the ids of those left empty
    (the caller counts and names them; a run with nothing supervised must fail)."""
    items, empty = [], []
    for enc, ids, secs, mask in _views(encoded, cfg):
        if not any(mask):
            empty.append(enc.id)
            continue
        items.append(_item(enc, ids, secs, mask))
    return items, empty


def example_view(examples, index: int, tokenizer, cfg) -> tuple[Encoded, list[int], list[Section], list[bool]]:
    """Training example ``index`` of ``examples`` as the run sees it: its encoding, the kept ids
    and their sections, and the supervision mask (a random mask included, drawn as ``prepare``
    draws it). For ``study show`` and the example-sequence figure."""
    if not 0 <= index < len(examples):
        raise ValueError(f"example index {index} is outside the training split (0..{len(examples) - 1})")
    *_, view = _views(encode(examples[: index + 1], tokenizer), cfg)
    return view


def target_mask(sections: list[Section], condition: str) -> list[bool]:
    """The condition's supervision mask without position 0: it has no preceding token, so it
    is never a prediction target, and clearing it keeps the counts equal to what the loss sees."""
    mask = supervision_mask(sections, condition)
    mask[0] = False
    return mask


def _item(enc: Encoded, ids: list[int], secs: list[Section], mask: list[bool]) -> TrainItem:
    labels = [i if m else -100 for i, m in zip(ids, mask)]
    return TrainItem(enc.id, ids, labels, supervised_by_section(secs, mask), len(enc.ids))


def collate(items: list[TrainItem], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence in the batch; padded positions are unsupervised.
    Cached teacher rows become ``teacher_<name>`` tensors [batch, width, ...] (zeros on padding,
    which no loss reads)."""
    width = max(len(it.ids) for it in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it.ids)
        input_ids[row, :n] = torch.tensor(it.ids)
        labels[row, :n] = torch.tensor(it.labels)
        attention[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if items[0].teacher is not None:
        for name, first in items[0].teacher.items():
            out = torch.zeros((len(items), width, *first.shape[1:]), dtype=first.dtype)
            for row, it in enumerate(items):
                out[row, : len(it.ids)] = it.teacher[name]
            batch[f"teacher_{name}"] = out
    return batch


def full_sequence_items(encoded: list[Encoded], supervise: str) -> list[TrainItem]:
    """Untruncated items supervised on ``supervise`` (used to pretrain teacher and base)."""
    return [_item(enc, enc.ids, enc.sections, target_mask(enc.sections, supervise)) for enc in encoded]


def corpus_stats(examples, tokenizer):
    """One row per example: tokens per section and where the first \\boxed{} answer ends,
    as a fraction of the completion (CoT + A) and of the CoT, as a pandas DataFrame. The paper reports the first
    correct answer near the middle of real CoTs; this is the same measurement as data."""
    import pandas as pd

    from .synthetic import BOXED

    if not examples:
        raise ValueError("corpus_stats: there are no examples to measure (corpus.train_examples must be >= 1)")
    tags, rows = think_ids(tokenizer), []
    for ex in examples:
        text = render_sequence(tokenizer, ex.question, ex.completion)
        ids, offsets, n = sectioned(tokenizer, text, ex.id, tags)
        # First boxed answer inside the completion (the prompt has none).
        found = BOXED.search(text, pos=offsets[n[Section.PROMPT]][0])
        if found is None or not n[Section.COT]:
            raise ValueError(f"corpus_stats: example {ex.id} has no \\boxed{{}} answer or no CoT in its completion")
        rows.append(position_row(ex.id, ids, offsets, n, found.end()))
    return pd.DataFrame(rows).set_index("id")


def sectioned(tokenizer, text: str, example_id: str, tags: tuple[int, int]):
    """``text`` tokenised: (ids, character offsets, tokens per section); ``tags`` are the ids
    of <think> and </think> (``think_ids``)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    secs = locate_sections(ids, *tags, example=example_id)
    return ids, offsets, {s: secs.count(s) for s in Section}


def position_row(example_id: str, ids, offsets, n: dict, end_char: int | None) -> dict:
    """A ``corpus_stats`` row: tokens per section and where the answer that ends at character
    ``end_char`` ends, as a fraction of the completion (CoT + A) and of the CoT (NaN for None)."""
    completion = n[Section.COT] + n[Section.ANSWER]
    pos = None
    if end_char is not None:
        last_tok = next(i for i, (_, e) in enumerate(offsets) if e >= end_char)
        pos = last_tok + 1 - n[Section.PROMPT]  # tokens of the completion up to the answer's end
    return {
        "id": example_id,
        "tokens": len(ids),
        "tokens_P": n[Section.PROMPT],
        "tokens_CoT": n[Section.COT],
        "tokens_A": n[Section.ANSWER],
        "tokens_completion": completion,
        "first_answer_in_completion": pos / completion if pos is not None else float("nan"),
        "first_answer_in_cot": pos / n[Section.COT] if pos is not None else float("nan"),
    }
