"""Grids: expansion of the shipped grid files, override order, errors naming the cell, and a
runner that resumes (skips finished cells, records failures, survives kill -9)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from study import records, tables
from study.cli import main
from study.config import RunConfig
from study.grid import load_grid, prepare, run_grid, status
from tiny import tiny_config

GRIDS = Path(__file__).resolve().parents[1] / "configs" / "grids"
STUDY = ("supervision", "truncation", "halves", "controls", "light_touch")
HEADLINE_SEEDS = {42, 43, 44, 45, 46}


@pytest.mark.parametrize("name, variants, runs", [
    ("supervision", 6, 6 * 3 + 2 * 2),  # CoT and P+CoT+A: five seeds
    ("truncation", 13, 10 * 3 + 2 * 2 + 3 + 5 + 3),  # lsp 0.5 and 1.0: five; lead span + ending at 0.5: five
    ("halves", 3, 3 * 5), ("controls", 5, 5 * 3), ("light_touch", 3, 3 * 5), ("quick", 4, 4)])
def test_shipped_grids_expand(name, variants, runs):
    grid = load_grid(GRIDS / f"{name}.yaml")
    assert len(grid.cells) == runs and not grid.duplicates
    assert len({c.key for c in grid.cells}) == len(grid.cells)
    seeds_of = {}
    for c in grid.cells:
        seeds_of.setdefault(c.label, set()).add(c.seed)
    assert len(seeds_of) == variants
    if name != "quick":
        assert all(len(s) >= 3 for s in seeds_of.values())  # every study cell has at least three seeds
        # the study's cells vary from the default run, on the grid's one thread per cell
        assert grid.reference == RunConfig(threads=1)
        assert all(c.config.threads == 1 for c in grid.cells)  # run ids independent of --jobs


def test_headline_cells_have_five_seeds():
    """The cells behind the headline comparisons (lsp 0.5 and 1.0, left/middle/right, CoT and
    P+CoT+A, the lead span that keeps its ending) run seeds 42-46."""
    cells = [c for n in STUDY for c in load_grid(GRIDS / f"{n}.yaml").cells]
    default = RunConfig()

    def seeds(pred):
        return {c.seed for c in cells if pred(c.config)}

    plain = {"corpus": default.corpus, "base": default.base, "lr": default.lr, "random_mask": 0.0}

    def default_regime(c):
        return all(getattr(c, k) == v for k, v in plain.items())

    assert seeds(lambda c: default_regime(c) and c.lsp == 1.0 and c.condition == "CoT") == HEADLINE_SEEDS
    assert seeds(lambda c: default_regime(c) and c.lsp == 1.0 and c.condition == "P+CoT+A") == HEADLINE_SEEDS
    for window in ("left", "middle", "right"):
        assert seeds(lambda c: default_regime(c) and c.lsp == 0.5 and c.window == window
                     and not c.keep_answer) == HEADLINE_SEEDS
    assert seeds(lambda c: default_regime(c) and c.lsp == 0.5 and c.keep_answer) == HEADLINE_SEEDS


def test_a_cell_with_its_own_seeds_adds_nothing_under_quick():
    grid = load_grid(GRIDS / "truncation.yaml", quick=True)
    assert {c.seed for c in grid.cells} == {42} and not grid.duplicates
    assert len(grid.cells) == 10 + 3  # the lsp axis and the three lead spans that keep their ending


def test_study_grids_cover_the_paper_variables():
    cfgs = [c.config for n in STUDY for c in load_grid(GRIDS / f"{n}.yaml").cells]
    assert {c.condition for c in cfgs} == {"A", "P+A", "CoT", "CoT+A", "P+CoT", "P+CoT+A"}
    assert {round(c.lsp, 1) for c in cfgs} == {round(0.1 * i, 1) for i in range(1, 11)}
    assert {c.window for c in cfgs if c.lsp == 0.5} == {"left", "middle", "right"}
    assert any(c.cut_after_think for c in cfgs) and any(c.random_mask > 0 for c in cfgs)
    assert {(c.corpus.layout, c.lsp) for c in cfgs if c.corpus.layout == "late"} == {("late", 1.0), ("late", 0.5)}
    budget = [c for c in cfgs if c.corpus.train_examples != RunConfig().corpus.train_examples]
    assert budget and all(c.lsp == 0.5 and c.corpus.train_examples == 2 * RunConfig().corpus.train_examples
                          for c in budget)
    # Shared cells are one run: P+CoT+A at lsp 1.0 is in both the supervision and truncation grids.
    # The light-touch contrast shares no run (another base student and learning rate).
    assert len({c.key for n in STUDY for c in load_grid(GRIDS / f"{n}.yaml").cells}) == 22 + 45 - 5 + 15 - 5 + 15 + 15


def test_the_light_touch_contrast_is_one_regime_on_the_headline_seeds():
    """Every cell of the contrast differs from the reference regime in the same regime keys only
    (its base student and learning rate: what tables.ending_table groups a regime by), and it has
    lsp 1.0 and 0.5, with and without the ending, on seeds 42-46, so its retention pairs by seed."""
    from study.analysis import flat_config, variant_of

    grid = load_grid(GRIDS / "light_touch.yaml")
    ref = flat_config(grid.reference)
    variants = [variant_of({f"config.{k}": v for k, v in flat_config(c.config).items()}, ref) for c in grid.cells]
    regimes = [tables.regime_of(var) for var in variants]
    assert all(r == regimes[0] for r in regimes)
    assert set(regimes[0]) == {"lr", "base.steps", "base.other_task_traces"} and tables.is_regime(regimes[0])
    assert regimes[0]["lr"] < RunConfig().lr  # a lighter touch than the reference
    settings = {(c.config.lsp, c.config.keep_answer): set() for c in grid.cells}
    for c in grid.cells:
        settings[(c.config.lsp, c.config.keep_answer)].add(c.seed)
    assert settings == {(1.0, False): HEADLINE_SEEDS, (0.5, False): HEADLINE_SEEDS, (0.5, True): HEADLINE_SEEDS}


def test_random_mask_control_matches_lsp_half(tokenizer):
    """The controls grid's random_mask drops as many supervised tokens as lsp 0.5 does."""
    from study.data.pipeline import encode, prepare
    from study.data.synthetic import make_splits

    cfg = next(c.config for c in load_grid(GRIDS / "controls.yaml").cells if c.config.random_mask > 0)
    encoded = encode(make_splits(cfg.corpus)["train"], tokenizer)
    supervised = {}
    for name, c in {"full": RunConfig(), "half": RunConfig(lsp=0.5), "masked": cfg}.items():
        items, _ = prepare(encoded, c)
        supervised[name] = sum(sum(it.supervised.values()) for it in items)
    removed_by_lsp = 1 - supervised["half"] / supervised["full"]
    assert cfg.random_mask == pytest.approx(removed_by_lsp, abs=0.002)
    assert supervised["masked"] / supervised["full"] == pytest.approx(1 - cfg.random_mask, abs=0.005)


def test_quick_applies_small_budget_and_one_seed():
    grid = load_grid(GRIDS / "truncation.yaml", quick=True)
    assert {c.seed for c in grid.cells} == {42}
    assert {c.config.corpus.train_examples for c in grid.cells} == {800}
    assert {c.config.eval_examples for c in grid.cells} == {50}
    # The controls grid's own corpus size wins over the quick budget (it is what the cell varies).
    ctrl = load_grid(GRIDS / "controls.yaml", quick=True)
    assert 6400 in {c.config.corpus.train_examples for c in ctrl.cells}


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_override_order_and_duplicates(tmp_path):
    _write(tmp_path / "base.yaml", {"lsp": 1.0, "alpha": 0.5})
    g = _write(tmp_path / "g.yaml", {"base": "base.yaml", "seeds": [1, 2], "set": {"alpha": 0.3},
                                     "axes": {"lsp": [0.5, 1.0]},
                                     "cells": [{"label": "late", "set": {"corpus.layout": "late"}}]})
    grid = load_grid(g)
    assert [(c.label, c.seed) for c in grid.cells] == [
        ("lsp=0.5", 1), ("lsp=0.5", 2), ("lsp=1.0", 1), ("lsp=1.0", 2), ("late", 1), ("late", 2)]
    assert {c.config.alpha for c in grid.cells} == {0.3}  # grid set applies to every cell
    assert grid.cells[-1].config.corpus.layout == "late"  # dotted keys in a cell
    assert grid.reference.alpha == 0.5  # the grid's own set is part of what it varies
    # --set comes last: lsp=0.25 makes the lsp cells one run per seed, kept once.
    over = load_grid(g, ["lsp=0.25"])
    assert {c.config.lsp for c in over.cells} == {0.25}
    assert len(over.cells) == 4 and len(over.duplicates) == 2


@pytest.mark.parametrize("spec, message", [
    ({"axes": {"lsp": [0.5]}, "sets": {}}, r"unknown grid key\(s\) sets; valid: name"),
    ({"axes": {"lsp": [0.5, 1.5]}}, r"cell 'lsp=1.5', seed 42: lsp must be in \(0, 1\]"),
    ({"axes": {"lsp": 0.5}}, r"axis lsp must be a non-empty list"),
    ({"cells": [{"lsp": 0.5}]}, r"cell 1 must be a mapping with keys label, set"),
    ({"cells": [{"set": {"colour": 1}}]}, r"cell 'colour=1'.*unknown config key\(s\) colour"),
    ({"axes": {"lsp": [0.5]}, "seeds": 42}, r"seeds must be a non-empty list of integers"),
    ({}, r"the grid has no cells"),
    ({"axes": {"lsp": [0.5]}, "seeds": [-1]}, r"seeds must be a non-empty list of integers in \[0, 2\*\*32 - 1\]"),
    ({"axes": {"lsp": [0.5]}, "name": "a/b"}, r"name 'a/b' names the summary file"),
    ({"axes": {"lsp": [0.5]}, "base": ["x"]}, r"base .* must be strings"),
])
def test_bad_grid_files_name_the_problem(tmp_path, spec, message):
    _write(tmp_path / "base.yaml", {})
    g = _write(tmp_path / "g.yaml", {"base": "base.yaml", **spec})
    with pytest.raises(ValueError, match=message):
        load_grid(g)


@pytest.mark.parametrize("base_text", ["- lsp\n- 0.5\n", "just a string\n"])
def test_base_config_that_is_not_a_mapping_names_the_file(tmp_path, base_text):
    (tmp_path / "base.yaml").write_text(base_text)
    g = _write(tmp_path / "g.yaml", {"base": "base.yaml", "axes": {"lsp": [0.5]}})
    with pytest.raises(ValueError, match=r"base\.yaml \(the base config of grid .*g\.yaml\) must be a run config"):
        load_grid(g)


def test_bad_base_config_is_blamed_on_the_base_not_the_set(tmp_path):
    _write(tmp_path / "base.yaml", {"epochs": 0})
    g = _write(tmp_path / "g.yaml", {"base": "base.yaml", "axes": {"lsp": [0.5]}})
    with pytest.raises(ValueError, match=r"base\.yaml \(the base config of grid .*\): epochs must be an integer >= 1"):
        load_grid(g, ["alpha=0.3"])


def test_a_string_of_overrides_is_rejected():
    with pytest.raises(ValueError, match=r"overrides must be a list of 'key=value' strings"):
        load_grid(GRIDS / "quick.yaml", "lsp=0.5")


def test_cli_grid_errors(tmp_path, capsys):
    assert main(["grid", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "grid file" in capsys.readouterr().err
    assert main(["grid", str(GRIDS / "quick.yaml"), "--out", str(tmp_path), "--set", "lsp=2"]) == 2
    assert "--set lsp=2: lsp must be in (0, 1]" in capsys.readouterr().err
    assert main(["grid", str(GRIDS.parent / "default.yaml"), "--out", str(tmp_path)]) == 2
    assert "looks like a run config: run it with `study run --config" in capsys.readouterr().err
    assert main(["grid", str(GRIDS / "quick.yaml"), "--out", str(tmp_path), "--jobs", "0"]) == 2


# --- running on tiny real models ----------------------------------------------------------------


def tiny_grid(tmp_path: Path, cache, cells: list, seeds=(1, 2)) -> Path:
    # One thread: the run ids the test computes are those of the `study grid` processes it
    # starts (a thread count is part of a run id).
    base = asdict(tiny_config(cache, threads=1))
    base.pop("device")
    _write(tmp_path / "tiny.yaml", base)
    return _write(tmp_path / "grid.yaml", {"name": "tiny", "base": "tiny.yaml", "seeds": list(seeds),
                                           "cells": cells})


def test_grid_runs_skips_and_records_failures(tiny_cache, tmp_path):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}, {"set": {}},
                                         # supervises nothing: fails with a clear error
                                         {"label": "empty", "set": {"condition": "A", "cut_after_think": True}}],
                  seeds=[1])
    grid = load_grid(g)
    out = tmp_path / "runs"
    first = run_grid(grid, out, progress=False)
    assert (first["ran"], first["skipped"], first["failed"]) == (2, 0, 1)
    assert first["failures"][0]["label"] == "empty" and "no supervised token" in first["failures"][0]["error"]
    err = json.loads((out / f"{grid.cells[2].run_id}.error.json").read_text())
    assert "Traceback" in err["traceback"] and err["config"]["condition"] == "A"
    assert [status(c, out) for c in grid.cells] == ["done", "done", "failed"]
    mtimes = {c.run_id: (out / f"{c.run_id}.json").stat().st_mtime_ns for c in grid.cells[:2]}

    # Resume: finished cells are skipped untouched; the failed one is retried (and fails again).
    second = run_grid(grid, out, progress=False)
    assert (second["ran"], second["skipped"], second["failed"]) == (0, 2, 1)
    assert mtimes == {rid: (out / f"{rid}.json").stat().st_mtime_ns for rid in mtimes}
    summary = json.loads((out / "tiny.grid.json").read_text())
    assert summary["skipped"] == 2 and len(summary["runs"]) == 3
    assert len(records.load(out)) == 2  # error and summary files are not records


def test_leftovers_of_a_killed_writer_are_cleaned(tiny_cache, tmp_path):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}], seeds=[1])
    cell = load_grid(g).cells[0]
    prepare(cell.config)  # its run id names the teacher's and base's weights
    out = tmp_path / "runs"
    out.mkdir()
    (out / f".{cell.run_id}.json.999.tmp").write_text('{"run_id": "trunc')  # half a record
    (out / f"{cell.run_id}.json").write_text('{"run_id": ')  # not from us: moved aside, not deleted
    assert status(cell, out) == "invalid"
    assert (out / f"{cell.run_id}.json").read_text() == '{"run_id": '  # status only reads
    run_grid(load_grid(g), out, progress=False)
    assert status(cell, out) == "done"
    (aside,) = out.glob(f"{cell.run_id}.json.invalid-*")  # the runner moved it aside
    assert aside.read_text() == '{"run_id": '
    assert not list(out.rglob("*.tmp"))


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir(), None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def test_dry_run_touches_nothing(tiny_cache, tmp_path, capsys):
    """A dry run over a folder with an invalid record, an error record and a temporary leaves
    the folder byte-identical (listing and contents) and reports the invalid cell."""
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}, {"set": {"lsp": 0.7}}], seeds=[1])
    grid = load_grid(g)
    prepare(grid.cells[0].config)  # its run ids name the teacher's and base's weights
    out = tmp_path / "runs"
    out.mkdir()
    (out / f"{grid.cells[0].run_id}.json").write_text('{"run_id": ')
    (out / f"{grid.cells[1].run_id}.error.json").write_text("{}")
    (out / f".{grid.cells[1].run_id}.json.999.tmp").write_text("half")
    before = _snapshot(out)
    assert main(["grid", str(g), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "invalid" in lines[0] and "failed" in lines[1]
    assert _snapshot(out) == before
    # Nor does a dry run create a missing output folder.
    assert main(["grid", str(g), "--out", str(tmp_path / "none"), "--dry-run"]) == 0
    assert not (tmp_path / "none").exists()


def test_cli_grid_dry_run_lists_status(tiny_cache, tmp_path, capsys):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}], seeds=[1, 2])
    assert main(["grid", str(g), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("pending" in line and "lsp=0.5" in line for line in lines)


def test_grid_killed_at_random_moments_resumes_to_one_record_per_cell(tiny_cache, tmp_path):
    """A real `study grid` process killed with SIGKILL at random moments (first as soon as a
    record's temporary file appears, then at a random delay after its next record, which
    lands anywhere in the following cell: loading, training, evaluation, writing), restarted
    each time, ends with exactly one parseable record per cell and no temporary file."""
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": x}} for x in (0.5, 0.7, 0.9, 1.0)], seeds=[1, 2])
    grid = load_grid(g)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "study.cli", "grid", str(g), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    kills = 0

    def done() -> int:
        return sum(status(c, out) == "done" for c in grid.cells)

    def wait_for(proc, condition, timeout=300) -> None:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline and not condition():
            time.sleep(0.0005)

    for attempt in range(8):
        before = done()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt == 0:  # the moment a record's temporary file exists
            wait_for(proc, lambda: list(out.glob(".*.json.*.tmp")))
        elif attempt < 4:  # somewhere in the cell after the next finished one
            wait_for(proc, lambda: done() > before)
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            proc.wait(timeout=600)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        assert done() >= before  # nothing finished is ever lost
        if proc.returncode == 0:
            break
    assert kills >= 3 and proc.returncode == 0
    for cell in grid.cells:
        rec = records.read(out / f"{cell.run_id}.json")  # parses
        assert rec["run_id"] == cell.run_id and rec["config"]["seed"] == cell.seed
    assert len(list(out.glob("*.json"))) - len(list(out.glob("*.lm_eval.json"))) - 1 == len(grid.cells)  # + summary
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
