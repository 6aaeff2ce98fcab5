"""The statistics behind the tables and figures (study/analysis.py): per-problem correctness
read from the lm-eval outputs, the two-stage bootstrap over seeds and problems, paired and
unpaired comparisons, and the ratio behind retention, with hand-made cases whose answers are
known."""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fixture_records import SEEDS, fixture_configs, leading, write_run
from study import analysis
from study.analysis import (PAIRED_T, WELCH_T, accuracy_ci, compare, label_variants, mean_ci, paired_t,
                            problem_correctness, ratio_ci, select, welch)
from study.config import config_from_dict
from study.records import load


@pytest.fixture(scope="module")
def df(fixture_records_dir):
    return label_variants(load(fixture_records_dir))


def runs(folder, per_seed, overrides=None, first=None) -> pd.DataFrame:
    """Write one run per seed (``per_seed``: 0/1 correctness per problem, one list per seed of
    SEEDS) under ``folder`` and return their labelled rows."""
    base = config_from_dict(copy.deepcopy(overrides or {}))
    for i, (seed, correct) in enumerate(zip(SEEDS, per_seed)):
        write_run(folder, replace(base, seed=seed), correct, None if first is None else first[i])
    return label_variants(load(folder))


def width(est) -> float:
    return est.high - est.low


# --- per-problem correctness ----------------------------------------------------------------------

def test_problem_correctness_is_a_runs_by_problems_matrix_aligned_on_ids(df):
    rows = select(df, {"condition": "CoT"})
    last, reason = problem_correctness(rows)
    first, _ = problem_correctness(rows, "first")
    assert reason == "" and last.shape == (3, 200) and list(last.index) == list(rows.index)
    assert list(last.columns) == sorted(last.columns) and list(first.columns) == list(last.columns)
    assert set(np.unique(last.to_numpy())) == {0.0, 1.0}
    np.testing.assert_allclose(last.mean(axis=1), rows["accuracy"], atol=1e-12)
    np.testing.assert_allclose(first.mean(axis=1), rows["accuracy_first_boxed"], atol=1e-12)
    assert not first.equals(last)  # CoT: 0.88 by the last \boxed{}, 0.90 by the first
    with pytest.raises(ValueError, match="unknown answer rule 'middle'"):
        problem_correctness(rows, "middle")


def test_problem_order_in_the_file_does_not_matter(df, tmp_path):
    rows = select(df, {})
    before, _ = problem_correctness(rows)
    moved = []
    for record in rows["path"]:
        src = Path(record)
        for name in (src.name, src.name.replace(".json", ".lm_eval.json")):
            shutil.copy(src.with_name(name), tmp_path / name)
        moved.append(str(tmp_path / src.name))
    raw = tmp_path / Path(moved[0]).name.replace(".json", ".lm_eval.json")
    data = json.loads(raw.read_text())
    data["samples"].reverse()
    raw.write_text(json.dumps(data))
    after, reason = problem_correctness(rows.assign(path=moved))
    assert reason == "" and after.equals(before)


def test_problem_correctness_falls_back_with_its_reason(df, tmp_path):
    rows = select(df, {"lsp": 0.5})
    assert problem_correctness(rows.drop(columns="path"))[0] is None
    assert "no record paths" in problem_correctness(rows.drop(columns="path"))[1]
    # The recorded accuracy and the per-problem scores must agree (another task's scoring rule
    # would not): a frame whose accuracy was changed falls back.
    matrix, reason = problem_correctness(rows.assign(accuracy=0.5))
    assert matrix is None and reason == "per-problem scores disagree with the recorded accuracy for 3 of 3 runs"
    # Runs that scored different problems (the late-answer corpus has its own test split).
    mixed = pd.concat([rows.iloc[:2], select(df, {"corpus.layout": "late"}).iloc[:1]])
    assert problem_correctness(mixed) == (None, "the runs scored different test problems")
    # A missing file: named in the reason, and the estimators say they used the seeds only.
    for record in rows["path"]:
        src = Path(record)
        shutil.copy(src, tmp_path / src.name)
        shutil.copy(src.with_name(src.name.replace(".json", ".lm_eval.json")), tmp_path)
    gone = sorted(tmp_path.glob("*.lm_eval.json"))[0]
    gone.unlink()
    copied = label_variants(load(tmp_path))
    matrix, reason = problem_correctness(copied)
    assert matrix is None and reason == f"per-problem outputs missing for 1 of 3 runs ({gone.name})"
    est = accuracy_ci(copied)
    assert est.method == f"bootstrap over 3 seeds only ({reason})"
    assert 0 <= est.low < est.mean < est.high <= 1
    gone.write_text("{not json")
    assert "unreadable (JSONDecodeError)" in problem_correctness(label_variants(load(tmp_path)))[1]


# --- accuracy intervals ---------------------------------------------------------------------------

@pytest.mark.parametrize("counts, old", [((0, 1, 0), (-0.006, 0.009)), ((194, 179, 177), (0.801, 1.032))])
def test_accuracy_interval_stays_inside_0_1(tmp_path, counts, old):
    # The committed study's A and P+CoT+A: their Student-t intervals left [0, 1].
    rows = runs(tmp_path, [leading(200, k / 200) for k in counts])
    _, lo, hi, _ = mean_ci(rows["accuracy"])
    assert (round(lo, 3), round(hi, 3)) == old
    est = accuracy_ci(rows)
    assert est.method == "two-stage bootstrap over 3 seeds x 200 problems" and est.n == 3
    assert est.mean == pytest.approx(sum(counts) / 600)
    assert 0 <= est.low <= est.mean <= est.high <= 1
    assert old[0] < 0 or old[1] > 1  # the Student-t interval left [0, 1]; the bootstrap's does not


def test_all_zero_or_all_one_gets_the_exact_binomial_interval(tmp_path):
    # Every seed wrong on every problem (the study's P+A): the bootstrap would give [0, 0]; the
    # exact interval over the 200 problems is [0, 1 - 0.025^(1/200)] = [0, 0.0183].
    zero = accuracy_ci(runs(tmp_path / "zero", [[0] * 200] * 3))
    assert zero[:4] == (0.0, 0.0, pytest.approx(1 - 0.025 ** (1 / 200)), 3)
    assert zero.method.startswith("exact (Clopper-Pearson) interval over 200 problems")
    one = accuracy_ci(runs(tmp_path / "one", [[1] * 200] * 3))
    assert one[:4] == (1.0, pytest.approx(0.025 ** (1 / 200)), 1.0, 3)
    assert analysis.clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    # A difference between two such variants has no spread either, and says so.
    c = compare(label_variants(load(tmp_path / "zero")), label_variants(load(tmp_path / "one")))
    assert (c.low, c.high) == (-1.0, -1.0) and "no spread in any replicate" in c.interval
    assert "no spread" not in compare(label_variants(load(tmp_path / "one")),
                                      label_variants(load(tmp_path / "one"))).interval


def test_interval_widens_with_problem_level_variance_at_the_same_seed_means(tmp_path):
    # Both variants: every seed right on 100 of 200 problems. "Shared": the same 100 for all
    # seeds (problems are easy or hard for every seed: large between-problem variance).
    # "Spread": seeds right on different problems (each problem's mean over seeds near 0.5).
    shared = [leading(200, 0.5)] * 3
    spread = [leading(200, 0.5), leading(200, 0.5)[::-1], [1, 0] * 100]
    a = accuracy_ci(runs(tmp_path / "shared", shared))
    b = accuracy_ci(runs(tmp_path / "spread", spread))
    assert a.mean == b.mean == 0.5
    assert mean_ci([0.5, 0.5, 0.5])[1:3] == (0.5, 0.5)  # the seeds alone see no spread at all
    assert width(a) > 1.25 * width(b) > 0
    # Shared: the problem draw alone sets the interval, about 0.5 +- 1.96 sqrt(0.25 / 200).
    assert width(a) == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 200), rel=0.1)


def test_tiny_cases_have_literal_intervals(tmp_path):
    # Two seeds each right on problem 1 of 2: both seeds score 0.5, yet the problem draw gives
    # 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1].
    rows = runs(tmp_path, [[1, 0], [1, 0]])
    assert mean_ci(rows["accuracy"]) == (0.5, 0.5, 0.5, 2)
    assert accuracy_ci(rows)[:4] == (0.5, 0.0, 1.0, 2)
    # Seed-level data (no outputs): seeds 0 and 1 resample to 0, 0.5 or 1 alike.
    assert accuracy_ci(pd.DataFrame({"seed": [1, 2], "accuracy": [0.0, 1.0]}))[:4] == (0.5, 0.0, 1.0, 2)
    # A variant compared with itself, paired: the same draws on both sides give exactly 0 and 1.
    c = compare(rows, rows)
    assert (c.difference, c.low, c.high) == (0.0, 0.0, 0.0) and c.test == PAIRED_T
    assert ratio_ci(rows, rows)[:3] == (1.0, 1.0, 1.0)
    # One seed: a mean and no interval.
    one = accuracy_ci(rows.iloc[:1])
    assert one.mean == 0.5 and math.isnan(one.low) and one.method == "one seed: no interval"


def test_bootstrap_is_deterministic(df):
    rows = select(df, {"lsp": 0.5})
    assert accuracy_ci(rows) == accuracy_ci(rows.sample(frac=1.0, random_state=0))
    assert accuracy_ci(rows, replicates=500) != accuracy_ci(rows)


# --- comparisons ----------------------------------------------------------------------------------

def test_paired_t_has_the_hand_computed_p():
    # d = (0.04, 0.05, 0.06): t = 0.05 / (0.01 / sqrt 3) = 5 sqrt 3; on 2 dof the two-sided p is
    # 1 - t / sqrt(2 + t^2) = 1 - sqrt(75 / 77).
    t, p = paired_t([0.24, 0.55, 0.86], [0.2, 0.5, 0.8])
    assert t == pytest.approx(5 * math.sqrt(3)) and p == pytest.approx(1 - math.sqrt(75 / 77))
    # Differences without spread (equal up to float rounding: 0.3 - 0.2 != 0.5 - 0.4): no t.
    assert all(map(math.isnan, paired_t([0.3, 0.5], [0.2, 0.4])))
    assert all(map(math.isnan, paired_t([0.5], [0.4])))


def test_paired_test_detects_a_consistent_difference_that_welch_misses(tmp_path):
    # Seeds differ a lot (0.2, 0.5, 0.8), and a beats b by 0.04-0.06 on every seed: the pairs
    # see it, a two-sample test over seeds does not.
    base = [0.2, 0.5, 0.8]
    gain = [0.04, 0.05, 0.06]
    b = runs(tmp_path / "b", [leading(200, x) for x in base], {"condition": "CoT"})
    a = runs(tmp_path / "a", [leading(200, x + g) for x, g in zip(base, gain)], {"condition": "CoT+A"})
    c = compare(a, b)
    assert c.test == PAIRED_T and c.interval == "paired two-stage bootstrap over seeds x 200 problems"
    assert c.difference == pytest.approx(0.05) and (c.n_a, c.n_b) == (3, 3)
    assert c.p == pytest.approx(1 - math.sqrt(75 / 77)) and c.p < 0.05
    assert 0 < c.low < 0.05 < c.high  # the paired bootstrap CI excludes 0 as well
    _, p_welch = welch(a["accuracy"], b["accuracy"])
    assert p_welch > 0.5
    assert stats.ttest_ind(a["accuracy"], b["accuracy"], equal_var=False).pvalue == pytest.approx(p_welch)
    # Unpaired (other seeds on one side): Welch, labelled, seeds drawn separately; the CI covers 0.
    other = a.assign(seed=a["seed"] + 100)
    u = compare(other, b)
    assert u.test == WELCH_T and u.p == pytest.approx(p_welch)
    assert u.interval == ("unpaired two-stage bootstrap over seeds x 200 problems, "
                          "seeds drawn separately per side")
    assert u.low < 0 < u.high


def test_compare_pairs_by_seed_not_by_row_order(df):
    a, b = select(df, {"lsp": 0.5}), select(df, {})
    assert compare(a, b) == compare(a.iloc[::-1], b)


# --- ratio (retention) ----------------------------------------------------------------------------

def test_ratio_ci_reports_a_dropped_pair():
    a = pd.DataFrame({"seed": [1, 2, 3], "accuracy": [0.5, 0.6, 0.7]})
    b = pd.DataFrame({"seed": [1, 2, 3], "accuracy": [0.8, 0.9, math.nan]})
    est = ratio_ci(a, b)
    assert est.dropped == ("seed 3: no accuracy at b",) and est.n == 2
    assert "1 pair dropped (seed 3: no accuracy at b)" in est.method and est.method.startswith("paired")
    assert est.mean == pytest.approx(0.55 / 0.85)
    assert ratio_ci(a, b.fillna(1.0)).dropped == ()


def test_ratio_ci_reports_dropped_pairs_with_problem_outputs(df):
    a, b = select(df, {"lsp": 0.5}), select(df, {})
    b = b.assign(accuracy=b["accuracy"].where(b["seed"] != 44))
    est = ratio_ci(a, b)
    assert est.dropped == ("seed 44: no accuracy at b",) and est.n == 2
    assert est.method == ("paired two-stage bootstrap over seeds x 200 problems, "
                          "1 pair dropped (seed 44: no accuracy at b)")
    c = compare(a, b)
    assert c.dropped == est.dropped and c.test == f"{PAIRED_T}, 1 pair dropped (seed 44: no accuracy at b)"


def test_ratio_ci_is_bounded_below_and_counts_undefined_replicates():
    # A numerator near 0: the per-seed-ratio t interval went below 0, the bootstrap cannot.
    a = pd.DataFrame({"seed": [1, 2, 3], "accuracy": [0.0, 0.005, 0.0]})
    b = pd.DataFrame({"seed": [1, 2, 3], "accuracy": [0.97, 0.895, 0.885]})
    assert mean_ci(a["accuracy"] / b["accuracy"])[1] < 0
    est = ratio_ci(a, b)
    assert est.low == 0.0 and est.high > est.mean > 0
    # Replicates whose denominator is 0: 0 / 0 is left out and counted; a mean of 0 at b is NaN.
    est = ratio_ci(a.assign(accuracy=[0.0, 0.0, 0.3]), b.assign(accuracy=[0.0, 0.0, 0.6]))
    assert est.mean == pytest.approx(0.5) and (est.low, est.high) == (0.5, 0.5)
    undefined = int(est.method.split(", ")[-1].split(" of ")[0])
    assert 400 < undefined < 800  # P(seed 3 not drawn) = (2/3)^3: about 593 of 2000
    assert est.method.endswith(f"{undefined} of 2000 replicates left out (0 / 0)")
    zero = ratio_ci(a, b.assign(accuracy=0.0))
    assert math.isnan(zero.mean) and "the mean of b is 0" in zero.method


def test_fixture_outputs_match_the_records(df):
    # Every fixture run's lm-eval output scores exactly its record's accuracies (else the
    # consistency check would fall back), per corpus.
    matrix, reason = problem_correctness(df)
    assert reason == "the runs scored different test problems"  # two corpora in the set
    early = df[df["config.corpus.layout"].eq("early")]
    matrix, reason = problem_correctness(early, "first")
    assert reason == "" and matrix.shape == (len(early), 200) == (len(fixture_configs()) - 6, 200)
    late, reason = problem_correctness(df[df["config.corpus.layout"].eq("late")])
    assert reason == "" and all(i.endswith("|late") for i in late.columns)
    assert analysis.lm_eval_path("/x/abc.json") == Path("/x/abc.lm_eval.json")


def test_a_variant_and_seed_recorded_twice_is_refused(fixture_records_dir, tmp_path):
    """Two records of one variant and seed (another run id: e.g. other threads) are one
    replicate, not two seeds."""
    import json
    import shutil

    from study.analysis import label_variants
    from study.records import load

    for p in fixture_records_dir.iterdir():
        if p.is_file():
            shutil.copy(p, tmp_path / p.name)
    first = sorted(p for p in tmp_path.glob("*.json") if p.name.count(".") == 1 and "grid" not in p.name)[0]
    rec = json.loads(first.read_text())
    rec["run_id"] = "f" * 12
    rec["config"]["threads"] = 1  # not a variant key: the same variant and seed
    (tmp_path / f"{'f' * 12}.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="repeat a variant and seed"):
        label_variants(load(tmp_path))
    label_variants(load(fixture_records_dir))  # the fixture set itself has one record each


def test_scores_stored_at_evaluation_are_the_headline_rule(tmp_path):
    """Records scored by study/scoring.py keep each sample's score by every rule; the analysis
    uses those (the paper's rule can credit an answer no box holds), not a box re-read."""
    from study.analysis import problem_correctness
    from study.config import RunConfig
    from study.records import load
    from fixture_records import write_run

    cfg = RunConfig(eval_examples=4, corpus=replace(RunConfig().corpus, test_examples=4))
    path = write_run(tmp_path, cfg, [1, 0, 0, 0])
    out = path.with_name(path.name.replace(".json", ".lm_eval.json"))
    raw = json.loads(out.read_text())
    paper = [True, True, False, False]  # e.g. the second answered by a plain number, no box
    for s, ok in zip(raw["samples"], paper):
        s["correct"] = {"paper": ok, "last_boxed": False, "first_boxed": False}
    out.write_text(json.dumps(raw))
    rec = json.loads(path.read_text())
    rec["quality"]["study_synthetic"]["accuracy"] = 0.5
    rec["quality"]["study_synthetic"]["accuracy_first_boxed"] = 0.0
    path.write_text(json.dumps(rec))
    matrix, why = problem_correctness(load(tmp_path), "last")
    assert why == "" and matrix.to_numpy().sum() == 2
    first, why = problem_correctness(load(tmp_path), "first")
    assert why == "" and first.to_numpy().sum() == 0
