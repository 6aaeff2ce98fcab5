"""Grids on a Slurm cluster through submitit: the pending cells of a grid as one Slurm array.

    study grid configs/grids/truncation.yaml --out results/runs --executor slurm \
        --slurm configs/slurm/example.yaml --set slurm.partition=gpu      # submit, return
    study grid configs/grids/truncation.yaml --out results/runs --executor slurm --dry-run
    study grid configs/grids/truncation.yaml --out results/runs --status  # records and jobs
    study grid ... --executor submitit-local   # the same path on this machine (tests), waits

Resources (``SlurmConfig``) come from the grid's ``slurm:`` section (a mapping, or the path of a
shared file such as configs/slurm/example.yaml, relative to the grid), or from ``--slurm FILE``,
then ``--set slurm.KEY=VALUE``. A job with more than one GPU (``nodes x gpus_per_node``) trains
its cell on that many processes: every cell gets ``nproc`` (part of its run id) and the job runs
``torchrun ... -m study run`` (study/distributed.py); a one-GPU job runs the cell in-process.

The semantics are the local runner's (study/grid.py): a cell with a record is not submitted;
each job takes the cell's lock (a second job of the same cell finds it busy and leaves); a
failing cell writes its ``<run_id>.error.json``; a preempted or timed-out job is requeued by
Slurm (``CellJob.checkpoint``) and the cell starts again; submitting the grid again submits only
what is missing. The submitted jobs are listed in ``<out>/<grid>.jobs.json`` for ``--status``.
Shared artefacts (teacher, base student, teacher-output cache) are built by the first job that
needs them while the others wait for it (their builders hold a file lock).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import records
from .config import check_types, parse_override
from .grid import Cell, Grid, run_cell, status

log = logging.getLogger(__name__)

EXECUTORS = ("local", "submitit-local", "slurm")


@dataclass(frozen=True)
class SlurmConfig:
    """One job's resources (one job trains one cell)."""

    partition: str = ""  # "": the cluster's default partition
    account: str = ""  # "": the user's default account
    time_minutes: int = 240  # wall-clock limit of one cell (a requeued job starts the cell again)
    nodes: int = 1
    gpus_per_node: int = 1  # > 1 (or nodes > 1): the cell trains on nodes x gpus_per_node processes
    cpus_per_task: int = 8
    mem_gb: int = 64
    array_parallelism: int = 16  # cells running at once
    setup: tuple = ()  # shell lines each job runs first (module load ..., source .venv/bin/activate)

    def __post_init__(self):
        check_types(self)
        for name in ("time_minutes", "nodes", "cpus_per_task", "mem_gb", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"slurm.{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise ValueError(f"slurm.gpus_per_node must be an integer >= 0, got {self.gpus_per_node}")
        if not all(isinstance(line, str) for line in self.setup):
            raise ValueError(f"slurm.setup must be a list of shell lines, got {list(self.setup)!r}")

    @property
    def nproc(self) -> int:
        """Processes that train one cell: one per GPU of the job (one without GPUs)."""
        return self.nodes * max(1, self.gpus_per_node)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"Slurm config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a Slurm config is a mapping of {', '.join(f.name for f in dataclasses.fields(SlurmConfig))}")
    return data.get("slurm", data) if set(data) == {"slurm"} else data


def slurm_config(grid: Grid, file: str | Path | None = None, overrides: list[str] = ()) -> SlurmConfig:
    """The grid's resources: ``file`` (``--slurm``) or else its ``slurm:`` section (a mapping,
    or a file relative to the grid), then ``overrides`` (``partition=gpu``, without ``slurm.``)."""
    section = grid.slurm
    if file is not None:
        data = _read(Path(file))
    elif isinstance(section, str):
        data = _read(grid.path.parent / section)
    else:
        data = dict(section or {})
    known = {f.name for f in dataclasses.fields(SlurmConfig)}
    for text in overrides:
        keys, value = parse_override(text)
        data[".".join(keys)] = value
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown slurm key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return SlurmConfig(**data)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(config overrides, slurm overrides without their ``slurm.`` prefix)."""
    config = [text for text in overrides if not text.startswith("slurm.")]
    slurm = [text.removeprefix("slurm.") for text in overrides if text.startswith("slurm.")]
    return config, slurm


def with_nproc(cells: list[Cell], nproc: int) -> list[Cell]:
    """The cells as jobs of ``nproc`` processes train them (``nproc`` is part of a run id)."""
    if nproc == 1:
        return list(cells)
    try:
        return [dataclasses.replace(c, config=dataclasses.replace(c.config, nproc=nproc)) for c in cells]
    except ValueError as e:
        raise ValueError(f"a job of {nproc} processes (slurm nodes x gpus_per_node): {e}") from None


# --- the job ----------------------------------------------------------------------------------


class CellJob:
    """What one array task runs: one cell, in this process or on ``nproc`` processes under
    torchrun. ``checkpoint`` is submitit's requeue hook: on preemption or timeout Slurm
    requeues the same cell (which starts again; a finished cell is skipped)."""

    def __init__(self, cell: Cell, out_dir: str | Path, gpus_per_node: int = 1):
        self.cell, self.out_dir, self.gpus_per_node = cell, str(out_dir), gpus_per_node

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        if self.cell.config.nproc == 1:
            return run_cell(self.cell, self.out_dir)
        return run_cell(self.cell, self.out_dir, runner=self._torchrun)

    def _torchrun(self, cfg, out_dir: Path) -> dict:
        """The cell on nproc processes: torchrun on every node of the job (rendezvous on the
        first node), ``python -m study run`` on every rank; returns the record rank 0 wrote."""
        import submitit

        from .distributed import run_under_torchrun

        env = submitit.JobEnvironment()
        nodes = cfg.nproc // max(1, self.gpus_per_node)
        where = (["--standalone"] if nodes == 1 else
                 [f"--nnodes={nodes}", f"--node-rank={env.node}", f"--master-addr={env.hostnames[0]}",
                  f"--master-port={29500 + int(env.job_id.split('_')[-1]) % 1000}"])
        return run_under_torchrun(cfg, out_dir, self.cell.key, where)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(self.cell, self.out_dir, self.gpus_per_node))


# --- submitting ---------------------------------------------------------------------------------


def jobs_path(out_dir: Path, grid: Grid) -> Path:
    return Path(out_dir) / f"{grid.name}.jobs.json"


def executor(kind: str, out_dir: Path, grid: Grid, slurm: SlurmConfig):
    """A submitit executor for the grid's jobs; their logs go to ``<out>/.submitit/<grid>/``."""
    import submitit

    ex = submitit.AutoExecutor(folder=Path(out_dir) / ".submitit" / grid.name,
                               cluster="local" if kind == "submitit-local" else "slurm")
    params: dict[str, Any] = dict(name=f"study-{grid.name}", timeout_min=slurm.time_minutes, nodes=slurm.nodes,
                                  tasks_per_node=1, cpus_per_task=slurm.cpus_per_task, mem_gb=slurm.mem_gb,
                                  slurm_array_parallelism=slurm.array_parallelism)
    if kind == "slurm":
        params |= dict(gpus_per_node=slurm.gpus_per_node, slurm_setup=list(slurm.setup))
        params |= {f"slurm_{k}": getattr(slurm, k) for k in ("partition", "account") if getattr(slurm, k)}
    ex.update_parameters(**params)
    return ex


def pending(cells: list[Cell], out_dir: Path, active: set[str] = frozenset()) -> list[Cell]:
    """Cells to submit: no record, and no job of an earlier submission still queued or running."""
    return [c for c in cells if status(c, out_dir) != "done" and c.key not in active]


def submit(grid: Grid, out_dir: str | Path, kind: str, slurm: SlurmConfig) -> list[tuple[Cell, Any]]:
    """Submit the grid's pending cells as one array; returns (cell, submitit job) pairs and
    adds them to ``<out>/<grid>.jobs.json``."""
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("--executor slurm needs Slurm (no sbatch on this machine); use --executor local here, "
                         "or --executor submitit-local to run the submitit path on this machine")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = with_nproc(grid.cells, slurm.nproc)
    listed = read_jobs(out_dir, grid)
    active = {j["key"] for j in listed if job_state(j) in ACTIVE}
    todo = pending(cells, out_dir, active)
    if not todo:
        return []
    ex = executor(kind, out_dir, grid, slurm)
    with ex.batch():
        jobs = [ex.submit(CellJob(cell, out_dir, slurm.gpus_per_node)) for cell in todo]
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    listed += [{"label": c.label, "seed": c.seed, "key": c.key, "job_id": j.job_id, "executor": kind,
                "folder": str(ex.folder), "submitted": now} for c, j in zip(todo, jobs)]
    records.atomic_write_text(jobs_path(out_dir, grid), json.dumps(listed, indent=1))
    return list(zip(todo, jobs))


# --- the jobs' state -------------------------------------------------------------------------------

ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")


def read_jobs(out_dir: Path, grid: Grid) -> list[dict]:
    path = jobs_path(out_dir, grid)
    return json.loads(path.read_text()) if path.exists() else []


def job_state(job: dict) -> str:
    """A listed job's state: Slurm's (sacct, through submitit), or for a local job RUNNING
    while its process lives, else FINISHED (a result was written) or ENDED."""
    import submitit

    if job["executor"] == "slurm":
        return submitit.SlurmJob(job["folder"], job["job_id"]).state
    try:
        os.kill(int(job["job_id"]), 0)
        alive = True
    except (ProcessLookupError, PermissionError, ValueError):
        alive = False
    if alive:
        return "RUNNING"
    done = submitit.LocalJob(job["folder"], job["job_id"]).state
    return "FINISHED" if done == "FINISHED" else "ENDED"


def describe_status(grid: Grid, out_dir: str | Path, cells: list[Cell]) -> list[str]:
    """One line per cell: its record's status and its latest job (id and state)."""
    out_dir = Path(out_dir)
    latest = {j["key"]: j for j in read_jobs(out_dir, grid)}
    lines = []
    for c in cells:
        j = latest.get(c.key)
        job = f"job {j['job_id']} {job_state(j)}" if j else "not submitted"
        lines.append(f"{c.run_id or '(not built)':12s}  {status(c, out_dir):8s} {job:28s} {c.label} (seed {c.seed})")
    return lines
