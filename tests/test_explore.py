"""The package functions behind notebooks/explore.ipynb and notebooks/ablation.ipynb, on the
fixture records (tests/fixture_records.py): filters, generations with each rule's answer, the
ablation table and figure, loss curves, a grid with its reference run."""

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from study import figures, scoring, tables
from study.analysis import filter_runs, generations, label_variants, variants_of
from study.config import RunConfig
from study.grid import ablation_grid
from study.records import load

GRIDS = Path(__file__).resolve().parents[1] / "configs" / "grids"


@pytest.fixture(scope="module")
def df(fixture_records_dir):
    return label_variants(load(fixture_records_dir))


def test_filters_select_by_config_values_and_name_unknown_keys(df):
    assert set(filter_runs(df, {"lsp": 0.5, "window": "right"})["variant_label"]) == {"lsp=0.5, window=right"}
    assert set(filter_runs(df, {"lsp": [0.1, 0.2]})["config.lsp"]) == {0.1, 0.2}
    assert set(filter_runs(df, {"corpus.layout": "late"})["variant_label"]) == {"corpus.layout=late",
                                                                                "corpus.layout=late, lsp=0.5"}
    assert len(filter_runs(df, {})) == len(df)
    with pytest.raises(ValueError, match="'lssp' is not a config key.*lsp"):
        filter_runs(df, {"lssp": 0.5})


def test_generations_sit_beside_the_gold_answer_with_each_rules_answer(df):
    row = df[(df["variant_label"] == "lsp=0.5") & (df["seed"] == 42)].iloc[0]
    g = generations(row["path"], n=None)
    assert len(g) == row["quality.study_synthetic.n"]
    assert g["right (paper)"].mean() == pytest.approx(row["accuracy"])
    assert g["right (first box)"].mean() == pytest.approx(row["accuracy_first_boxed"])
    right = g[g["right (paper)"]].iloc[0]
    assert right["answer (paper)"] == right["gold"] == right["answer (last box)"]
    assert list(generations(row["path"], n=3, only="wrong")["right (paper)"]) == [False] * 3
    with pytest.raises(ValueError, match="only must be"):
        generations(row["path"], only="maybe")


def test_the_paper_rule_extracts_the_last_closed_box():
    assert scoring.extract(r"<think>So \boxed{3}. Wait, \boxed{7}.</think>The answer is \boxed{7}.") == "7"
    assert scoring.extract("no answer here") is None


def test_ablation_table_against_the_reference_with_paired_tests_and_holm(df):
    variants = [{}, {"lsp": 0.5}, {"lsp": 0.5, "window": "right"}, {"lsp": 0.42}]  # the last has no runs
    table = tables.ablation_table(df, None, variants)
    assert list(table["setting"]) == ["reference", "lsp=0.5", "lsp=0.5, window=right"]
    half = table.set_index("setting").loc["lsp=0.5"]
    assert half["difference"] == pytest.approx(half["accuracy"] - table["accuracy"][0])
    assert half["test"].startswith("paired t-test") and half["p (Holm)"] >= half["p"]
    assert half["tokens ratio"] == pytest.approx(0.5, abs=1e-3)
    assert half[tables.RETENTION] == pytest.approx(half["accuracy"] / table["accuracy"][0])
    assert "[" in tables.to_markdown(table)  # intervals merged for display
    fig = figures.ablation(df, None, variants)
    assert isinstance(fig, Figure) and len(figures.png(fig)) > 1000
    with pytest.raises(ValueError, match="none of the ablation's variants"):
        figures.ablation(df, None, [{"lsp": 0.42}])


def test_runs_table_and_loss_curves(df):
    table = tables.runs_table(df)
    assert len(table) == len(df) and list(table.columns[:3]) == ["run id", "variant", "seed"]
    assert table["variant"].is_monotonic_increasing
    assert tables.runs_browser(df) is None or hasattr(tables.runs_browser(df), "children")  # ipywidgets optional
    fig = figures.loss_curves(df.head(3), smooth=3)
    assert len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError, match="curve column"):
        figures.loss_curves(df.head(1), column="nope")


def test_a_grid_gets_its_reference_run_at_every_seed():
    grid, ref = ablation_grid(GRIDS / "random_mask.yaml")
    assert ref.random_mask == 0 and ref == RunConfig(seed=42, threads=1)  # on the grid's thread count
    refs = [c for c in grid.cells if c.label == "reference"]
    assert [c.seed for c in refs] == [42, 43, 44]
    assert [v for v in variants_of([c.config for c in grid.cells], ref)] == [
        {}, {"random_mask": 0.25}, {"random_mask": 0.506}, {"random_mask": 0.75}, {"random_mask": 0.9}]
    # A grid that has the reference among its cells gets nothing added; another reference names the variants.
    grid, ref = ablation_grid(GRIDS / "truncation.yaml", reference={"lsp": 0.5})
    assert ref.lsp == 0.5 and not [c for c in grid.cells if c.label == "reference"]
    assert {"lsp": 1.0} in variants_of([c.config for c in grid.cells], ref)
    with pytest.raises(ValueError, match="reference"):
        ablation_grid(GRIDS / "random_mask.yaml", reference={"lsp": 2.0})
