"""Grids through submitit (study/slurm.py), on submitit's local executor: the Slurm path with
real job processes on this machine. A two-cell grid with a killed job that the resubmission
completes, a failing cell that leaves its error record, skipping, dry run and status; one cell
whose job trains it on two processes under torchrun (a multi-GPU job's path, on gloo)."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from study import records
from study.cli import main
from study.grid import load_grid, prepare, status
from study.slurm import SlurmConfig, describe_status, slurm_config, split_overrides, submit
from test_grid import tiny_grid

ROOT = Path(__file__).resolve().parents[1]
EMPTY = {"label": "empty", "set": {"condition": "A", "cut_after_think": True}}  # supervises nothing: fails


@pytest.fixture(autouse=True)
def job_env(monkeypatch):
    # The jobs (and their torchrun ranks) import this checkout's study, on one thread each.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_slurm_resources_from_the_grid_a_shared_file_and_overrides(tmp_path):
    shared = ROOT / "configs" / "slurm" / "example.yaml"
    assert SlurmConfig(**yaml.safe_load(shared.read_text()))  # the shipped file is valid
    (tmp_path / "base.yaml").write_text("{}")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "axes": {"lsp": [0.5]},
                                                     "slurm": {"partition": "a100", "gpus_per_node": 4}}))
    grid = load_grid(tmp_path / "g.yaml")
    assert slurm_config(grid).partition == "a100" and slurm_config(grid).nproc == 4
    assert slurm_config(grid, shared).partition == yaml.safe_load(shared.read_text())["partition"]
    config, slurm = split_overrides(["lsp=0.5", "slurm.partition=h100", "slurm.nodes=2"])
    assert config == ["lsp=0.5"] and slurm == ["partition=h100", "nodes=2"]
    over = slurm_config(grid, overrides=slurm)
    assert (over.partition, over.nodes, over.nproc) == ("h100", 2, 8)
    with pytest.raises(ValueError, match="unknown slurm key.*partiton"):
        slurm_config(grid, overrides=["partiton=x"])


def test_cli_slurm_errors(tmp_path, tiny_cache, capsys):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}], seeds=[1])
    out = str(tmp_path / "runs")
    assert main(["grid", str(g), "--out", out, "--set", "slurm.partition=gpu"]) == 2  # the local runner has none
    assert "apply to --executor slurm or submitit-local only" in capsys.readouterr().err
    assert main(["grid", str(g), "--out", out, "--executor", "slurm", "--set", "slurm.gpus=2", "--dry-run"]) == 2
    assert "unknown slurm key(s) gpus" in capsys.readouterr().err
    # 8 examples per batch do not split over 3 processes
    assert main(["grid", str(g), "--out", out, "--executor", "slurm", "--set", "slurm.gpus_per_node=3",
                 "--dry-run"]) == 2
    assert "a job of 3 processes" in capsys.readouterr().err
    if shutil.which("sbatch") is None:
        assert main(["grid", str(g), "--out", out, "--executor", "slurm"]) == 2
        assert "needs Slurm (no sbatch on this machine)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc: no extra dependency)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def kill_job(job, timeout: float = 60.0) -> None:
    """Kill a local job as Slurm kills a preempted or OOM job: its task with it. submitit's
    job id is the pid of a controller that runs the task as a child; killing the controller
    alone orphans the task, which then finishes the cell (a race the test must not have)."""
    pid, deadline = int(job.job_id), time.monotonic() + timeout
    while not (tasks := children(pid)):
        assert time.monotonic() < deadline, "the job's task never started"
        time.sleep(0.05)
    for task in tasks:
        os.kill(task, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_killed_job_is_completed_by_resubmission(tiny_cache, tmp_path, capsys):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}, EMPTY], seeds=[1])
    grid = load_grid(g)
    prepare(grid.cells[0].config)  # the shared teacher and base, as the first job would build them
    out = tmp_path / "runs"
    (cell, job), (bad, bad_job) = submit(grid, out, "submitit-local", SlurmConfig())
    kill_job(job)  # the job dies (preempted, OOM-killed, ...) before its cell is trained
    job.wait()
    assert job.state == "INTERRUPTED"
    assert bad_job.result()["status"] == "failed"
    err = json.loads((out / f"{bad.run_id}.error.json").read_text())
    assert "no supervised token" in err["error"]
    assert [status(c, out) for c in (cell, bad)] == ["pending", "failed"]
    lines = describe_status(grid, out, grid.cells)
    assert f"job {job.job_id} ENDED" in lines[0] and f"job {bad_job.job_id} FINISHED" in lines[1]

    # Resubmission submits what is missing: the killed cell completes, the failing one fails again.
    assert main(["grid", str(g), "--out", str(out), "--executor", "submitit-local"]) == 1
    assert "submitted 2 of 2 cells" in capsys.readouterr().out
    assert status(cell, out) == "done" and records.read(out / f"{cell.run_id}.json")["config"]["lsp"] == 0.5
    assert len(json.loads((out / "tiny.jobs.json").read_text())) == 4

    # A cell with a record is not submitted again; --dry-run shows it, --status reads the jobs.
    assert main(["grid", str(g), "--out", str(out), "--executor", "slurm", "--set", "slurm.gpus_per_node=1",
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "would submit 1 of 2 cells" in text and "1 process(es) per cell" in text
    assert main(["grid", str(g), "--out", str(out), "--executor", "slurm", "--dry-run",
                 "--set", "slurm.gpus_per_node=2"]) == 0  # a 2-GPU job: another run (nproc 2) per cell
    assert "would submit 2 of 2 cells" in capsys.readouterr().out
    assert main(["grid", str(g), "--out", str(out), "--status"]) == 0
    status_lines = capsys.readouterr().out.strip().splitlines()
    assert "done" in status_lines[0] and "FINISHED" in status_lines[0] and "failed" in status_lines[1]


@pytest.mark.slow
def test_a_multi_process_job_trains_its_cell_under_torchrun(tiny_cache, tmp_path):
    g = tiny_grid(tmp_path, tiny_cache, [{"set": {"lsp": 0.5}}], seeds=[1])
    grid = load_grid(g)
    prepare(grid.cells[0].config)
    out = tmp_path / "runs"
    ((cell, job),) = submit(grid, out, "submitit-local", SlurmConfig(gpus_per_node=2))
    assert job.result()["status"] == "ran"
    rec = records.read(out / f"{cell.run_id}.json")
    assert rec["env"]["world_size"] == 2 and rec["env"]["launcher"] == "torchrun" and rec["config"]["nproc"] == 2
