"""Tests for study.data.pipeline: encode, prepare, collate, full_sequence_items."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from study.config import RunConfig
from study.data.pipeline import collate, encode, full_sequence_items, prepare
from study.data.synthetic import CorpusConfig, make_splits
from study.sections import Section, SectionError


@pytest.fixture(scope="module")
def examples():
    cfg = CorpusConfig(min_ops=1, max_ops=4, min_verify=0, max_verify=3,
                       train_examples=24, val_examples=0, test_examples=0)
    return make_splits(cfg)["train"]


@pytest.fixture(scope="module")
def encoded(examples, tokenizer):
    return encode(examples, tokenizer)


def run_cfg(**kw):
    return RunConfig(**kw)


def ns(**kw):
    """A plain namespace with just the fields prepare() reads."""
    base = dict(lsp=1.0, window="left", cut_after_think=False, keep_answer=False, condition="P+CoT+A",
                random_mask=0.0, seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


# --- encode --------------------------------------------------------------------------------


def test_encode_labels_sections(encoded, examples, tokenizer):
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    user = tokenizer.convert_tokens_to_ids("<|user|>")
    think = tokenizer.convert_tokens_to_ids("<think>")
    end_think = tokenizer.convert_tokens_to_ids("</think>")
    assert [e.id for e in encoded] == [ex.id for ex in examples]
    for enc in encoded:
        assert len(enc.ids) == len(enc.sections)
        secs = enc.sections
        last_p = max(i for i, s in enumerate(secs) if s == Section.PROMPT)
        first_c = min(i for i, s in enumerate(secs) if s == Section.COT)
        last_c = max(i for i, s in enumerate(secs) if s == Section.COT)
        assert enc.ids[0] == user and secs[0] == Section.PROMPT
        assert enc.ids[last_p] == assistant
        assert first_c == last_p + 1 and enc.ids[first_c] == think
        assert enc.ids[last_c] == end_think
        assert secs[-1] == Section.ANSWER and enc.ids[-1] == tokenizer.eos_token_id
        assert list(secs) == sorted(secs)  # P, then CoT, then A


def test_encode_literal_answer_section(encoded, examples, tokenizer):
    enc, ex = encoded[0], examples[0]
    a_ids = [i for i, s in zip(enc.ids, enc.sections) if s == Section.ANSWER]
    assert tokenizer.decode(a_ids, skip_special_tokens=False) == ex.answer_text + "<|end|>"
    c_ids = [i for i, s in zip(enc.ids, enc.sections) if s == Section.COT]
    assert tokenizer.decode(c_ids, skip_special_tokens=False) == f"<think>{ex.cot}</think>"


def test_encode_missing_think_raises_section_error(tokenizer):
    bad = SimpleNamespace(id="no-tags-7", question="Compute 1+2 mod 10.",
                          completion="1+2=3. The answer is \\boxed{3}.")
    with pytest.raises(SectionError) as err:
        encode([bad], tokenizer)
    msg = str(err.value)
    assert "no-tags-7" in msg and "<think>" in msg


def test_encode_repeated_think_raises_section_error(tokenizer):
    bad = SimpleNamespace(id="twice-3", question="Q",
                          completion="<think>a</think><think>b</think>c")
    with pytest.raises(SectionError, match="twice-3"):
        encode([bad], tokenizer)


def test_encode_reversed_tags_raises_section_error(tokenizer):
    bad = SimpleNamespace(id="reversed-1", question="Q", completion="</think>a<think>b")
    with pytest.raises(SectionError, match="reversed-1.*comes before"):
        encode([bad], tokenizer)


# --- prepare -------------------------------------------------------------------------------


def test_full_supervision_everything_but_position_zero(encoded):
    items, empty = prepare(encoded, run_cfg(lsp=1.0, condition="P+CoT+A"))
    assert empty == []
    assert len(items) == len(encoded)
    for it, enc in zip(items, encoded):
        assert it.id == enc.id
        assert it.ids == enc.ids
        assert it.labels[0] == -100
        assert it.labels[1:] == enc.ids[1:]
        assert it.full_length == len(enc.ids)
        n_p = enc.sections.count(Section.PROMPT)
        n_c = enc.sections.count(Section.COT)
        n_a = enc.sections.count(Section.ANSWER)
        assert it.supervised == {"P": n_p - 1, "CoT": n_c, "A": n_a}


def test_namespace_config_accepted(encoded):
    items, empty = prepare(encoded, ns())
    assert len(items) == len(encoded) and empty == []


def test_half_lead_span_keeps_prefix(encoded):
    items, empty = prepare(encoded, run_cfg(lsp=0.5))
    assert empty == []
    for it, enc in zip(items, encoded):
        keep = max(1, int(len(enc.ids) * 0.5))
        assert len(it.ids) == len(it.labels) == keep
        assert it.ids == enc.ids[:keep]
        assert it.full_length == len(enc.ids)
        assert sum(it.supervised.values()) == keep - 1


def test_prepare_literal_windows_and_conditions():
    from study.data.pipeline import Encoded

    T, E = 1000, 1001  # <think>, </think>
    P, C, A = Section.PROMPT, Section.COT, Section.ANSWER
    enc = Encoded("ten", [1, 2, 3, T, 4, 5, E, 6, 7, 8], [P, P, P, C, C, C, C, A, A, A])
    # middle, lsp 0.5: 5 of 10 tokens from position 2; the first kept token is never a target.
    (it,), empty = prepare([enc], ns(lsp=0.5, window="middle", condition="P+CoT"))
    assert empty == [] and it.id == "ten" and it.full_length == 10
    assert it.ids == [3, T, 4, 5, E]
    assert it.labels == [-100, T, 4, 5, E]
    assert it.supervised == {"P": 0, "CoT": 4, "A": 0}
    # right, lsp 0.5, CoT+A: the last 5 tokens.
    (it,), _ = prepare([enc], ns(lsp=0.5, window="right", condition="CoT+A"))
    assert (it.ids, it.labels) == ([5, E, 6, 7, 8], [-100, E, 6, 7, 8])
    assert it.supervised == {"P": 0, "CoT": 1, "A": 3}
    # left, lsp 0.6, P+A: 6 tokens, the prompt minus position 0 and no answer kept.
    (it,), _ = prepare([enc], ns(lsp=0.6, condition="P+A"))
    assert (it.ids, it.labels) == ([1, 2, 3, T, 4, 5], [-100, 2, 3, -100, -100, -100])
    assert it.supervised == {"P": 2, "CoT": 0, "A": 0}
    # cut after </think>, then answer only: nothing left to supervise.
    assert prepare([enc], ns(cut_after_think=True, condition="A")) == ([], ["ten"])


def test_right_window_keeps_suffix(encoded):
    items, _ = prepare(encoded, run_cfg(lsp=0.5, window="right"))
    for it, enc in zip(items, encoded):
        keep = max(1, int(len(enc.ids) * 0.5))
        assert it.ids == enc.ids[-keep:]
        assert it.ids[-1] == enc.ids[-1]


def test_cut_after_think_drops_answer(encoded):
    items, empty = prepare(encoded, run_cfg(cut_after_think=True, condition="CoT+A"))
    assert empty == []
    for it, enc in zip(items, encoded):
        n = len(enc.ids) - enc.sections.count(Section.ANSWER)
        assert it.ids == enc.ids[:n]
        assert it.supervised == {"P": 0, "CoT": enc.sections.count(Section.COT), "A": 0}


def test_answer_only_after_cut_leaves_everything_empty(encoded):
    items, empty = prepare(encoded, run_cfg(condition="A", cut_after_think=True))
    assert items == []
    assert empty == [e.id for e in encoded]


def test_answer_only_with_short_lead_span_leaves_everything_empty(encoded):
    items, empty = prepare(encoded, run_cfg(condition="A", lsp=0.3))
    assert items == []
    assert empty == [e.id for e in encoded]


def test_answer_only_full_sequence_supervises_only_answer(encoded):
    items, empty = prepare(encoded, run_cfg(condition="A"))
    assert empty == []
    for it, enc in zip(items, encoded):
        answer = [i for i, s in zip(enc.ids, enc.sections) if s == Section.ANSWER]
        assert [l for l in it.labels if l != -100] == answer
        assert it.supervised == {"P": 0, "CoT": 0, "A": len(answer)}


def test_random_mask_drops_rounded_half(encoded):
    full, _ = prepare(encoded, run_cfg())
    half, empty = prepare(encoded, run_cfg(random_mask=0.5))
    assert empty == []
    total_full = total_half = 0
    for f, h in zip(full, half):
        n = sum(f.supervised.values())
        m = sum(h.supervised.values())
        assert m == n - round(0.5 * n)
        assert sum(l != -100 for l in h.labels) == m
        # Only supervised positions are dropped; kept labels are the true ids.
        for lf, lh in zip(f.labels, h.labels):
            assert lh == -100 or lh == lf
        assert h.ids == f.ids
        total_full += n
        total_half += m
    assert abs(total_half / total_full - 0.5) < 0.01


def test_random_mask_deterministic_for_seed(encoded):
    a, _ = prepare(encoded, run_cfg(random_mask=0.5, seed=3))
    b, _ = prepare(encoded, run_cfg(random_mask=0.5, seed=3))
    c, _ = prepare(encoded, run_cfg(random_mask=0.5, seed=4))
    assert [it.labels for it in a] == [it.labels for it in b]
    assert [it.labels for it in a] != [it.labels for it in c]


def test_random_mask_independent_of_non_seed_fields(encoded):
    # The mask rng derives from the run seed only, not from e.g. the learning rate.
    a, _ = prepare(encoded, run_cfg(random_mask=0.5, seed=3))
    b, _ = prepare(encoded, run_cfg(random_mask=0.5, seed=3, lr=1e-3))
    assert [it.labels for it in a] == [it.labels for it in b]


# --- collate -------------------------------------------------------------------------------


def test_collate_pads_right(encoded, tokenizer):
    items, _ = prepare(encoded[:5], run_cfg())
    lengths = [len(it.ids) for it in items]
    assert len(set(lengths)) > 1  # the test needs sequences of different lengths
    pad = tokenizer.pad_token_id
    batch = collate(items, pad)
    width = max(lengths)
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (5, width)
        assert batch[key].dtype == torch.long
    for row, it in enumerate(items):
        n = len(it.ids)
        assert batch["input_ids"][row, :n].tolist() == it.ids
        assert batch["labels"][row, :n].tolist() == it.labels
        assert batch["attention_mask"][row, :n].tolist() == [1] * n
        assert batch["input_ids"][row, n:].tolist() == [pad] * (width - n)
        assert batch["attention_mask"][row, n:].tolist() == [0] * (width - n)
        assert batch["labels"][row, n:].tolist() == [-100] * (width - n)


def test_collate_literal():
    from study.data.pipeline import TrainItem

    items = [
        TrainItem("a", [5, 6, 7], [-100, 6, 7], {"P": 0, "CoT": 2, "A": 0}, 3),
        TrainItem("b", [8], [-100], {"P": 0, "CoT": 0, "A": 0}, 1),
    ]
    batch = collate(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


# --- full_sequence_items -------------------------------------------------------------------


def test_full_sequence_items_supervise_cot_and_answer(encoded):
    items = full_sequence_items(encoded, "CoT+A")
    for it, enc in zip(items, encoded):
        assert it.ids == enc.ids
        n_p = enc.sections.count(Section.PROMPT)
        assert it.labels[:n_p] == [-100] * n_p
        assert it.labels[n_p:] == enc.ids[n_p:]
        assert it.supervised["P"] == 0
        assert it.full_length == len(enc.ids)
