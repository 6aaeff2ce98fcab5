"""Tests for study.data.synthetic (the synthetic corpus) and pipeline.corpus_stats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from study.data.pipeline import corpus_stats
from study.data.synthetic import (BOXED, PLAN_CUES, CorpusConfig, Problem, first_boxed, last_boxed, make_splits,
                                  other_task_examples)

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
    cfg = CorpusConfig(min_ops=n_ops, max_ops=n_ops, min_verify=1, max_verify=1, max_explore=0,
                       train_examples=20, val_examples=0, test_examples=0)
    for ex in make_splits(cfg)["train"]:
        cot = cot_of(ex.completion)
        first_derivation = cot[: cot.index(BOXED_LIT)]
        assert len(STEP.findall(first_derivation)) == n_ops
        # early layout, one verification pass: the derivation appears twice in the CoT.
        assert len(STEP.findall(cot)) == 2 * n_ops


def test_ops_range_gives_mixed_step_counts():
    cfg = CorpusConfig(min_ops=1, max_ops=3, max_explore=0, train_examples=200, val_examples=0, test_examples=0)
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


def test_other_task_traces_take_the_corpus_counts():
    """The base's traces of another task: the corpus's verification counts; each a complete
    trace whose boxes all hold the largest digit."""
    cfg = CorpusConfig(min_verify=1, max_verify=3)
    own = other_task_examples(cfg, 60, seed=0)
    assert {cot_of(ex.completion).count(BOXED_LIT) for ex in own} == {2, 3, 4}
    for ex in own:
        digits = [int(d) for d in ex.question.removeprefix("Find the largest of ").rstrip(".").split()]
        assert ex.answer == str(max(digits)) and ex.completion.endswith(f"</think>The answer is \\boxed{{{ex.answer}}}.")
        assert set(BOXED.findall(ex.completion)) == {ex.answer}


@pytest.mark.parametrize("passes", [0, 2, 3])
def test_late_layout_has_one_boxed_at_end_of_cot(passes):
    cfg = CorpusConfig(layout="late", min_verify=passes, max_verify=passes, max_explore=0,
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


EXPLORE_MARKS = (*PLAN_CUES, "No, the brackets come first.", "Hmm, let me start over.")


def explore_steps(cot: str) -> int:
    return sum(cot.count(mark) for mark in EXPLORE_MARKS)


@pytest.mark.parametrize("layout", ["early", "late"])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_explore_knob_sets_exploration_before_the_derivation(layout, steps):
    cfg = CorpusConfig(layout=layout, min_verify=1, max_verify=1, min_explore=steps, max_explore=steps,
                       train_examples=40, val_examples=0, test_examples=0)
    for ex in make_splits(cfg)["train"]:
        cot = cot_of(ex.completion)
        plan_passes = 1 if layout == "late" else 0  # the late layout's reflection is planning
        assert explore_steps(cot) == steps + plan_passes
        derivation = " ".join(f"{m.group(0)}" for m in STEP.finditer(cot))
        assert derivation  # an exploration step never states the answer: no box before the derivation
        first_box = cot.index(BOXED_LIT)
        assert cot.count("We need") == 1 and cot.startswith("We need")
        n_ops = ex.question.count("+") + ex.question.count("-") + ex.question.count("*")
        full_derivation = list(STEP.finditer(cot[:first_box]))[-n_ops:]
        assert full_derivation[-1].end() < first_box
        # Exploration ends before the derivation that leads to the first answer.
        last_mark = max((cot.rfind(m) for m in EXPLORE_MARKS), default=-1)
        assert last_mark < full_derivation[0].start()


def test_explore_kinds_vary_and_one_operation_problems_only_plan():
    cfg = CorpusConfig(min_explore=3, max_explore=3, train_examples=100, val_examples=0, test_examples=0)
    cots = [cot_of(ex.completion) for ex in make_splits(cfg)["train"]]
    for mark in ("Maybe ", "Try ", *PLAN_CUES):
        assert any(mark in c for c in cots), mark
    one_op = CorpusConfig(min_ops=1, max_ops=1, min_explore=2, max_explore=2, train_examples=50,
                          val_examples=0, test_examples=0)
    for ex in make_splits(one_op)["train"]:
        cot = cot_of(ex.completion)
        assert "Maybe " not in cot and "Try " not in cot  # both need a second operation
        assert sum(cot.count(c) for c in PLAN_CUES) == 2


def test_wrong_start_and_restart_literal():
    import random

    from study.data.synthetic import _explore

    p = Problem((3, 4, 2, 5), ("+", "*", "-"), 10)
    seen = {_explore(p, random.Random(seed)) for seed in range(40)}
    assert "Maybe 4*2 first? No, the brackets come first." in seen
    assert "Try 3+4=7. Hmm, let me start over." in seen
    assert any(s.endswith("First 3+4. Then times 2. Then minus 5.") for s in seen)


def test_no_exploration_is_the_corpus_from_before_the_knob():
    """max_explore 0 draws no count: the corpus of two verification passes is the one the
    issue-10 study was trained on (its first training example, literally)."""
    cfg = CorpusConfig(min_verify=2, max_verify=2, max_explore=0, train_examples=1, val_examples=0, test_examples=0)
    assert make_splits(cfg)["train"][0].completion == (
        "<think>We need ((1+0)*1)*9 mod 10. 1+0=1. 1*1=1. 1*9=9. So \\boxed{9}. Wait, let me double-check. "
        "1+0=1. 1*1=1. 1*9=9. Yes, \\boxed{9}. Let me verify. 1+0=1. 1*1=1. 1*9=9. Yes, \\boxed{9}."
        "</think>The answer is \\boxed{9}.")


def test_late_and_early_share_problems():
    early = make_splits(CorpusConfig(**SMALL))
    late = make_splits(CorpusConfig(**SMALL, layout="late"))
    # Same seed, same problems drawn in the same order; only the trace layout differs.
    assert [e.question for e in early["test"]] == [e.question for e in late["test"]]
    assert early["test"][0].completion != late["test"][0].completion


# --- corpus_stats --------------------------------------------------------------------------


SPREAD = dict(min_verify=1, max_verify=3, min_explore=0, max_explore=3)  # configs/spread.yaml


def test_spread_config_is_the_corpus_tested_here():
    from study.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "spread.yaml")
    assert {k: getattr(cfg.corpus, k) for k in SPREAD} == SPREAD
    assert (cfg.tokenizer.vocab_size, cfg.tokenizer.texts) == (256, 2)


def test_corpus_stats_spread_corpus_puts_the_first_answer_around_the_middle(tmp_path):
    from study.config import TokenizerConfig
    from study.models import get_tokenizer

    tokenizer, _ = get_tokenizer(TokenizerConfig(vocab_size=256, texts=2), tmp_path)
    train = make_splits(CorpusConfig(**SPREAD, train_examples=400))["train"]
    stats = corpus_stats(train, tokenizer)
    assert len(stats) == 400
    col = stats["first_answer_in_completion"]
    in_cot = stats["first_answer_in_cot"]
    # Mean near the middle of the CoT, spread over most of it (PAPER.md, "Where the answer appears").
    assert 0.45 <= in_cot.mean() <= 0.6
    assert in_cot.quantile(0.25) < 0.45 and in_cot.quantile(0.75) > 0.58
    assert in_cot.min() < 0.35 and in_cot.max() > 0.7
    assert (in_cot > col).all()  # the CoT is shorter than the completion


def test_corpus_stats_without_spread_is_a_narrow_band(tokenizer):
    """The control of the test above: the default corpus (one fixed count of passes, no
    exploration: the committed study's) puts the first answer in a narrow band near 0.4."""
    in_cot = corpus_stats(make_splits(CorpusConfig(train_examples=400))["train"], tokenizer)["first_answer_in_cot"]
    assert in_cot.max() - in_cot.min() < 0.1
    assert 0.35 < in_cot.mean() < 0.45


def test_corpus_stats_sections_add_up(tokenizer):
    train = make_splits(CorpusConfig(train_examples=50))["train"]
    stats = corpus_stats(train, tokenizer)
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
