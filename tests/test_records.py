"""Records on disk: the overwrite rule of ``write`` (refuse, or set the old one aside, never
delete), the output-folder check, and ``load``: top level only, one row per run however many
files hold it, every bad file named, and no silent empty frame."""

from __future__ import annotations

import copy
import json
import logging
import os

import pytest

from study import records
from study.records import RecordExists, check_out_dir, load, write


def record(run_id: str = "abc123", seed: int = 42, accuracy: float = 0.5, seconds: float = 10.0) -> dict:
    return {
        "run_id": run_id,
        "config": {"seed": seed, "lsp": 1.0, "device": "auto", "cache_dir": "cache"},
        "env": {"torch": "2", "device": "cpu"},
        "teacher": {"id": "teacher-x", "accuracy": 1.0, "train_seconds": 500.0},
        "student": {"init": "base"},
        "data": {"examples": 64},
        "compute": {"train_seconds": seconds, "flops_profiler": 1e9},
        "quality": {"study_synthetic": {"accuracy": accuracy}},
        "curve": [{"step": 1, "loss": 2.0}],
    }


def listing(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- write ----------------------------------------------------------------------------------------


def test_write_refuses_an_existing_record(tmp_path):
    path = write(record(accuracy=0.1), tmp_path)
    old = path.read_bytes()
    with pytest.raises(RecordExists) as err:
        write(record(accuracy=0.9), tmp_path)
    assert isinstance(err.value, FileExistsError) and err.value.path == path
    msg = str(err.value)
    assert str(path) in msg and "--overwrite" in msg and "another --out" in msg
    assert path.read_bytes() == old  # the old record is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_write_refusal_is_atomic(tmp_path, monkeypatch):
    """The refusal is decided by the link itself: a record that appears after any check made
    before it (another writer) is still never replaced."""
    path = records.record_path(tmp_path, "abc123")
    real_link = os.link

    def racing_link(src, dst):
        path.write_text('{"run_id": "abc123", "theirs": true}')  # another writer got there first
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(RecordExists):
        write(record(), tmp_path)
    assert json.loads(path.read_text())["theirs"] is True
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_overwrite_sets_the_old_record_and_its_raw_output_aside(tmp_path):
    path = write(record(accuracy=0.1), tmp_path)
    raw = tmp_path / "abc123.lm_eval.json"
    raw.write_text('{"old": true}')
    os.utime(raw, ns=(path.stat().st_mtime_ns - 10**9,) * 2)  # written before its record, as run() does
    old = path.read_bytes()
    write(record(accuracy=0.9), tmp_path, overwrite=True)
    assert json.loads(path.read_text())["quality"]["study_synthetic"]["accuracy"] == 0.9
    (folder,) = (tmp_path / records.REPLACED).iterdir()
    assert (folder / path.name).read_bytes() == old
    assert json.loads((folder / raw.name).read_text()) == {"old": True}
    assert not raw.exists()


def test_overwrite_keeps_the_new_runs_companions(tmp_path):
    """A companion newer than the old record was written by the run replacing it: it stays."""
    path = write(record(accuracy=0.1), tmp_path)
    raw = tmp_path / "abc123.lm_eval.json"
    raw.write_text('{"new": true}')
    os.utime(raw, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    write(record(accuracy=0.9), tmp_path, overwrite=True)
    assert json.loads(raw.read_text()) == {"new": True}
    (folder,) = (tmp_path / records.REPLACED).iterdir()
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_set_aside_moves_record_and_companions_and_deletes_nothing(tmp_path):
    path = write(record(), tmp_path)
    (tmp_path / "abc123.lm_eval.json").write_text("{}")
    (tmp_path / "abc123.student").mkdir()
    (tmp_path / "abc123.student" / "model.safetensors").write_text("w")
    before = listing(tmp_path)
    moved = records.set_aside(tmp_path, "abc123")
    assert sorted(p.name for p in moved) == ["abc123.json", "abc123.lm_eval.json", "abc123.student"]
    assert not path.exists()
    after = listing(tmp_path)
    assert sorted(before.values()) == sorted(after.values())  # every byte is still there
    assert records.set_aside(tmp_path, "abc123") == []  # nothing left to move
    write(record(), tmp_path)  # the path is free again
    assert len(list((tmp_path / records.REPLACED).iterdir())) == 1


def test_write_overwrite_without_an_old_record_writes(tmp_path):
    write(record(), tmp_path, overwrite=True)
    assert records.read(records.record_path(tmp_path, "abc123"))["run_id"] == "abc123"
    assert not (tmp_path / records.REPLACED).exists()


# --- check_out_dir ------------------------------------------------------------------------------


def test_check_out_dir_creates_the_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b"
    assert check_out_dir(out) == out and out.is_dir()
    assert list(out.iterdir()) == []


def test_check_out_dir_rejects_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(ValueError, match=r"is a file, not a folder"):
        check_out_dir(tmp_path / "out")


def test_check_out_dir_rejects_a_folder_below_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"cannot be created"):
        check_out_dir(tmp_path / "f" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_out_dir_rejects_a_read_only_folder(tmp_path):
    (tmp_path / "out").mkdir(mode=0o500)
    with pytest.raises(ValueError, match=r"not writable"):
        check_out_dir(tmp_path / "out")


def test_check_out_dir_refuses_an_existing_record_unless_overwrite(tmp_path):
    path = write(record(), tmp_path)
    with pytest.raises(RecordExists, match="--overwrite"):
        check_out_dir(tmp_path, "abc123")
    assert check_out_dir(tmp_path, "abc123", overwrite=True) == tmp_path
    assert check_out_dir(tmp_path, "other") == tmp_path
    assert path.exists()


# --- load -------------------------------------------------------------------------------------------


def three_seeds(folder) -> None:
    for i, seed in enumerate((42, 43, 44)):
        write(record(f"run{i}", seed=seed, accuracy=0.5 + 0.1 * i), folder)


def test_a_copied_record_is_one_run(tmp_path, caplog):
    """The reviewer's case: a copy of a record became a fourth seed and narrowed a CI."""
    three_seeds(tmp_path)
    copy_path = tmp_path / "run1 (copy).json"
    copy_path.write_bytes((tmp_path / "run1.json").read_bytes())
    with caplog.at_level(logging.WARNING, logger="study.records"):
        df = load(tmp_path)
    assert len(df) == 3 and sorted(df["config.seed"]) == [42, 43, 44]
    assert df.set_index("run_id").loc["run1", "path"] == str(tmp_path / "run1.json")  # the canonical name is kept
    assert df.attrs["duplicates"] == {"run1": [str(tmp_path / "run1.json"), str(copy_path)]}
    assert str(copy_path) in caplog.text and str(tmp_path / "run1.json") in caplog.text


def test_duplicates_may_differ_in_env_and_timings_only(tmp_path):
    write(record(seconds=10.0), tmp_path)
    other = record(seconds=99.0)
    other["env"]["torch"] = "3"
    other["teacher"]["train_seconds"] = 1.0
    other["config"]["cache_dir"] = "/elsewhere"  # infrastructure, not part of the run
    (tmp_path / "copy.json").write_text(json.dumps(other))
    assert len(load(tmp_path)) == 1


def test_disagreeing_duplicates_raise_naming_both(tmp_path):
    write(record(accuracy=0.5), tmp_path)
    other = record(accuracy=0.7)
    (tmp_path / "copy.json").write_text(json.dumps(other))
    with pytest.raises(ValueError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "abc123.json") in msg and str(tmp_path / "copy.json") in msg
    assert "quality.study_synthetic.accuracy" in msg


def test_duplicates_across_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    three_seeds(a)
    write(record("run0", seed=42, accuracy=0.5), b)  # the same run, in a second folder
    write(record("run9", seed=45), b)
    df = load([a, b])
    assert sorted(df["run_id"]) == ["run0", "run1", "run2", "run9"]
    assert df.attrs["duplicates"] == {"run0": [str(a / "run0.json"), str(b / "run0.json")]}


def test_load_reads_the_top_level_only(tmp_path):
    three_seeds(tmp_path)
    (tmp_path / "backup").mkdir()
    write(record("run7", seed=47), tmp_path / "backup")
    assert sorted(load(tmp_path)["run_id"]) == ["run0", "run1", "run2"]


def test_every_bad_file_is_named_in_one_error(tmp_path):
    three_seeds(tmp_path)
    (tmp_path / "broken.json").write_text('{"run_id": ')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert msg.startswith("4 record file(s) cannot be used")
    for name, why in [("broken.json", "invalid JSON"), ("binary.json", "not a text file"),
                      ("other.json", "not a run record (no run_id"), ("list.json", "not a run record")]:
        assert f"{tmp_path / name}: {why}" in msg, (name, msg)


def test_files_that_are_not_records_are_skipped_by_name(tmp_path):
    three_seeds(tmp_path)
    for name in ("truncation.grid.json", "run0.error.json", "run0.lm_eval.json", ".run0.json.123.tmp",
                 ".hidden.json", "run0.json.invalid-1"):
        (tmp_path / name).write_text("not JSON at all")  # skipped unread
    (tmp_path / "run0.student").mkdir()
    (tmp_path / ".replaced").mkdir()
    assert len(load(tmp_path)) == 3


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        load([tmp_path, tmp_path / "nope"])


def test_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="no run records"):
        load(tmp_path)
    (tmp_path / "quick.grid.json").write_text("{}")
    (tmp_path / "x.error.json").write_text("{}")
    with pytest.raises(ValueError, match="no run records"):
        load(tmp_path)


def test_a_file_instead_of_a_folder_raises(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        load(tmp_path / "f")


def test_load_flattens_and_keeps_the_curve(tmp_path):
    rec = record()
    write(copy.deepcopy(rec), tmp_path)
    df = load(str(tmp_path))
    assert df.loc[0, "quality.study_synthetic.accuracy"] == 0.5
    assert df.loc[0, "curve"] == rec["curve"] and df.loc[0, "path"] == str(tmp_path / "abc123.json")
