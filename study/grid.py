"""Grids as data: a YAML file whose axes are the paper's independent variables, expanded into
run configs, and a runner that resumes.

    study grid configs/grids/truncation.yaml --out results/runs            # all cells, 3 seeds
    study grid configs/grids/truncation.yaml --quick --out /tmp/runs       # small budget, 1 seed
    study grid configs/grids/supervision.yaml --set teacher_cache=false --out results/runs

A grid file::

    name: truncation
    description: lead-span proportion 0.1 ... 1.0 under P+CoT+A
    base: ../default.yaml          # the run config every cell starts from (relative to this file)
    seeds: [42, 43, 44]            # every cell runs once per seed
    set: {lsp: 0.5}                # optional: overrides for every cell (dotted keys allowed)
    axes:                          # optional: the cartesian product of these values
      lsp: [0.1, 0.2, 1.0]
    cells:                         # optional: explicit cells, each with its own overrides
      - label: cut after </think>
        set: {cut_after_think: true}
      - set: {lsp: 1.0}            # a cell's own seeds replace the grid's: more seeds where
        seeds: [45, 46]            # the headline comparisons are (with the axis' 42-44: five)
    slurm: ../slurm/example.yaml   # optional: resources of its Slurm jobs (study/slurm.py)

A cell's config is the base config, then (``--quick``) the quick grid's ``set``, then the
grid's ``set``, then the cell's own values, then the seed, then the command line's ``--set``.

The runner writes each cell's record as ``<out>/<run_id>.json`` (atomically, see
``records``); a cell whose record exists is skipped, so an interrupted grid resumes where it
stopped, after a ``kill -9`` included. A failing cell writes ``<run_id>.error.json`` (its
traceback) and the grid goes on; a later run retries it. Each cell is guarded by an
exclusive lock, so two grids sharing cells can run at the same time without doing one twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import records
from .config import MAX_SEED, RunConfig, config_from_dict, yaml_problem
from .identity import config_key, run_id

log = logging.getLogger(__name__)

GRID_KEYS = ("name", "description", "base", "seeds", "set", "axes", "cells", "slurm")
CELL_KEYS = ("label", "set", "seeds")


@dataclass(frozen=True)
class Cell:
    label: str  # what the cell varies, e.g. "lsp=0.5" or an explicit label
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        """The canonical config and its execution: cells with one key are one run."""
        return config_key(self.config)

    @property
    def run_id(self) -> str | None:
        """The run id, which includes the weight hashes of the teacher and base student: None
        until those are built (the runner builds them before it runs any cell)."""
        from .pretrain import artefact_weights

        weights = artefact_weights(self.config)
        if weights["teacher"] is None or (self.config.init == "base" and weights["base"] is None):
            return None
        return run_id(self.config, weights)


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    path: Path
    cells: list[Cell]
    # The study's reference run: base config + quick ``set`` + ``--set``, first seed (the
    # grid's own ``set`` is part of what its cells vary, except its ``threads``). Tables and
    # figures label each record by how its config differs from this.
    reference: RunConfig
    duplicates: list[str] = field(default_factory=list)  # cells that collapsed onto another
    # Resources of its Slurm jobs (study/slurm.py): a mapping, or a file relative to the grid.
    slurm: dict | str | None = None


def _read_yaml(path: Path, what: str) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a YAML file")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a text file") from None


def _set(data: dict, dotted: str, value: Any) -> None:
    """``_set(d, "corpus.layout", "late")`` sets ``d["corpus"]["layout"]``."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{dotted}: {part} is not a mapping")
    node[leaf] = value


def _apply(data: dict, overrides: dict) -> dict:
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for key, value in overrides.items():
        _set(out, str(key), value)
    return out


def _label(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base config"


def _check_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of config keys to values, got {value!r}")
    return value


def _check_seeds(seeds: Any, path: Path) -> list[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and 0 <= s <= MAX_SEED for s in seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of integers in [0, 2**32 - 1], got {seeds!r}")
    return seeds


def load_grid(path: str | Path, overrides: list[str] = (), quick: bool | str | Path = False,
              base: str | Path | None = None) -> Grid:
    """Read and expand a grid file. ``quick`` applies the ``set`` and ``seeds`` of
    ``quick.yaml`` beside the grid (or of the given file); ``base`` replaces the grid's base
    config (tests point it at a tiny one). Every cell is validated here, before anything runs."""
    if isinstance(overrides, (str, bytes)):
        raise ValueError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}; "
                         f"pass [{overrides!r}]")
    path = Path(path)
    spec = _read_yaml(path, "grid file")
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(str(k) for k in spec if k not in GRID_KEYS)
    if unknown:
        hint = ""
        if set(unknown) & {f.name for f in dataclasses.fields(RunConfig)}:
            hint = (f"; {path} looks like a run config: run it with `study run --config {path}`, "
                    "or use it as the grid's `base` (--base)")
        raise ValueError(f"{path}: unknown grid key(s) {', '.join(unknown)}; valid: {', '.join(GRID_KEYS)}{hint}")
    if not isinstance(spec.get("base", ""), str) or not isinstance(spec.get("name", ""), str):
        raise ValueError(f"{path}: base (a run config file, relative to the grid) and name must be strings")
    if "/" in spec.get("name", "") or spec.get("name", "").startswith("."):
        raise ValueError(f"{path}: name {spec['name']!r} names the summary file <out>/<name>.grid.json: "
                         "no '/' and no leading '.'")
    base_path = Path(base) if base is not None else path.parent / spec.get("base", "../default.yaml")
    base_data = _read_yaml(base_path, f"base config of grid {path}")
    if not isinstance(base_data, dict):
        raise ValueError(f"{base_path} (the base config of grid {path}) must be a run config: a mapping of "
                         f"config keys to values, got a {type(base_data).__name__}")
    seeds = _check_seeds(spec.get("seeds", [base_data.get("seed", RunConfig.seed)]), path)
    if quick:
        quick_path = path.with_name("quick.yaml") if quick is True else Path(quick)
        qspec = _read_yaml(quick_path, "quick grid")
        if not isinstance(qspec, dict):
            raise ValueError(f"{quick_path}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}, "
                             f"got a {type(qspec).__name__}")
        base_data = _apply(base_data, _check_mapping(qspec.get("set"), f"{quick_path}: set"))
        seeds = _check_seeds(qspec.get("seeds", seeds[:1]), quick_path)
    grid_set = _check_mapping(spec.get("set"), f"{path}: set")
    data = _apply(base_data, grid_set)

    variations = []  # (label, overrides, seeds) per cell
    axes = _check_mapping(spec.get("axes"), f"{path}: axes")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: axis {key} must be a non-empty list of values, got {values!r}")
    if axes:
        for combo in itertools.product(*axes.values()):
            cell = dict(zip(axes, combo))
            variations.append((_label(cell), cell, seeds))
    for i, cell in enumerate(spec.get("cells") or []):
        if not isinstance(cell, dict) or set(cell) - set(CELL_KEYS):
            raise ValueError(f"{path}: cell {i + 1} must be a mapping with keys {', '.join(CELL_KEYS)}, "
                             f"e.g. {{label: cut after </think>, set: {{cut_after_think: true}}}}; got {cell!r}")
        sets = _check_mapping(cell.get("set"), f"{path}: cell {i + 1} set")
        if "seeds" in cell:
            cell_seeds = _check_seeds(cell["seeds"], f"{path}: cell {i + 1}")
            if quick:  # the quick grid's seeds for all; a cell that only adds seeds adds nothing
                if any(sets == other for _, other, _ in variations):
                    continue
                cell_seeds = seeds
        else:
            cell_seeds = seeds
        variations.append((str(cell.get("label") or _label(sets)), sets, cell_seeds))
    if not variations:
        raise ValueError(f"{path}: the grid has no cells; give axes or cells")

    # The base config and the command line's overrides are checked once on their own, so a
    # bad one is reported as such rather than as a fault of the first cell.
    try:
        config_from_dict(_apply(base_data, {"seed": seeds[0]}))
    except ValueError as e:
        raise ValueError(f"{base_path} (the base config of grid {path}{' with --quick' if quick else ''}): {e}") from None
    # How a grid executes is not what it varies: its reference runs on the thread count of its
    # cells (a grid's ``set: {threads: 1}``), so it is the run the cells' reference records are.
    run_as = {k: v for k, v in grid_set.items() if k == "threads"}
    try:
        reference = config_from_dict(_apply(base_data, {"seed": seeds[0], **run_as}), list(overrides))
    except ValueError as e:
        raise ValueError(f"--set {' '.join(overrides)}: {e}") from None

    cells, seen, dupes = [], {}, []
    runs = [(label, sets, seed) for label, sets, cell_seeds in variations for seed in cell_seeds]
    for label, sets, seed in runs:
        where = f"{path}: cell {label!r}, seed {seed}"
        try:
            cfg = config_from_dict(_apply(data, {**sets, "seed": seed}), list(overrides))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        key = config_key(cfg)
        if key in seen:  # e.g. --set lsp=0.5 on the truncation grid makes every cell one run
            dupes.append(f"{label} (seed {seed}) = {seen[key]}")
            continue
        seen[key] = f"{label} (seed {seed})"
        cells.append(Cell(label, seed, cfg))
    for d in dupes:
        log.warning("%s: cell %s: same run, kept once", path, d)
    if not isinstance(spec.get("slurm") or {}, (dict, str)):
        raise ValueError(f"{path}: slurm must be a mapping of Slurm resources or the path of a Slurm config "
                         f"(e.g. ../slurm/example.yaml), got {spec['slurm']!r}")
    return Grid(str(spec.get("name") or path.stem), str(spec.get("description") or ""), path, cells,
                reference, dupes, spec.get("slurm"))


# --- running ----------------------------------------------------------------------------------


def error_path(out_dir: Path, rid: str) -> Path:
    return out_dir / f"{rid}.error.json"


def status(cell: Cell, out_dir: str | Path) -> str:
    """"done" (a complete record exists), "invalid" (a file at the record's path is not a
    complete record: the runner moves it aside and runs the cell), "failed" (its last attempt
    wrote an error) or "pending". Reads only: a dry run changes nothing."""
    out_dir = Path(out_dir)
    rid = cell.run_id
    if rid is None:  # its teacher or base student is not built yet: no record can be its
        return "failed" if error_path(out_dir, cell.key).exists() else "pending"
    path = records.record_path(out_dir, rid)
    if os.path.lexists(path):
        try:
            records.read_checked(path)
            return "done"
        except ValueError:
            return "invalid"
    return "failed" if error_path(out_dir, rid).exists() else "pending"


def move_invalid_aside(cell: Cell, out_dir: str | Path) -> Path | None:
    """If the file at the cell's record path is not a complete record (records are only ever
    renamed into place whole, so it came from elsewhere), rename it to
    ``<run_id>.json.invalid-<time>`` beside it (nothing is deleted), so the cell runs again."""
    if status(cell, out_dir) != "invalid":
        return None
    path = records.record_path(out_dir, cell.run_id)
    aside = path.with_name(f"{path.name}.invalid-{time.time_ns()}")
    log.warning("%s is not a complete record; moved to %s and the cell will run again", path, aside.name)
    os.replace(path, aside)
    return aside


@contextlib.contextmanager
def cell_lock(out_dir: Path, rid: str):
    """Exclusive, non-blocking lock on one cell; yields False if another process holds it.
    The kernel drops the lock when its holder dies, so a killed grid never leaves it stuck."""
    lock_dir = out_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{rid}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cost(cfg: RunConfig) -> float:
    """Relative cost of a cell, for the time-left estimate: training scales with the tokens
    kept; loading, profiling and evaluation add about a quarter of a full default run."""
    kept = cfg.lsp if not cfg.cut_after_think else 0.93 * cfg.lsp  # keep_answer: the same budget
    return cfg.epochs * cfg.corpus.train_examples * (kept + 0.25)


def run_cell(cell: Cell, out_dir: str | Path, runner=None) -> dict:
    """Run one cell unless it is done or running elsewhere. Returns an outcome dict with
    ``status`` ran / skipped / busy / failed. ``runner(config, out_dir)`` trains the cell and
    returns its record (default: ``study.run.run`` in this process; a Slurm job of several
    GPUs passes one that runs torchrun, study/slurm.py)."""
    from .run import run

    if runner is None and cell.config.nproc > 1:  # several processes of this machine
        from .distributed import run_under_torchrun

        def runner(cfg, out):
            return run_under_torchrun(cfg, out, cell.key)
    runner = runner or (lambda cfg, out: run(cfg, out, progress=False))
    out_dir = Path(out_dir)
    started = time.perf_counter()
    # Locked by config key: the run id is unknown until the teacher and base student exist.
    with cell_lock(out_dir, cell.key) as mine:
        if not mine:
            return {"status": "busy", "seconds": 0.0}
        if status(cell, out_dir) == "done":  # finished by another process meanwhile
            return {"status": "skipped", "seconds": 0.0, "run_id": cell.run_id}
        move_invalid_aside(cell, out_dir)
        for tmp in records.temporaries(out_dir, cell.run_id or cell.key):  # left by a killed writer
            tmp.unlink()
        try:
            rec = runner(cell.config, out_dir)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # the grid goes on; the error is kept for the summary and retried later
            rid = cell.run_id or cell.key  # the config key if its teacher or base never got built
            log.error("cell %s (seed %s, run %s) failed: %s", cell.label, cell.seed, rid, e)
            records.atomic_write_text(error_path(out_dir, rid), json.dumps({
                "run_id": rid, "label": cell.label, "seed": cell.seed,
                "config": asdict(cell.config), "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }, indent=1))
            return {"status": "failed", "seconds": time.perf_counter() - started, "run_id": rid,
                    "error": f"{type(e).__name__}: {e}"}
        error_path(out_dir, rec["run_id"]).unlink(missing_ok=True)
        error_path(out_dir, cell.key).unlink(missing_ok=True)
        q = next(iter(rec["quality"].values()))  # a hub corpus: the first benchmark's pass@1
        return {"status": "ran", "seconds": time.perf_counter() - started, "run_id": rec["run_id"],
                "accuracy": q["accuracy"] if "accuracy" in q else q["pass@1"], "train_seconds": rec["compute"]["train_seconds"]}


def prepare(cfg: RunConfig) -> None:
    """Build (or find) what a cell shares with others before any cell runs: tokenizer,
    teacher, base student and teacher-output cache. Parallel workers then only read them."""
    from . import teacher_cache
    from .data.corpus import load_corpus
    from .models import run_tokenizer
    from .pretrain import get_base, get_teacher
    from .train import pick_device

    tokenizer, tok_key = run_tokenizer(cfg)
    teacher, meta = get_teacher(cfg)
    if cfg.init == "base":
        get_base(cfg)
    if cfg.teacher_cache:
        corpus = load_corpus(cfg.corpus, tokenizer)
        encoded = corpus.encode(corpus.train, tokenizer)
        teacher_cache.get_or_build(cfg, teacher, meta["weights_sha256"], tokenizer, tok_key, encoded,
                                   pick_device(cfg.device))


def _shared_key(cfg: RunConfig) -> str:
    """Cells with equal keys share every cached artefact ``prepare`` builds; the teacher-output
    part is the cache's own notion of a view (left windows of any lsp share one entry)."""
    from .teacher_cache import view_of

    d = asdict(cfg)
    keep = ("corpus", "tokenizer", "teacher", "base", "init", "teacher_cache", "teacher_cache_mode",
            "teacher_cache_topk", "cache_dir", "threads", "attn_implementation")
    return json.dumps({**{k: d[k] for k in keep}, "view": view_of(cfg)}, sort_keys=True)


def jobs_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def cells_for_jobs(cells: list[Cell], jobs: int) -> list[Cell]:
    """The cells as ``--jobs`` runs them: with jobs > 1 each runs on cores / jobs threads, and
    a thread count is part of a run id (a cell that sets ``threads`` keeps its own)."""
    if jobs <= 1:
        return list(cells)
    return [c if c.config.threads else dataclasses.replace(c, config=dataclasses.replace(
        c.config, threads=jobs_threads(jobs))) for c in cells]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def run_grid(grid: Grid, out_dir: str | Path, jobs: int = 1, progress: bool = True) -> dict:
    """Run every pending cell of ``grid`` into ``out_dir``; returns (and writes to
    ``<out>/<grid>.grid.json``) a summary of what ran, was skipped and failed.

    ``jobs > 1`` runs that many cells at once in worker processes with ``cores / jobs``
    torch threads each (on a small CPU, one-thread runs waste less on per-operation
    overhead); shared artefacts are built first, once, in this process."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    threads = jobs_threads(jobs)
    cells = cells_for_jobs(grid.cells, jobs)
    todo, outcomes = [], {}

    def skipped(cell):
        outcomes[cell.key] = {"status": "skipped", "seconds": 0.0, "run_id": cell.run_id}

    for cell in cells:
        if status(cell, out_dir) == "done":
            skipped(cell)
        else:
            todo.append(cell)
    prep_start = time.perf_counter()
    for cfg in {_shared_key(c.config): c.config for c in todo}.values():
        try:
            prepare(cfg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # the cells that need it fail one by one, each with its error record
            log.warning("building the shared models/caches for seed %s failed (%s); its cells will fail", cfg.seed, e)
    prepare_seconds = time.perf_counter() - prep_start
    # With their teacher and base student built, some cells turn out to be done already.
    for cell in [c for c in todo if status(c, out_dir) == "done"]:
        skipped(cell)
        todo.remove(cell)

    total = sum(cost(c.config) for c in todo)
    bar = tqdm(total=round(total), disable=not progress or not todo, unit="", bar_format=(
        "{desc} |{bar}| {percentage:3.0f}% of the work [{elapsed} elapsed, ~{remaining} left]"))

    def done(cell: Cell, outcome: dict) -> None:
        outcomes[cell.key] = outcome
        finished = sum(o["status"] != "skipped" for o in outcomes.values())
        acc = f", acc {outcome['accuracy']:.3f}" if "accuracy" in outcome else ""
        bar.set_description_str(f"{grid.name}: {finished}/{len(todo)} cells (last: {cell.label}, "
                                f"seed {cell.seed}: {outcome['status']}{acc})")
        bar.update(round(cost(cell.config)))

    bar.set_description_str(f"{grid.name}: 0/{len(todo)} cells")
    if jobs <= 1:
        for cell in todo:
            done(cell, run_cell(cell, out_dir))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(run_cell, cell, out_dir): cell for cell in todo}
            for fut in as_completed(futures):
                try:
                    outcome = fut.result()
                except Exception as e:  # a worker died (e.g. killed for memory): its cell failed
                    outcome = {"status": "failed", "seconds": 0.0, "run_id": futures[fut].run_id,
                               "error": f"{type(e).__name__}: {e} (the worker process died)"}
                done(futures[fut], outcome)
    bar.close()

    by_status = {s: [c for c in cells if outcomes[c.key]["status"] == s]
                 for s in ("ran", "skipped", "busy", "failed")}
    summary = {
        "grid": grid.name,
        "path": str(grid.path),
        "out": str(out_dir),
        "cells": len(grid.cells),
        **{s: len(cs) for s, cs in by_status.items()},
        "jobs": jobs,
        "wall_seconds": time.perf_counter() - started,
        "prepare_seconds": prepare_seconds,
        "failures": [{"label": c.label, "seed": c.seed, "run_id": outcomes[c.key].get("run_id"),
                      "error": outcomes[c.key]["error"]} for c in by_status["failed"]],
        "runs": [{"label": c.label, "seed": c.seed, "run_id": None, **outcomes[c.key]} for c in cells],
    }
    records.atomic_write_text(out_dir / f"{grid.name}.grid.json", json.dumps(summary, indent=1))
    return summary


def describe(summary: dict) -> str:
    """The end-of-grid summary as a few lines of text."""
    lines = [f"grid {summary['grid']}: {summary['cells']} cells -> {summary['out']} "
             f"({summary['wall_seconds']:.0f} s, {summary['jobs']} job(s))",
             f"  ran {summary['ran']}, skipped {summary['skipped']} (record exists), "
             f"failed {summary['failed']}, busy elsewhere {summary['busy']}"]
    for f in summary["failures"]:
        lines.append(f"  FAILED {f['label']} (seed {f['seed']}, run {f['run_id']}): {f['error']}")
    if summary["failures"]:
        lines.append(f"  tracebacks: {summary['out']}/<run_id>.error.json; run the grid again to retry")
    return "\n".join(lines)


class GridFailed(RuntimeError):
    """Some cells failed (their records are missing); their errors are in the summaries."""


def run_grids(names: list[str], out_dir: str | Path, quick: bool | str | Path = False, base: str | Path | None = None,
              overrides: list[str] = (), jobs: int = 1, grids_dir: str | Path = "configs/grids",
              progress: bool = True) -> RunConfig:
    """Run the named grids of ``grids_dir`` one after another (what the notebooks call),
    print each summary, and return the study's reference config for tables and figures.
    Raises ``GridFailed`` after all grids ran if any cell failed, so a notebook run (and
    ``make reproduce``) fails visibly; running it again retries only the failed cells."""
    grids = [load_grid(Path(grids_dir) / f"{name}.yaml", list(overrides), quick=quick, base=base) for name in names]
    failed = []
    for grid in grids:
        summary = run_grid(grid, out_dir, jobs=jobs, progress=progress)
        print(describe(summary), flush=True)
        failed += summary["failures"]
    if failed:
        raise GridFailed(f"{len(failed)} cell(s) failed: " + "; ".join(f"{f['label']} (seed {f['seed']}): {f['error']}"
                                                                       for f in failed))
    return grids[0].reference


def ablation_grid(path: str | Path, reference: dict | None = None, overrides: list[str] = (),
                  quick: bool | str | Path = False, base: str | Path | None = None) -> tuple[Grid, RunConfig]:
    """Any grid with its reference run (notebooks/ablation.ipynb): the grid as ``load_grid``
    reads it, with the reference config (the grid's ``reference``, then ``reference``'s
    overrides, dotted keys: ``{"lsp": 1.0}``; ``{}``: the grid's reference itself) added as cells
    at every seed the grid's cells use, where no cell is that run already. Returns the grid and
    the reference config (first seed)."""
    grid = load_grid(path, list(overrides), quick=quick, base=base)
    try:
        ref = config_from_dict(_apply(asdict(grid.reference), dict(reference or {})))
    except ValueError as e:
        raise ValueError(f"reference {reference!r}: {e}") from None
    keys = {c.key for c in grid.cells}
    extra = [Cell("reference", seed, cfg) for seed in sorted({c.seed for c in grid.cells})
             for cfg in [dataclasses.replace(ref, seed=seed)] if config_key(cfg) not in keys]
    return dataclasses.replace(grid, cells=[*extra, *grid.cells]), ref


def run_ablation(path: str | Path, out_dir: str | Path, reference: dict | None = None, overrides: list[str] = (),
                 quick: bool | str | Path = False, base: str | Path | None = None, jobs: int = 1,
                 progress: bool = True) -> tuple[Grid, RunConfig]:
    """Run ``ablation_grid(path, reference, ...)`` into ``out_dir`` (resuming: cells whose
    record exists are skipped), print its summary, and return the grid and its reference
    config; raises ``GridFailed`` if a cell failed."""
    grid, ref = ablation_grid(path, reference, overrides, quick=quick, base=base)
    summary = run_grid(grid, out_dir, jobs=jobs, progress=progress)
    print(describe(summary), flush=True)
    if summary["failures"]:
        raise GridFailed(f"{len(summary['failures'])} cell(s) failed: " + "; ".join(
            f"{f['label']} (seed {f['seed']}): {f['error']}" for f in summary["failures"]))
    return grid, ref
