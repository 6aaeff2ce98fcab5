"""The paper tables on the fixture records (known accuracies): rows, statistics, files."""

import copy
import math
import re
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fixture_records import SEEDS, VARIANTS, fixture_configs, leading, write_run
from study import tables
from study.analysis import PAIRED_T, WELCH_T, holm, label_variants, mean_ci, ratio_ci
from study.config import config_from_dict
from study.records import load


@pytest.fixture(scope="module")
def df(fixture_records_dir):
    return load(fixture_records_dir)


def expected_accuracy(overrides, first=False):
    """Mean over seeds of the fixture's accuracies, computed from its own table."""
    assert any(var == overrides for var, *_ in VARIANTS), overrides
    return np.mean(list(per_seed(overrides, first).values()))


def per_seed(overrides, first=False):
    """{seed: accuracy} for one fixture variant, from fixture_configs (not the records)."""
    target = config_from_dict(copy.deepcopy(overrides))
    return {cfg.seed: (f if first else a) for cfg, a, f, _ in fixture_configs()
            if replace(cfg, seed=target.seed) == target}


def row(table, setting):
    hit = table[table[tables.SETTING] == setting]
    assert len(hit) == 1, f"{setting!r} in {list(table[tables.SETTING])}"
    return hit.iloc[0]


# --- supervision ---------------------------------------------------------------------------------

def test_supervision_rows_means_and_intervals(df):
    table = tables.supervision_table(df)
    conditions = ["A", "P+A", "CoT", "CoT+A", "P+CoT", "P+CoT+A"]
    assert list(table[tables.SETTING]) == [tables.TEACHER, tables.BASE, *conditions]
    for condition in conditions:
        r = row(table, condition)
        overrides = {} if condition == "P+CoT+A" else {"condition": condition}
        assert r[tables.ACC] == pytest.approx(expected_accuracy(overrides))
        assert r[tables.ACC_FIRST] == pytest.approx(expected_accuracy(overrides, first=True))
        assert r[tables.ACC + tables.LOW] < r[tables.ACC] < r[tables.ACC + tables.HIGH]
        assert r[tables.N] == 3
    assert row(table, "A")[tables.ACC] == pytest.approx(0.30)
    assert row(table, "CoT")[tables.ACC] == pytest.approx(0.88)
    teacher, base = row(table, tables.TEACHER), row(table, tables.BASE)
    assert teacher[tables.ACC] == 1.0 and base[tables.ACC] == pytest.approx(0.11)
    assert math.isnan(teacher[tables.ACC + tables.LOW]) and pd.isna(teacher[tables.N])
    assert row(table, "A")[tables.SUPERVISED] > 0 and row(table, "A")[tables.SECONDS] > 0


# --- truncation ----------------------------------------------------------------------------------

def test_truncation_retention_paired_by_seed(df):
    table = tables.truncation_table(df)
    lsps = [x for x in table["lsp"] if not pd.isna(x)]
    assert lsps == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    half, full = per_seed({"lsp": 0.5}), per_seed({})
    assert sorted(half) == list(SEEDS)
    r = row(table, "lsp 0.5")
    # The ratio of means (about 0.70 / 0.90), not the mean of per-seed ratios.
    assert r[tables.RETENTION] == pytest.approx(np.mean(list(half.values())) / np.mean(list(full.values())))
    assert r[tables.RETENTION] == pytest.approx(0.70 / 0.90, abs=1e-9)
    assert 0 <= r[tables.RETENTION + tables.LOW] < r[tables.RETENTION] < r[tables.RETENTION + tables.HIGH]
    first = np.mean(list(per_seed({"lsp": 0.1}, True).values())) / np.mean(list(per_seed({}, True).values()))
    assert row(table, "lsp 0.1")[tables.RETENTION_FIRST] == pytest.approx(first)
    note = table.attrs["note"]
    assert "paired by seed" in note and "unpaired" not in note and "Exceptions" not in note
    assert "test problems" in note and "delta" not in note


def test_truncation_ratios_at_full_are_exactly_one(df):
    r = row(tables.truncation_table(df), "lsp 1.0")
    for column in ("retention", "tokens forwarded ratio", "train time ratio", "peak memory ratio",
                   "train FLOPs ratio"):
        assert r[column] == 1.0, column
    half = row(tables.truncation_table(df), "lsp 0.5")
    assert half["tokens forwarded ratio"] == pytest.approx(0.5, abs=1e-5)
    assert half[tables.MEMORY] == pytest.approx(31_822_944 * 0.65 / 1e6, rel=1e-6)  # bytes -> MB


def test_truncation_is_unpaired_where_seeds_do_not_pair(df):
    labelled = label_variants(df)
    drop = labelled["variant_label"].eq("lsp=0.5") & labelled["seed"].eq(44)
    table = tables.truncation_table(df[~drop.to_numpy()])
    r = row(table, "lsp 0.5")
    half, full = per_seed({"lsp": 0.5}), per_seed({})
    expected = np.mean([half[42], half[43]]) / np.mean(list(full.values()))
    assert r[tables.RETENTION] == pytest.approx(expected)
    assert r[tables.RETENTION + tables.LOW] < expected < r[tables.RETENTION + tables.HIGH]
    assert "unpaired (seeds drawn separately) at lsp 0.5," in table.attrs["note"]


def test_truncation_note_says_what_flops_and_memory_measure(df):
    table = tables.truncation_table(df)
    assert tables.FLOPS == "train FLOPs (profiled steps, extrapolated)" and tables.FLOPS in table.columns
    note = table.attrs["note"]
    assert "torch.profiler on 3 optimiser steps" in note and "extrapolated to the whole run" in note
    # The memory source is read from the records, not hard-coded.
    assert "cpu_profiler_step_allocations+parameters+adam_state (CPU:" in note
    cuda = df.assign(**{"compute.peak_memory_source": "cuda_max_memory_allocated"})
    assert "torch.cuda.max_memory_allocated" in tables.truncation_table(cuda).attrs["note"]
    other = df.assign(**{"compute.peak_memory_source": "rss_sampler"})
    assert "rss_sampler (as recorded)" in tables.truncation_table(other).attrs["note"]
    assert "extrapolated" in tables.halves_controls_table(df).attrs["note"]


# --- halves and controls -------------------------------------------------------------------------

def test_halves_controls_rows_and_flops_ratio(df):
    table = tables.halves_controls_table(df)
    assert list(table[tables.SETTING]) == [
        tables.TEACHER, tables.BASE, "full sequence (lsp 1.0)", "left 50% (lead span, lsp 0.5)",
        "middle 50%", "right 50%", "random mask 0.506", "cut after </think>",
        "token budget (lsp 0.5, 6400 examples)", "late answer, lsp 1.0", "late answer, lsp 0.5"]
    assert row(table, "right 50%")[tables.ACC] == pytest.approx(0.40)
    assert row(table, "full sequence (lsp 1.0)")["FLOPs ratio"] == 1.0
    assert row(table, "token budget (lsp 0.5, 6400 examples)")["FLOPs ratio"] == pytest.approx(2.0, rel=1e-5)


def test_a_corpus_with_its_own_teacher_gets_its_own_reference_row(df):
    late = df["config.corpus.layout"].eq("late")
    df = df.assign(**{"teacher.id": df["teacher.id"].where(~late, "teacher-late"),
                      "teacher.accuracy": df["teacher.accuracy"].where(~late, 0.97)})
    table = tables.halves_controls_table(df)
    assert row(table, "teacher (corpus.layout=late)")[tables.ACC] == 0.97
    assert row(table, tables.TEACHER)[tables.ACC] == 1.0


# --- significance --------------------------------------------------------------------------------

def test_significance_flags_the_papers_comparisons(df):
    table = tables.significance_table(df).set_index("comparison")
    for c in ("CoT", "CoT+A", "P+CoT", "P+CoT+A"):
        for base in ("A", "P+A"):
            assert table.loc[f"{c} vs {base}", "p"] < 0.01  # paired t on 2 dof: t > 9.9
            assert table.loc[f"{c} vs {base}", "difference"] > 0.5
            assert table.loc[f"{c} vs {base}", "difference" + tables.LOW] > 0.4
    assert table.loc["CoT vs P+CoT+A", "p"] > 0.05
    low, high = table.loc["CoT vs P+CoT+A", ["difference" + tables.LOW, "difference" + tables.HIGH]]
    assert low < 0 <= high
    assert table.loc["CoT vs P+CoT+A", "mean a"] == pytest.approx(0.88)
    assert table.loc["left 50% vs right 50%", "difference"] == pytest.approx(0.30)
    assert set(table["test"]) == {PAIRED_T}  # every fixture variant has seeds 42, 43, 44
    assert table[tables.DIFF_METHOD].str.startswith("paired two-stage bootstrap over seeds x 200 problems").all()
    assert (table["p (Holm)"] >= table["p"]).all() and (table[["n a", "n b"]] == 3).all().all()
    assert len(table) == 16  # 1 + 8 supervision, left/right, lsp, 2 lead span + ending, random mask, budget, late
    assert "paired t-test" in table.attrs["note"] and "Welch" in table.attrs["note"]


def test_significance_names_each_rows_test(df):
    # Without seed 44 of the right window, left vs right cannot pair: Welch, labelled unpaired.
    labelled = label_variants(df)
    drop = (labelled["variant_label"].eq("lsp=0.5, window=right") & labelled["seed"].eq(44)).to_numpy()
    table = tables.significance_table(df[~drop]).set_index("comparison")
    assert table.loc["left 50% vs right 50%", "test"] == WELCH_T
    assert "unpaired" in table.loc["left 50% vs right 50%", tables.DIFF_METHOD]
    assert (table.loc["left 50% vs right 50%", ["n a", "n b"]] == [3, 2]).all()
    assert set(table.drop(index="left 50% vs right 50%")["test"]) == {PAIRED_T}
    md = tables.to_markdown(table.reset_index())
    assert WELCH_T in md and PAIRED_T in md and "difference 95% CI" in md


def test_significance_by_the_first_answer_rule(df):
    first = tables.significance_table(df, rule="first").set_index("comparison")
    # Fixture: the first-\boxed{} accuracy of CoT is 0.90 against 0.88 by the last.
    assert first.loc["CoT vs P+CoT+A", "mean a"] == pytest.approx(0.90)
    assert first.loc["token budget (lsp 0.5, 2x examples) vs lsp 1.0", "mean a"] == pytest.approx(0.90)
    assert "first" in first.attrs["note"]
    with pytest.raises(ValueError, match="unknown answer rule 'middle'; valid: last, first"):
        tables.significance_table(df, rule="middle")


# --- robustness: missing, extra and one-seed variants ---------------------------------------------

def test_missing_variant_is_skipped(df):
    labelled = label_variants(df)
    keep = ~labelled["variant_label"].isin(["condition=CoT", "lsp=0.5, window=middle"]).to_numpy()
    sup = tables.supervision_table(df[keep])
    assert "CoT" not in set(sup[tables.SETTING]) and len(sup) == 7
    assert "middle 50%" not in set(tables.halves_controls_table(df[keep])[tables.SETTING])
    sig = tables.significance_table(df[keep])
    assert not sig["comparison"].str.startswith("CoT vs").any() and len(sig) == 16 - 3


def test_ending_table_per_regime_beside_the_plain_lead_span(df):
    table = tables.ending_table(df)
    assert list(table[tables.SETTING]) == [  # only the lsp values where a lead span keeps its ending
        "full sequence (lsp 1.0)", *[f"lead span{e}, lsp {x}" for x in ("0.3", "0.5", "0.7") for e in ("", " + ending")]]
    assert set(table["regime"]) == {"reference"}
    plain, ending = row(table, "lead span, lsp 0.5"), row(table, "lead span + ending, lsp 0.5")
    assert ending[tables.ACC] == pytest.approx(0.88) and ending[tables.RETENTION] == pytest.approx(0.88 / 0.9)
    assert ending[tables.CLOSED] == 1.0 and plain[tables.CLOSED] == pytest.approx(0.4)  # the fixture's rates
    assert ending[tables.GENERATED] == 48.0 and plain[tables.AT_LIMIT] == pytest.approx(0.6)
    assert ending["tokens forwarded ratio"] == pytest.approx(plain["tokens forwarded ratio"])  # the same budget
    # A contrast regime (another base student and learning rate) gets rows of its own,
    # retention against its own lsp 1.0.
    contrast = df[df["config.lsp"].isin([0.5, 1.0]) & df["config.condition"].eq("P+CoT+A")
                  & df["config.window"].eq("left") & df["config.corpus.layout"].eq("early")
                  & df["config.random_mask"].eq(0.0) & df["config.corpus.train_examples"].eq(3200)].copy()
    contrast = contrast.assign(**{"config.lr": 1e-3, "quality.study_synthetic.accuracy":
                                  contrast["quality.study_synthetic.accuracy"] / 2})
    both = tables.ending_table(pd.concat([df, contrast], ignore_index=True))
    assert list(both["regime"].unique()) == ["reference", "lr=0.001"]
    mine = both[both["regime"] == "lr=0.001"].set_index(tables.SETTING)
    assert list(mine.index) == ["full sequence (lsp 1.0)", "lead span, lsp 0.5", "lead span + ending, lsp 0.5"]
    assert mine.loc["lead span + ending, lsp 0.5", tables.RETENTION] == pytest.approx(0.88 / 0.9)
    assert tables.ending_table(df[~df["config.keep_answer"]]).empty  # shown only with the extension


def test_extra_unrelated_variants_do_not_leak(df):
    extra = df[df["config.lsp"].isin([0.5, 1.0]) & df["config.condition"].eq("P+CoT+A")
               & df["config.window"].eq("left") & df["config.corpus.layout"].eq("early")].copy()
    scratch = extra.assign(**{"config.init": "scratch", "quality.study_synthetic.accuracy": 0.01})
    uncached = extra.assign(**{"config.teacher_cache": False, "quality.study_synthetic.accuracy": 0.02})
    mixed = pd.concat([df, scratch, uncached], ignore_index=True)
    for build in tables.TABLES.values():
        pd.testing.assert_frame_equal(build(mixed), build(df))


def test_one_seed_variants_give_nan_intervals(df):
    one = df[df["config.seed"].eq(42)]
    sup = tables.supervision_table(one)
    a = row(sup, "A")
    assert a[tables.N] == 1
    assert math.isnan(a[tables.ACC + tables.LOW]) and math.isnan(a[tables.ACC + tables.HIGH])
    r = row(tables.truncation_table(one), "lsp 0.5")
    assert r[tables.RETENTION] == pytest.approx(per_seed({"lsp": 0.5})[42] / per_seed({})[42])
    assert math.isnan(r[tables.RETENTION + tables.LOW])
    sig = tables.significance_table(one)
    assert sig["p"].isna().all() and sig["p (Holm)"].isna().all()
    assert "| A " in tables.to_markdown(sup)  # NaN intervals format as a dash, no crash


def test_empty_records_give_empty_tables(tmp_path):
    for build in tables.TABLES.values():
        assert build(pd.DataFrame()).empty
    assert tables.write_all(pd.DataFrame(), tmp_path) == []


# --- files ---------------------------------------------------------------------------------------

def test_write_all_writes_three_formats_and_csv_round_trips(fixture_records_dir, df, tmp_path):
    paths = tables.write_all(fixture_records_dir, tmp_path)
    names = ("supervision", "truncation", "halves_controls", "ending", "significance", "significance_first_boxed")
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in names for e in ("md", "tex", "csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    for name in names:
        table = tables.TABLES[name](df)
        back = pd.read_csv(tmp_path / f"{name}.csv")
        assert list(back.columns) == list(table.columns)
        for column in table.columns:
            if pd.api.types.is_numeric_dtype(table[column]):
                np.testing.assert_allclose(back[column].to_numpy(float), table[column].to_numpy(float),
                                           rtol=1e-12, equal_nan=True)
            else:
                assert list(back[column]) == list(table[column])


def test_write_all_skips_tables_without_their_variants(df, tmp_path, caplog):
    only_a = df[df["config.condition"].eq("A")]
    with caplog.at_level("INFO", logger="study.tables"):
        paths = tables.write_all(only_a, tmp_path)
    assert sorted(p.name for p in paths) == ["supervision.csv", "supervision.md", "supervision.tex"]
    assert "truncation skipped" in caplog.text


def test_markdown_formats_numbers_and_escapes_tags(df):
    table = tables.halves_controls_table(df)
    md = tables.to_markdown(table, caption="c", note="n")
    assert "cut after \\</think\\>" in md and "</think>" not in md
    full = row(table, "full sequence (lsp 1.0)")
    interval = f"[{full[tables.ACC + tables.LOW]:.3f}, {full[tables.ACC + tables.HIGH]:.3f}]"
    assert interval == "[0.850, 0.945]" and interval in md  # the bootstrap's, byte-stable
    assert "Note: n" in md and md.startswith("**c**")
    assert "0.900" in md and "1,256,223" in md and "1.29e+12" in md


def test_latex_is_escaped_and_well_formed(df):
    for name, build in tables.TABLES.items():
        table = build(df)
        tex = tables.to_latex(table, name, caption=tables.CAPTIONS[name], note=table.attrs.get("note"))
        assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
        assert f"\\label{{tab:{name}}}" in tex and "\\caption{" in tex
        text = re.sub(r"\\label\{[^}]*\}", "", tex)  # a label may hold "_"
        assert not re.search(r"(?<!\\)[%_#$]", text), name
        assert "</think>" not in tex and "<" not in tex and ">" not in tex.replace("\\ifdim\\width>", "")
        assert tex.count("{") == tex.count("}") + tex.count("\\}") - tex.count("\\{")
        body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
        header = tex.split("\\toprule")[1].split("\\midrule")[0]
        columns = len(header.replace("\\&", "").split("&"))
        for line in [header, *body.strip().splitlines()]:  # no unescaped & inside a cell
            assert len(line.replace("\\&", "").split("&")) == columns
    tex = tables.to_latex(tables.halves_controls_table(df), "h")
    assert "cut after \\textless{}/think\\textgreater{}" in tex and "50\\%" in tex


# --- the statistics helpers the tables add to analysis ---------------------------------------------

def test_holm_matches_hand_computation():
    adjusted = holm([0.01, 0.04, float("nan"), 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06], equal_nan=True)


def test_ratio_ci_paired_and_unpaired():
    # Frames without record paths: no per-problem outputs, so the bootstrap is over seeds only.
    a = pd.DataFrame({"seed": [1, 2, 3], "accuracy": [0.5, 0.6, 0.7]})
    b = pd.DataFrame({"seed": [3, 1, 2], "accuracy": [1.0, 0.8, 0.9]})
    est = ratio_ci(a, b)
    assert est.method.startswith("paired bootstrap over seeds only (no record paths") and est.n == 3
    assert est.mean == pytest.approx(0.6 / 0.9) and 0 <= est.low < est.mean < est.high and est.dropped == ()
    est = ratio_ci(a, b.assign(seed=[4, 5, 6]))
    assert est.method.startswith("unpaired bootstrap over seeds only") and "seeds drawn separately" in est.method
    assert est.mean == pytest.approx(0.6 / 0.9) and est.low < est.mean < est.high


# --- intervals: bounded, problem-level, stable, with their fallback said ----------------------------

def test_accuracy_intervals_stay_inside_0_1_near_0_and_near_1(tmp_path):
    # The committed study's A (0, 1 and 0 of 200 right) and P+CoT+A (194, 179, 177 of 200),
    # whose Student-t intervals over seeds were [-0.006, 0.009] and [0.801, 1.032].
    for overrides, counts in (({"condition": "A"}, (0, 1, 0)), ({}, (194, 179, 177))):
        for seed, k in zip(SEEDS, counts):
            write_run(tmp_path, replace(config_from_dict(copy.deepcopy(overrides)), seed=seed), leading(200, k / 200))
    table = tables.supervision_table(load(tmp_path))
    for setting, old in (("A", "[-0.006, 0.009]"), ("P+CoT+A", "[0.801, 1.032]")):
        r = row(table, setting)
        _, lo, hi, _ = mean_ci([k / 200 for k in ((0, 1, 0) if setting == "A" else (194, 179, 177))])
        assert f"[{lo:.3f}, {hi:.3f}]" == old  # the seed-only t interval leaves [0, 1] ...
        assert 0 <= r[tables.ACC + tables.LOW] <= r[tables.ACC] <= r[tables.ACC + tables.HIGH] <= 1  # ... this does not
    assert row(table, "A")[tables.ACC + tables.LOW] == 0.0
    assert "two-stage bootstrap over seeds and test problems" in table.attrs["note"]
    assert "seeds only" not in table.attrs["note"]


def test_tables_fall_back_to_seeds_and_say_so_when_an_output_is_missing(fixture_records_dir, tmp_path):
    shutil.copytree(fixture_records_dir, tmp_path, dirs_exist_ok=True)
    df = label_variants(load(tmp_path))
    victim = df[df["variant_label"].eq("condition=A") & df["seed"].eq(43)]["path"].iloc[0]
    (tmp_path / (victim.rsplit("/", 1)[1].removesuffix(".json") + ".lm_eval.json")).unlink()
    table = tables.supervision_table(df)
    note = table.attrs["note"]
    assert "A: bootstrap over 3 seeds only (per-problem outputs missing for 1 of 3 runs" in note
    assert "P+A:" not in note  # only the variant that lost a file
    assert row(table, "A")[tables.ACC + tables.LOW] < 0.30 < row(table, "A")[tables.ACC + tables.HIGH]
    sig = tables.significance_table(df).set_index("comparison")
    assert sig.loc["CoT vs A", tables.DIFF_METHOD].startswith("paired bootstrap over seeds only (b: per-problem")
    assert sig.loc["CoT vs P+A", tables.DIFF_METHOD].startswith("paired two-stage bootstrap")


def test_tables_are_byte_stable(fixture_records_dir, tmp_path):
    tables.write_all(fixture_records_dir, tmp_path / "one")
    tables.write_all(fixture_records_dir, tmp_path / "two")
    for path in (tmp_path / "one").iterdir():
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


def test_the_ending_prior_column_appears_only_where_runs_measured_it(df):
    assert tables.PRIOR not in tables.truncation_table(df).columns  # the fixture records predate it
    column = tables.STOPPING_COLUMNS[tables.PRIOR]
    table = tables.truncation_table(df.assign(**{column: 0.3}))
    assert table.loc[table["lsp"].notna(), tables.PRIOR].tolist() == pytest.approx([0.3] * table["lsp"].notna().sum())
    assert tables.PRIOR not in tables.truncation_table(df.assign(**{column: math.nan})).columns
