"""Tests for study.data.synthetic (the synthetic corpus) and pipeline.corpus_stats."""

from __future__ import annotations

import re

import pytest

from study.data.pipeline import corpus_stats
from study.data.synthetic import PLAN_CUES, CorpusConfig, first_boxed, last_boxed, make_splits

SMALL = dict(train_examples=60, val_examples=20, test_examples=30)
QUESTION = re.compile(r"^Compute (?P<expr>[0-9()+\-*]+) mod (?P<mod>\d+)\.$")
STEP = re.compile(r"\d[+\-*]\d=\d\.")  # one derivation step, e.g. "7*5=5."
BOXED_LIT = "\\boxed{"


def true_value(question: str) -> int:
    """Evaluate the question independently of Problem.steps: the expression is fully
    parenthesised, so Python's own precedence matches left-to-right evaluation, and reducing
    mod m at the end equals reducing after each step (+, -, * are ring operations)."""
    m = QUESTION.match(question)
    assert m, f"unexpected question format: {question!r}"
    expr, modulus = m["expr"], int(m["mod"])
    operands = [int(d) for d in re.findall(r"\d+", expr)]
    assert all(0 <= d < modulus for d in operands), question
    return eval(expr, {"__builtins__": {}}) % modulus  # charset checked by QUESTION


def all_examples(splits):
    return [ex for split in splits.values() for ex in split]


def cot_of(completion: str) -> str:
    return completion.split("<think>", 1)[1].split("</think>", 1)[0]


# --- splits --------------------------------------------------------------------------------


def test_make_splits_is_deterministic_for_a_seed():
    a = make_splits(CorpusConfig(**SMALL))
    b = make_splits(CorpusConfig(**SMALL))
    assert a == b


def test_make_splits_differs_for_another_seed():
    a = make_splits(CorpusConfig(**SMALL, seed=1))
    b = make_splits(CorpusConfig(**SMALL, seed=2))
    for name in ("train", "val", "test"):
        assert [e.id for e in a[name]] != [e.id for e in b[name]]


def test_splits_have_configured_sizes_and_are_disjoint():
    splits = make_splits(CorpusConfig(**SMALL))
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 20, "test": 30}
    ids = {name: [e.id for e in split] for name, split in splits.items()}
    for name, split_ids in ids.items():
        assert len(set(split_ids)) == len(split_ids), f"duplicate problem inside {name}"
    assert not set(ids["train"]) & set(ids["val"])
    assert not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    # Also disjoint by question text (the problem itself, independent of the id format).
    questions = [e.question for e in all_examples(splits)]
    assert len(set(questions)) == len(questions)


def test_growing_train_keeps_test_and_val_and_extends_train():
    small = make_splits(CorpusConfig(train_examples=40, val_examples=10, test_examples=20))
    big = make_splits(CorpusConfig(train_examples=100, val_examples=10, test_examples=20))
    assert big["test"] == small["test"]
    assert big["val"] == small["val"]
    assert big["train"][:40] == small["train"]
    assert len(big["train"]) == 100


# --- trace content -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["early", "late"])
def test_completions_have_one_think_span_and_correct_answers(layout):
    cfg = CorpusConfig(min_ops=1, max_ops=5, min_verify=0, max_verify=3, layout=layout,
                       train_examples=150, val_examples=10, test_examples=10)
    for ex in all_examples(make_splits(cfg)):
        c = ex.completion
        assert c.count("<think>") == 1 and c.count("</think>") == 1
        assert c.index("<think>") < c.index("</think>")
        truth = str(true_value(ex.question))
        assert ex.answer == truth, ex.question
        assert last_boxed(c) == truth, ex.question
        assert first_boxed(c) == truth, ex.question
        # Every \boxed in the trace states the true answer.
        assert set(re.findall(r"\\boxed\{([^{}]*)\}", c)) == {truth}


def test_literal_true_values():
    assert true_value("Compute ((3+4)*2)-5 mod 10.") == 9
    assert true_value("Compute (2-7)*3 mod 10.") == 5  # negative intermediate wraps around
    assert true_value("Compute 4*4 mod 7.") == 2


def test_boxed_helpers():
    text = r"a \boxed{1} b \boxed{22} c \boxed{3}."
    assert first_boxed(text) == "1"
    assert last_boxed(text) == "3"
    assert first_boxed("no answer") is None
    assert last_boxed("no answer") is None


# --- knobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_ops", [1, 2, 4, 6])
def test_ops_knob_sets_derivation_steps(n_ops):
    cfg = CorpusConfig(min_ops=n_ops, max_ops=n_ops, min_verify=1, max_verify=1,
                       train_examples=20, val_examples=0, test_examples=0)
    for ex in make_splits(cfg)["train"]:
        cot = cot_of(ex.completion)
        first_derivation = cot[: cot.index(BOXED_LIT)]
        assert len(STEP.findall(first_derivation)) == n_ops
        # early layout, one verification pass: the derivation appears twice in the CoT.
        assert len(STEP.findall(cot)) == 2 * n_ops


def test_ops_range_gives_mixed_step_counts():
    cfg = CorpusConfig(min_ops=1, max_ops=3, train_examples=200, val_examples=0, test_examples=0)
    counts = set()
    for ex in make_splits(cfg)["train"]:
        cot = cot_of(ex.completion)
        counts.add(len(STEP.findall(cot[: cot.index(BOXED_LIT)])))
    assert counts == {1, 2, 3}


@pytest.mark.parametrize("passes", [0, 1, 3])
def test_verify_knob_sets_boxed_count_in_early_cot(passes):
    cfg = CorpusConfig(min_verify=passes, max_verify=passes,
                       train_examples=20, val_examples=0, test_examples=0)
    for ex in make_splits(cfg)["train"]:
        assert cot_of(ex.completion).count(BOXED_LIT) == 1 + passes
        # The answer section adds exactly one more.
        assert ex.completion.count(BOXED_LIT) == 2 + passes


def test_verify_range_gives_mixed_boxed_counts():
    cfg = CorpusConfig(min_verify=0, max_verify=3, train_examples=200, val_examples=0,
                       test_examples=0)
    counts = {cot_of(ex.completion).count(BOXED_LIT) for ex in make_splits(cfg)["train"]}
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("passes", [0, 2, 3])
def test_late_layout_has_one_boxed_at_end_of_cot(passes):
    cfg = CorpusConfig(layout="late", min_verify=passes, max_verify=passes,
                       train_examples=30, val_examples=0, test_examples=0)
    for ex in make_splits(cfg)["train"]:
        cot = cot_of(ex.completion)
        assert cot.count(BOXED_LIT) == 1
        assert cot.endswith(f"\\boxed{{{ex.answer}}}.")
        # The derivation appears once, after every planning pass.
        steps = list(STEP.finditer(cot))
        assert len(steps) == ex.question.count("+") + ex.question.count("-") + ex.question.count("*")
        assert steps[0].start() > max(cot.rfind(cue) for cue in PLAN_CUES)
        assert sum(cot.count(cue) for cue in PLAN_CUES) == passes


def test_late_and_early_share_problems():
    early = make_splits(CorpusConfig(**SMALL))
    late = make_splits(CorpusConfig(**SMALL, layout="late"))
    # Same seed, same problems drawn in the same order; only the trace layout differs.
    assert [e.question for e in early["test"]] == [e.question for e in late["test"]]
    assert early["test"][0].completion != late["test"][0].completion


# --- corpus_stats --------------------------------------------------------------------------


def test_corpus_stats_default_layout_answer_near_40_percent(tokenizer):
    train = make_splits(CorpusConfig(train_examples=200))["train"]
    stats = corpus_stats(train, tokenizer)
    assert len(stats) == 200
    col = stats["first_answer_in_completion"]
    assert 0.30 <= col.mean() <= 0.45
    assert col.max() <= 0.45
    assert (stats["first_answer_in_cot"] > col).all()  # the CoT is shorter than the completion
    assert (stats["tokens"] == stats["tokens_P"] + stats["tokens_CoT"] + stats["tokens_A"]).all()
    assert (stats["tokens_completion"] == stats["tokens_CoT"] + stats["tokens_A"]).all()
    assert list(stats.index) == [e.id for e in train]


def test_corpus_stats_late_layout_answer_at_end(tokenizer):
    train = make_splits(CorpusConfig(train_examples=200, layout="late"))["train"]
    stats = corpus_stats(train, tokenizer)
    assert stats["first_answer_in_completion"].mean() > 0.8
    assert stats["first_answer_in_cot"].min() > 0.95


def test_corpus_stats_token_counts_literal(tokenizer):
    ex = make_splits(CorpusConfig(train_examples=1, val_examples=0, test_examples=0))["train"][0]
    stats = corpus_stats([ex], tokenizer)
    row = stats.loc[ex.id]
    ids = tokenizer.encode(
        f"<|user|>{ex.question}<|assistant|>{ex.completion}<|end|>", add_special_tokens=False
    )
    assert row["tokens"] == len(ids)
    prompt = tokenizer.encode(f"<|user|>{ex.question}<|assistant|>", add_special_tokens=False)
    assert row["tokens_P"] == len(prompt)
    # A: the tokens after </think>, eos included.
    answer = tokenizer.encode(f"{ex.answer_text}<|end|>", add_special_tokens=False)
    assert row["tokens_A"] == len(answer)


# --- validation ----------------------------------------------------------------------------


def test_min_ops_above_max_ops_rejected():
    with pytest.raises(ValueError, match="min_ops <= max_ops"):
        CorpusConfig(min_ops=4, max_ops=3)


def test_zero_ops_rejected():
    with pytest.raises(ValueError, match="min_ops"):
        CorpusConfig(min_ops=0, max_ops=2)


def test_min_verify_above_max_verify_rejected():
    with pytest.raises(ValueError, match="min_verify <= max_verify"):
        CorpusConfig(min_verify=3, max_verify=2)


def test_unknown_layout_lists_valid_layouts():
    with pytest.raises(ValueError) as err:
        CorpusConfig(layout="middle")
    msg = str(err.value)
    assert "'middle'" in msg and "early" in msg and "late" in msg


@pytest.mark.parametrize("modulus", [1, 11])
def test_modulus_outside_single_digits_rejected(modulus):
    with pytest.raises(ValueError, match="modulus"):
        CorpusConfig(modulus=modulus)


def test_too_many_problems_rejected_with_fix():
    # One operation mod 10: 10 * 10 * 3 = 300 distinct problems; 1000 + 100 + 200 asked.
    with pytest.raises(ValueError) as err:
        CorpusConfig(min_ops=1, max_ops=1, train_examples=1000)
    msg = str(err.value)
    assert "1300" in msg and "300" in msg
    assert "lower train_examples or raise max_ops" in msg


def test_exactly_all_problems_is_allowed():
    cfg = CorpusConfig(min_ops=1, max_ops=1, modulus=2, train_examples=6, val_examples=3,
                       test_examples=3)  # 2 * 2 * 3 = 12 distinct problems
    splits = make_splits(cfg)
    assert len({e.question for e in all_examples(splits)}) == 12
