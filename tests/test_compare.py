"""`study compare COMMITTED REPRODUCED` on small hand-built record folders (the real record and
lm-eval schemas, tests/fixture_records.py): identical, within the seed CI, disagreeing, missing."""

import json
from dataclasses import replace

import pytest

from fixture_records import leading, write_run
from study import records
from study.cli import main
from study.compare import DISAGREES, IDENTICAL, MISSING, NEW, NO_CI, WITHIN, column, compare_folders
from study.config import RunConfig

N = 40  # test problems per run: accuracies are multiples of 1/40
SEEDS = (42, 43, 44)
REFERENCE = (0.9, 0.875, 0.925)  # P+CoT+A at lsp 1.0, per seed
HALF = (0.3, 0.25, 0.35)  # lsp 0.5


def _write(folder, half=HALF, seeds=SEEDS, reference=REFERENCE, threads=0, extra=()):
    for seed, acc in zip(seeds, reference):
        write_run(folder, RunConfig(seed=seed, threads=threads), leading(N, acc))
    for seed, acc in zip(seeds, half):
        write_run(folder, RunConfig(lsp=0.5, seed=seed, threads=threads), leading(N, acc), kept=0.5)
    for cfg, acc in extra:
        write_run(folder, cfg, leading(N, acc))
    return folder


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("committed"))


def _verdicts(report):
    return column(report.table, "verdict").to_dict()


def test_identical_records_are_identical_and_the_command_exits_0(committed, tmp_path, capsys):
    reproduced = _write(tmp_path / "reproduced" / "runs")
    report = compare_folders(committed, tmp_path / "reproduced")  # a reproduction's top folder: its runs/
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": IDENTICAL}
    assert report.ok and report.reproduced == str(reproduced)
    assert report.reference["lsp"] == 1.0 and report.reference["condition"] == "P+CoT+A"  # inferred
    # cost ratios against the reference, each side its own
    assert column(report.table, "tokens ratio (committed)")["lsp=0.5"] == pytest.approx(0.5, abs=1e-3)
    assert column(report.table, "tokens ratio (reproduced)")["reference"] == 1.0
    assert main(["compare", str(committed), str(reproduced)]) == 0
    out = capsys.readouterr().out
    assert "2 variants: 2 identical -> reproduced" in out and "lsp=0.5" in out


def test_timings_env_and_run_ids_do_not_break_identity(committed, tmp_path):
    """Other run ids (another thread count, say) pair by variant and seed; timings and env differ."""
    reproduced = _write(tmp_path / "reproduced", threads=1)
    for path in list(reproduced.glob("*.json")):
        if records.is_record_name(path.name):
            rec = json.loads(path.read_text())
            rec["compute"]["train_seconds"] *= 1.7
            rec["env"]["time"] = "2030-01-01T00:00:00Z"
            rid = rec["run_id"]
            rec["run_id"] = "f" + rid[1:]
            path.unlink()
            (reproduced / f"{rec['run_id']}.json").write_text(json.dumps(rec))
            (reproduced / f"{rid}.lm_eval.json").rename(reproduced / f"{rec['run_id']}.lm_eval.json")
    ids_c = set(records.load(committed)["run_id"])
    assert not ids_c & set(records.load(reproduced)["run_id"])
    report = compare_folders(committed, reproduced)
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": IDENTICAL}
    assert column(report.table, "train time ratio (reproduced)")["lsp=0.5"] == pytest.approx(
        column(report.table, "train time ratio (committed)")["lsp=0.5"])


def test_a_small_difference_is_within_the_seed_ci(committed, tmp_path, capsys):
    reproduced = _write(tmp_path / "reproduced", half=(0.325, 0.25, 0.35))  # one problem more, one seed
    report = compare_folders(committed, reproduced)
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": WITHIN}
    row = report.table.set_index("variant").loc["lsp=0.5"]
    assert row["difference"] == pytest.approx(0.025 / 3)
    assert row["difference CI low"] <= 0 <= row["difference CI high"]
    assert main(["compare", str(committed), str(reproduced)]) == 0
    assert "1 identical, 1 within CI -> reproduced" in capsys.readouterr().out


def test_a_disagreement_beyond_the_ci_exits_1_and_names_the_variant(committed, tmp_path, capsys):
    reproduced = _write(tmp_path / "reproduced", half=(0.8, 0.75, 0.85))
    report = compare_folders(committed, reproduced)
    assert _verdicts(report)["lsp=0.5"] == DISAGREES and not report.ok
    row = report.table.set_index("variant").loc["lsp=0.5"]
    assert row["difference"] == pytest.approx(0.5) and row["difference CI low"] > 0
    assert main(["compare", str(committed), str(reproduced)]) == 1
    out = capsys.readouterr().out
    assert "disagrees beyond the CI: lsp=0.5 (reproduced - committed +0.500" in out and "NOT reproduced" in out


def test_missing_variants_and_seeds_exit_1_and_are_named(committed, tmp_path, capsys):
    partial = tmp_path / "partial"
    _write(partial, half=HALF[:2], seeds=SEEDS)  # lsp 0.5 seed 44 never ran
    report = compare_folders(committed, partial)
    assert _verdicts(report)["lsp=0.5"] == MISSING
    assert column(report.table, "missing seeds")["lsp=0.5"] == "44"
    assert main(["compare", str(committed), str(partial)]) == 1
    assert "missing in the reproduction: lsp=0.5 (seeds 44)" in capsys.readouterr().out

    only_reference = tmp_path / "only_reference"
    _write(only_reference, half=())
    report = compare_folders(committed, only_reference)
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": MISSING}
    assert column(report.table, "missing seeds")["lsp=0.5"] == "42, 43, 44"


def test_new_variants_are_listed_and_one_seed_gives_no_ci(committed, tmp_path):
    reproduced = _write(tmp_path / "reproduced", extra=[(RunConfig(condition="CoT", seed=42), 0.5)])
    report = compare_folders(committed, reproduced)
    assert _verdicts(report)["condition=CoT"] == NEW and report.ok

    one_c, one_r = tmp_path / "one_c", tmp_path / "one_r"
    _write(one_c, seeds=SEEDS[:1], reference=REFERENCE[:1], half=HALF[:1])
    _write(one_r, seeds=SEEDS[:1], reference=REFERENCE[:1], half=(0.5,))
    report = compare_folders(one_c, one_r)
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": NO_CI} and report.ok


def test_grid_summaries_define_the_committed_study(tmp_path):
    """Records beside a study that no grid summary names are not expected of a reproduction."""
    committed = _write(tmp_path / "committed", extra=[(RunConfig(batch_size=16, seed=1), 0.5)])
    study = [r for r in records.load(committed).to_dict("records") if r["config.batch_size"] != 16]
    (committed / "study.grid.json").write_text(json.dumps(
        {"grid": "study", "runs": [{"run_id": r["run_id"], "status": "ran"} for r in study]}))
    reproduced = _write(tmp_path / "reproduced")
    report = compare_folders(committed, reproduced)
    assert report.ok and len(report.left_out) == 1 and set(_verdicts(report)) == {"reference", "lsp=0.5"}
    everything = compare_folders(committed, reproduced, every=True)
    assert _verdicts(everything)["batch_size=16"] == MISSING


def test_an_explicit_reference_names_the_variants(committed, tmp_path, capsys):
    reproduced = _write(tmp_path / "reproduced")
    report = compare_folders(committed, reproduced, reference=replace(RunConfig(), lsp=0.5))
    assert set(_verdicts(report)) == {"reference", "lsp=1.0"}
    assert main(["compare", str(committed), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_keys_the_committed_records_lack_count_as_their_defaults(tmp_path):
    """Records written before a key existed lack it; a reproduced run that sets it is a new
    variant, not a second copy of the variant without it."""
    old = _write(tmp_path / "committed")
    for path in old.glob("*.json"):
        if records.is_record_name(path.name):
            rec = json.loads(path.read_text())
            del rec["config"]["keep_answer"]
            path.write_text(json.dumps(rec))
    reproduced = _write(tmp_path / "reproduced", extra=[(RunConfig(lsp=0.5, keep_answer=True, seed=s), 0.8)
                                                        for s in SEEDS])
    report = compare_folders(old, reproduced)
    assert _verdicts(report) == {"reference": IDENTICAL, "lsp=0.5": IDENTICAL, "keep_answer=True, lsp=0.5": NEW}
    assert report.ok


def test_runs_that_keep_their_id_but_not_their_numbers_are_reported(committed, tmp_path):
    """The regeneration of 2026-12-02: every reproduced run had its committed run id and another
    loss curve from step 2 on (the training code's arithmetic had changed). The report says so,
    with the commits of both sides, even where the accuracies agree."""
    reproduced = _write(tmp_path / "reproduced")
    changed = []  # the lsp of each changed run
    for path in sorted(reproduced.glob("*.json")):
        if records.is_record_name(path.name) and len(changed) < 2:
            rec = json.loads(path.read_text())
            rec["curve"][-1]["loss"] = rec["curve"][-1]["loss"] + 1e-7  # the last bits, as seen
            rec["env"]["git_commit"] = "0aa825851ffe5becfb3c7fc4da8b8be00e1f433f"
            path.write_text(json.dumps(rec))
            changed.append(rec["config"]["lsp"])
    report = compare_folders(committed, reproduced)
    assert report.same_id_pairs == 6 and len(report.same_id_differ) == 2
    rid, first, _, r_git = report.same_id_differ[0]
    assert first == "curve differs" and r_git.startswith("0aa8258")
    verdicts = _verdicts(report)  # a variant holding a changed run is never identical
    assert all(verdicts["reference" if lsp == 1.0 else "lsp=0.5"] != IDENTICAL for lsp in changed)
    assert "2 of 6 runs with a committed run id differ" in report.text()
    # identical copies say nothing of the kind
    assert not compare_folders(committed, _write(tmp_path / "again")).same_id_differ
