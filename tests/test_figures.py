"""The study's figures on the fixture records: files written, and what the axes show (the
plotted means and intervals are the fixture's, bars in the paper's order, the token strip marks
exactly the supervised tokens)."""

from __future__ import annotations

import logging
from dataclasses import replace

import matplotlib.image as mpimg
import numpy as np
import pytest
from fixture_records import SEEDS, VARIANTS, fixture_configs
from matplotlib.container import ErrorbarContainer

from study import figures
from study.analysis import accuracy_ci, label_variants, select
from study.config import RunConfig, config_from_dict
from study.data.pipeline import encode, prepare, target_mask
from study.data.synthetic import BOXED, make_splits
from study.records import load
from study.sections import CONDITIONS, truncate


@pytest.fixture(scope="module")
def df(fixture_records_dir):
    return label_variants(load(fixture_records_dir))


def fixture_accuracy(variant: dict, first: bool = False) -> float:
    """The fixture's mean accuracy of a variant, from its own per-seed table."""
    assert any(overrides == variant for overrides, *_ in VARIANTS), variant
    target = config_from_dict(dict(variant))
    values = [f if first else a for cfg, a, f, _ in fixture_configs() if replace(cfg, seed=target.seed) == target]
    assert len(values) == len(SEEDS)
    return float(np.mean(values))


def vertical_bounds(container: ErrorbarContainer) -> np.ndarray:
    """[lower, upper] end of each vertical error bar."""
    return np.array([(seg[0][1], seg[1][1]) for seg in container.lines[2][0].get_segments()])


def lsp_variant(lsp: float) -> dict:
    return {} if lsp == 1.0 else {"lsp": lsp}


def errorbar(ax, gid: str) -> ErrorbarContainer:
    found = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.lines[0].get_gid() == gid]
    assert len(found) == 1, f"expected one error-bar series {gid!r}"
    return found[0]


def vertical_half_widths(container: ErrorbarContainer) -> np.ndarray:
    segments = container.lines[2][0].get_segments()
    return np.array([(seg[1][1] - seg[0][1]) / 2 for seg in segments])


def assert_saved(paths, tmp_path, name):
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    assert set(paths) == {png, pdf}
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


# --- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, draw", [
    ("accuracy_vs_lsp", figures.accuracy_vs_lsp),
    ("compute_quality", figures.compute_quality),
    ("supervision", figures.supervision_bars),
    ("halves", figures.halves),
])
def test_records_figures_save_png_and_pdf(df, tmp_path, name, draw):
    assert_saved(figures.save(draw(df), name, tmp_path), tmp_path, name)


def test_figures_accept_unlabelled_records(fixture_records_dir):
    fig = figures.supervision_bars(load(fixture_records_dir))
    assert len([p for p in fig.axes[0].patches if p.get_gid() == "supervision-bar"]) == 6


# --- 1. accuracy vs lsp ---------------------------------------------------------------------------


def test_accuracy_vs_lsp_plots_the_fixture_means_and_intervals(df):
    fig = figures.accuracy_vs_lsp(df)
    ax = fig.axes[0]
    levels = [round(0.1 * i, 1) for i in range(1, 11)]
    last = errorbar(ax, "accuracy-last-boxed")
    x, y = (np.asarray(a, dtype=float) for a in last.lines[0].get_data())
    assert list(np.round(x, 6)) == levels
    assert y == pytest.approx([fixture_accuracy(lsp_variant(lsp)) for lsp in levels], abs=1e-9)
    # The bars are the tables' intervals: the bootstrap over seeds and problems, inside [0, 1].
    expected = [accuracy_ci(select(df, lsp_variant(lsp))) for lsp in levels]
    bounds = vertical_bounds(last)
    np.testing.assert_allclose(bounds, [(e.low, e.high) for e in expected], atol=1e-9)
    assert (bounds >= 0).all() and (bounds <= 1).all() and (vertical_half_widths(last) > 0).all()
    assert any("bootstrap CI over seeds and test problems" in t.get_text() for t in ax.texts)

    first = errorbar(ax, "accuracy-first-boxed")
    assert len(first.lines[0].get_xdata()) == 10
    assert first.lines[0].get_linestyle() == "--"
    assert np.asarray(first.lines[0].get_ydata(), dtype=float) == pytest.approx(
        [fixture_accuracy(lsp_variant(lsp), first=True) for lsp in levels], abs=1e-9)

    assert "lsp" in ax.get_xlabel() and "fraction" in ax.get_xlabel()
    assert "accuracy" in ax.get_ylabel() and "fraction" in ax.get_ylabel()
    assert ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("teacher: 1.00" in t for t in labels) and any("base student" in t and "0.11" in t for t in labels)
    assert any("first" in t for t in labels) and any("last" in t for t in labels)


# --- 2. compute vs quality ------------------------------------------------------------------------


def test_compute_quality_has_three_labelled_panels_with_one_point_per_lsp(df):
    fig = figures.compute_quality(df)
    assert len(fig.axes) == 3
    units = ["TFLOP", "(s)", "(MB)"]
    for ax, unit in zip(fig.axes, units):
        assert unit in ax.get_xlabel(), ax.get_xlabel()
        assert ax.get_title()
        points = errorbar(ax, "lsp-points")
        x, y = (np.asarray(a, dtype=float) for a in points.lines[0].get_data())
        assert len(x) == 10 and np.all(np.diff(x) > 0), "cost rises with lsp in the fixture"
        assert y[-1] == pytest.approx(0.90)
        notes = sorted(t.get_text() for t in ax.texts)
        assert notes == sorted(f"{0.1 * i:.1f}" for i in range(1, 11))
    assert "accuracy" in fig.axes[0].get_ylabel()
    # The fixture's profiler FLOPs are 1.3e12 * lsp * 0.99: shown in TFLOP, labelled as the
    # profiler's count on the profiled steps, extrapolated to the run.
    flops = np.asarray(errorbar(fig.axes[0], "lsp-points").lines[0].get_xdata(), dtype=float)
    assert flops == pytest.approx([1.3 * 0.99 * 0.1 * i for i in range(1, 11)], rel=1e-9)
    assert "profiled steps, extrapolated" in fig.axes[0].get_xlabel()
    assert "cpu profiler step allocations" in fig.axes[2].get_xlabel()  # the records' memory source
    title = fig._suptitle.get_text()
    assert "accuracy error bars: 95% bootstrap CI over seeds and test problems" in title
    assert "cost error bars: 95% Student-t CI over seeds" in title
    bounds = vertical_bounds(errorbar(fig.axes[0], "lsp-points"))
    assert (bounds >= 0).all() and (bounds <= 1).all()


def test_figures_say_when_intervals_fall_back_to_seeds(df):
    no_outputs = df.assign(path=None)  # no lm-eval outputs to read: the bootstrap over seeds only
    fig = figures.accuracy_vs_lsp(no_outputs)
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert any("over seeds only where per-problem outputs are missing" in t for t in notes)
    fig = figures.accuracy_vs_lsp(df)
    assert not any("seeds only" in t.get_text() for t in fig.axes[0].texts)


# --- 3. supervision -------------------------------------------------------------------------------


def test_supervision_bars_are_the_six_conditions_in_paper_order(df):
    fig = figures.supervision_bars(df)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_gid() == "supervision-bar"]
    assert len(bars) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CONDITIONS)
    expected = [fixture_accuracy({} if c == "P+CoT+A" else {"condition": c}) for c in CONDITIONS]
    assert [b.get_height() for b in sorted(bars, key=lambda b: b.get_x())] == pytest.approx(expected, abs=1e-9)
    seed_points = sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().shape[0] and
                      c.get_offsets().shape[1] == 2 and type(c).__name__ == "PathCollection")
    assert seed_points == 6 * len(SEEDS)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("teacher") for t in labels) and any(t.startswith("base student") for t in labels)
    assert "accuracy" in ax.get_ylabel()


def test_supervision_bars_follow_a_non_default_reference(fixture_records_dir):
    # Against a reference whose condition is CoT, the P+CoT+A runs become a variant: the bars
    # must still be the same six conditions with the same heights.
    ref = RunConfig(condition="CoT")
    fig = figures.supervision_bars(label_variants(load(fixture_records_dir), ref), reference=ref)
    bars = sorted((p for p in fig.axes[0].patches if p.get_gid() == "supervision-bar"), key=lambda b: b.get_x())
    assert [b.get_height() for b in bars] == pytest.approx([0.30, 0.32, 0.88, 0.90, 0.87, 0.90], abs=1e-9)


# --- 4. halves ------------------------------------------------------------------------------------


def test_halves_has_three_windows_a_reference_bar_and_loss_curves(df):
    fig = figures.halves(df)
    bar_ax, loss_ax = fig.axes
    windows = sorted((p for p in bar_ax.patches if p.get_gid() == "window-bar"), key=lambda b: b.get_x())
    reference = [p for p in bar_ax.patches if p.get_gid() == "reference-bar"]
    assert len(windows) == 3 and len(reference) == 1
    assert reference[0].get_height() == pytest.approx(0.90)
    assert [b.get_height() for b in windows] == pytest.approx([
        fixture_accuracy({"lsp": 0.5}),
        fixture_accuracy({"lsp": 0.5, "window": "middle"}),
        fixture_accuracy({"lsp": 0.5, "window": "right"})], abs=1e-9)
    ticks = [t.get_text() for t in bar_ax.get_xticklabels()]
    assert ticks[0].startswith("full") and [t.split()[0] for t in ticks[1:]] == ["left", "middle", "right"]
    means = [line for line in loss_ax.get_lines() if line.get_gid() == "mean-curve"]
    seeds = [line for line in loss_ax.get_lines() if line.get_gid() == "seed-curve"]
    assert len(means) == 4 and len(seeds) == 4 * len(SEEDS)
    assert loss_ax.get_xlabel() == "optimiser step" and "loss" in loss_ax.get_ylabel()
    # The fixture's loss is 3 (1 - kept/2) / step^0.3 for every seed: the mean is that curve.
    left = next(line for line in means if line.get_label().startswith("left"))
    steps, loss = left.get_data()
    assert loss == pytest.approx(3.0 * 0.75 / steps ** 0.3, rel=1e-9)


def test_mean_curve_interpolates_curves_of_different_lengths():
    a = (np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1]))
    b = (np.array([1.0, 3]), np.array([2.0, 2]))
    c = (np.array([0.0, 3, 5]), np.array([0.0, 0, 0]))
    grid, mean = figures.mean_curve([a, b, c])
    assert list(grid) == [1, 2, 3]  # only where every seed has data
    assert list(mean) == pytest.approx([2.0, 5 / 3, 4 / 3])


def test_halves_with_curves_of_different_lengths(df):
    rows = df.copy()
    rows["curve"] = [c[: 10 + 5 * i] for i, c in enumerate(rows["curve"])]
    fig = figures.halves(rows)
    means = [line for line in fig.axes[1].get_lines() if line.get_gid() == "mean-curve"]
    assert len(means) == 4 and all(len(line.get_xdata()) > 5 for line in means)


# --- write_all ------------------------------------------------------------------------------------


def test_write_all_from_a_folder_writes_every_records_figure(fixture_records_dir, tmp_path):
    paths = figures.write_all(fixture_records_dir, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.{e}" for n in ("accuracy_vs_lsp", "compute_quality", "supervision", "halves") for e in ("png", "pdf"))
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_write_all_skips_figures_without_data(df, tmp_path, caplog):
    no_windows = df[[not ("window" in v or v == {"lsp": 0.5}) for v in df["variant"]]]
    with caplog.at_level(logging.INFO, logger="study.figures"):
        paths = figures.write_all(no_windows, tmp_path)
    names = {p.stem for p in paths}
    assert names == {"accuracy_vs_lsp", "compute_quality", "supervision"}
    assert not (tmp_path / "halves.png").exists()
    assert "skipping halves" in caplog.text and "skipping the corpus figures" in caplog.text

    only_reference = df[[v == {} for v in df["variant"]]]
    assert figures.write_all(only_reference, tmp_path / "one") == []
    with pytest.raises(FileNotFoundError, match="no-records"):  # records.load: a missing folder is an error
        figures.write_all(tmp_path / "no-records", tmp_path / "none")


# --- 5. first-answer positions --------------------------------------------------------------------


@pytest.fixture(scope="module")
def position_stats(tokenizer):
    return figures.corpus_position_stats(RunConfig(), tokenizer, n=40)


def test_corpus_position_stats_cover_both_layouts(position_stats):
    assert set(position_stats) == {"early", "late"}
    assert all(len(t) == 40 for t in position_stats.values())
    early = position_stats["early"]["first_answer_in_completion"].median()
    late = position_stats["late"]["first_answer_in_completion"].median()
    assert early < 0.5 < late


def test_lsp_cut_matches_what_truncation_keeps(position_stats, tokenizer):
    # The cut and first_answer_kept must agree with what truncate() keeps, at lsp values on
    # both sides of the first answer: the kept completion tokens, and whether the decoded kept
    # text still holds a \boxed{} after <think>.
    crossed = set()
    for layout, table in position_stats.items():
        examples = make_splits(replace(RunConfig().corpus, layout=layout))["train"][:40]
        encoded = {ex.id: encode([ex], tokenizer)[0] for ex in examples}
        for lsp in (0.3, 0.4, 0.45, 0.5, 0.6, 0.8, 0.95):
            cut = figures.lsp_cut_in_completion(table, lsp)
            kept_answer = figures.first_answer_kept(table, lsp)
            for ex_id, enc in encoded.items():
                ids, secs = truncate(enc.ids, enc.sections, lsp)
                row = table.loc[ex_id]
                assert cut[ex_id] * row["tokens_completion"] == pytest.approx(len(ids) - row["tokens_P"])
                text = tokenizer.decode(ids)
                completion = text[text.index("<think>"):] if "<think>" in text else ""
                assert bool(BOXED.search(completion)) == bool(kept_answer[ex_id]), (layout, lsp, ex_id)
                crossed.add(bool(kept_answer[ex_id]))
        assert (figures.lsp_cut_in_completion(table, 0.5) < 0.5).all()
    assert crossed == {True, False}


def test_first_answer_positions_figure(position_stats, tmp_path):
    fig = figures.first_answer_positions(position_stats)
    ax = fig.axes[0]
    for layout, table in position_stats.items():
        assert [p for p in ax.patches if p.get_gid() == f"hist-{layout}"]
        median = next(line for line in ax.get_lines() if line.get_gid() == f"median-{layout}")
        assert median.get_xdata()[0] == pytest.approx(table["first_answer_in_completion"].median())
        cut = next(line for line in ax.get_lines() if line.get_gid() == f"cut-{layout}")
        assert cut.get_xdata()[0] == pytest.approx(figures.lsp_cut_in_completion(table, 0.5).median())
    assert "fraction of the completion" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert_saved(figures.save(fig, "first_answer_position", tmp_path), tmp_path, "first_answer_position")


# --- 6. one training sequence ---------------------------------------------------------------------


def expected_statuses(cfg: RunConfig, tokenizer, index: int) -> tuple[int, int, int]:
    enc = encode([make_splits(cfg.corpus)["train"][index]], tokenizer)[0]
    ids, secs = truncate(enc.ids, enc.sections, cfg.lsp, cfg.window, cfg.cut_after_think)
    mask = target_mask(secs, cfg.condition)
    return sum(mask), len(ids) - sum(mask), len(enc.ids) - len(ids)


def count(fig, gid: str) -> int:
    return sum(1 for p in fig.axes[0].patches if p.get_gid() == gid)


@pytest.mark.parametrize("changes", [
    {"lsp": 0.5, "condition": "CoT"},
    {"lsp": 0.3, "window": "right", "condition": "P+A"},
    {"lsp": 0.6, "window": "middle", "cut_after_think": True},
    {},
])
def test_example_sequence_marks_exactly_the_supervised_tokens(tokenizer, changes):
    cfg = replace(RunConfig(), **changes)
    fig = figures.example_sequence(cfg, tokenizer, index=2)
    supervised, unsupervised, dropped = expected_statuses(cfg, tokenizer, 2)
    assert (count(fig, "supervised"), count(fig, "unsupervised"), count(fig, "dropped")) == (
        supervised, unsupervised, dropped)
    texts = [t for t in fig.axes[0].texts if t.get_gid() == "token-supervised"]
    assert len(texts) == supervised
    title = fig._suptitle.get_text()
    assert f"condition {cfg.condition}" in title and f"window {cfg.window}" in title
    assert f"lsp {figures._fmt_lsp(cfg.lsp)}" in title
    assert f"{supervised + unsupervised} of {supervised + unsupervised + dropped} tokens kept" in title
    assert f"{supervised} supervised" in title
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("P:") for t in legend) and any("supervised" in t for t in legend)


def test_example_sequence_replays_the_random_mask(tokenizer, tmp_path):
    cfg = replace(RunConfig(), random_mask=0.5, lsp=0.8)
    index = 3
    items, _ = prepare(encode(make_splits(cfg.corpus)["train"][: index + 1], tokenizer), cfg)
    want = sum(label != -100 for label in items[-1].labels)
    fig = figures.example_sequence(cfg, tokenizer, index=index)
    assert count(fig, "supervised") == want
    assert 0 < want < expected_statuses(cfg, tokenizer, index)[0]
    assert_saved(figures.save(fig, "example_sequence", tmp_path), tmp_path, "example_sequence")


def test_token_text_shows_whitespace():
    assert figures._token_text(" mod") == "·mod"
    assert figures._token_text("\n") == "⏎"
    assert figures._token_text("") == "∅"


def test_write_all_with_corpus_figures(df, tokenizer, tmp_path):
    paths = figures.write_all(df, tmp_path, cfg=RunConfig(), tokenizer=tokenizer, n_corpus=20)
    assert {p.name for p in paths} >= {"first_answer_position.png", "example_sequence.pdf"}
    assert len(paths) == 2 * len(figures.NAMES)
