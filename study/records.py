"""Run records: one JSON file per run, the contract between training and analysis.

Top-level keys (outside checks read these names): run_id, config, env, teacher, student,
data, compute, quality, curve. Files are named ``<run_id>.json`` and written atomically (temp
file + rename), so a reader never sees half a record and a killed writer leaves no record.
An existing record is never replaced silently: ``write`` refuses (``RecordExists``) unless
``overwrite`` is given, and then moves the old one and its companions (raw lm-eval output,
saved student) to ``<out>/.replaced/<UTC time>/``; nothing is deleted.

    from study.records import load
    df = load("results/runs")        # one row per run, flattened columns: "compute.train_seconds"
    df = load(["results/runs", "results/rerun"])     # several folders; a run counts once
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd

import study

log = logging.getLogger(__name__)

REQUIRED = ("run_id", "config", "env", "teacher", "student", "data", "compute", "quality", "curve")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def env_info(device) -> dict:
    """Provenance of a record: when, with which libraries, on what, from which commit. A
    record claims a clean tree (``git_dirty`` false) only if no tracked file differed from
    ``git_commit`` when it was written."""
    import importlib.metadata as md
    import time

    import torch
    import transformers

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "study": study.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": md.version("tokenizers"),
        "lm_eval": md.version("lm_eval"),
        "python": platform.python_version(),
        "device": str(device) if str(device) == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }


def record_path(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / f"{run_id}.json"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename, so a reader (or a
    resumed grid) sees the old file or the whole new one, never a part. A writer killed
    midway leaves only ``.<name>.<pid>.tmp``, which ``temporaries`` finds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def temporaries(out_dir: str | Path, run_id: str) -> list[Path]:
    """Temporary files a killed writer of run ``run_id`` may have left in ``out_dir``."""
    return sorted(Path(out_dir).glob(f".{run_id}.*.tmp"))


class RecordExists(FileExistsError):
    """A record of this run is already in the output folder and ``overwrite`` was not given."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(f"a record of this run already exists: {self.path}; pass --overwrite (overwrite=True) to "
                         f"replace it (the old one is kept in {self.path.parent / REPLACED}/), or use another --out")


REPLACED = ".replaced"  # <out>/.replaced/<UTC time>/: records (and their companions) replaced
BENCHMARKS_RAW = ".benchmarks.lm_eval.json"  # the raw output of the paper's benchmarks, when a run has them
COMPANIONS = (".lm_eval.json", BENCHMARKS_RAW, ".student")  # files and folders beside <run_id>.json, of one run


def companions(out_dir: str | Path, run_id: str) -> list[Path]:
    """What a run leaves beside its record: the raw lm-eval output, a saved student."""
    return [p for p in (Path(out_dir) / f"{run_id}{suffix}" for suffix in COMPANIONS) if os.path.lexists(p)]


def set_aside(out_dir: str | Path, run_id: str, only_older_than_record: bool = False) -> list[Path]:
    """Move run ``run_id``'s record and its companions out of the way, into
    ``<out>/.replaced/<UTC time>/`` under their own names: nothing is ever deleted. With
    ``only_older_than_record``, companions newer than the record (written by the run now
    replacing it) stay. Returns the new paths."""
    out_dir = Path(out_dir)
    record = record_path(out_dir, run_id)
    moving = [record] if record.exists() else []
    if only_older_than_record:  # no record: nothing is older than it, everything is the new run's
        limit = record.stat().st_mtime_ns if moving else -1
        moving += [p for p in companions(out_dir, run_id) if p.stat().st_mtime_ns <= limit]
    else:
        moving += companions(out_dir, run_id)
    if not moving:
        return []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for n in itertools.count():
        folder = out_dir / REPLACED / (stamp + (f"-{n}" if n else "") + "Z")
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    moved = []
    for p in moving:
        os.replace(p, folder / p.name)
        moved.append(folder / p.name)
    log.warning("run %s: the previous %s moved to %s", run_id, ", ".join(p.name for p in moving), folder)
    return moved


def check_out_dir(out_dir: str | Path, run_id: str | None = None, overwrite: bool = False) -> Path:
    """Fail now, before any work, if records cannot be written to ``out_dir``: it is a file,
    it cannot be created, or it is not writable (ValueError); or the record of ``run_id`` is
    there already and ``overwrite`` is false (RecordExists). Creates the folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder; give a folder for the records")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out_dir}: the folder cannot be created ({e.strerror or e})") from None
    probe = out_dir / f".write-probe.{os.getpid()}.tmp"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out_dir} is not writable ({e.strerror or e}); give a folder you can write to") from None
    if run_id is not None and record_path(out_dir, run_id).exists() and not overwrite:
        raise RecordExists(record_path(out_dir, run_id))
    return out_dir


def write(record: dict, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``record`` as ``<out>/<run_id>.json``, atomically. An existing record is never
    replaced silently: without ``overwrite`` this raises ``RecordExists`` (decided atomically:
    the new file is hard-linked into place, which fails on an existing path); with it, the old
    record and its companions go to ``<out>/.replaced/`` first (``set_aside``)."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks required keys: {', '.join(missing)}")
    rid = record["run_id"]
    path = record_path(out_dir, rid)
    if overwrite:
        set_aside(out_dir, rid, only_older_than_record=True)
        return atomic_write_text(path, json.dumps(record, indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=1))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise RecordExists(path) from None
    except OSError:  # a file system without hard links: check, then rename (not atomic)
        if path.exists():
            raise RecordExists(path) from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


NOT_RECORDS = (".grid.json", ".error.json", ".lm_eval.json")  # what else a records folder holds


def is_record_name(name: str) -> bool:
    """Whether a file name in a records folder names a run record (``<run_id>.json``); grid
    summaries, error records, raw lm-eval output and dot-files (temporaries) do not."""
    return name.endswith(".json") and not name.startswith(".") and not name.endswith(NOT_RECORDS)


# What two records of one run may differ in: where and when they ran (env, the config's
# infrastructure fields) and the cost measurements (compute, and every time or rate).
_VOLATILE_SECTIONS = ("env", "compute")
_VOLATILE_KEYS = ("built_in_this_run",)
_VOLATILE_SUFFIXES = ("_seconds", "_per_second")


def _comparable(rec: dict) -> dict:
    from . import config

    infra = set(getattr(config, "NON_SEMANTIC", ("device", "cache_dir")))

    def keep(d: dict, top: bool) -> dict:
        return {k: keep(v, False) if isinstance(v, dict) else v for k, v in d.items()
                if not (top and k in _VOLATILE_SECTIONS) and k not in _VOLATILE_KEYS
                and not k.endswith(_VOLATILE_SUFFIXES)}

    out = keep(rec, True)
    if isinstance(out.get("config"), dict):
        out["config"] = {k: v for k, v in out["config"].items() if k not in infra}
    return out


def _differences(a: dict, b: dict) -> list[str]:
    fa, fb = (pd.json_normalize(_comparable(r), sep=".").iloc[0].to_dict() for r in (a, b))
    return sorted(k for k in set(fa) | set(fb) if k not in fa or k not in fb or
                  json.dumps(fa[k], sort_keys=True, default=str) != json.dumps(fb[k], sort_keys=True, default=str))


def read_checked(path: str | Path) -> dict:
    """One record file, or a ValueError saying what is wrong with it."""
    try:
        rec = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg}, line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError("not a text file") from None
    except OSError as e:
        raise ValueError(f"unreadable ({e.strerror or e})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"not a run record (a JSON {type(rec).__name__}, not an object)")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ValueError(f"not a run record (no {', '.join(missing)})")
    if not isinstance(rec["run_id"], str) or not isinstance(rec["curve"], list):
        raise ValueError("not a run record (run_id must be a string and curve a list)")
    return rec


def load(folders: str | Path | list[str | Path]) -> pd.DataFrame:
    """The records in ``folders`` (one folder or a list) as one DataFrame, one row per run,
    nested keys flattened with dots; the loss curve stays a list in column ``curve`` and the
    file in ``path``.

    Only each folder's top level is read (records are ``<folder>/<run_id>.json``; grid
    summaries, ``*.error.json``, ``*.lm_eval.json`` and dot-files are skipped by name). A run
    is one row however many files hold it: duplicates (a copied record) are kept once, with a
    warning naming every copy, and ``df.attrs["duplicates"]`` maps each such run id to its
    files; copies that disagree on anything but env, cost measurements and the config's
    infrastructure fields raise. Raises FileNotFoundError for a missing folder and ValueError
    for a folder without records and for unreadable or invalid record files (all named)."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    if not folders:
        raise ValueError("records.load needs at least one folder")
    paths, bad = [], []
    for folder in map(Path, folders):
        if not folder.exists():
            raise FileNotFoundError(f"records folder {folder} does not exist")
        if not folder.is_dir():
            raise ValueError(f"records folder {folder} is a file, not a folder")
        paths += sorted(p for p in folder.iterdir() if is_record_name(p.name) and not p.is_dir())
    by_id: dict[str, list[tuple[Path, dict]]] = {}
    for path in paths:
        try:
            rec = read_checked(path)
        except ValueError as e:
            bad.append(f"{path}: {e}")
            continue
        by_id.setdefault(rec["run_id"], []).append((path, rec))
    if bad:
        raise ValueError(f"{len(bad)} record file(s) cannot be used: " + "; ".join(bad)
                         + " (move them out of the records folder or fix them)")
    if not by_id:
        raise ValueError(f"no run records (<run_id>.json) in {', '.join(map(str, folders))}")

    rows, duplicates, conflicts = [], {}, []
    for rid, copies in by_id.items():
        # Keep the file named after the run if there is one, else the first.
        copies.sort(key=lambda pr: pr[0].name != f"{rid}.json")
        path, rec = copies[0]
        for other_path, other in copies[1:]:
            diff = _differences(rec, other)
            if diff:
                conflicts.append(f"{path} and {other_path} (run {rid}) differ in {', '.join(diff[:5])}"
                                 + (f" and {len(diff) - 5} more" if len(diff) > 5 else ""))
        if len(copies) > 1:
            duplicates[rid] = [str(p) for p, _ in copies]
            log.warning("run %s has %d record files; kept %s, ignored %s", rid, len(copies), path,
                        ", ".join(str(p) for p, _ in copies[1:]))
        rec = dict(rec)
        curve = rec.pop("curve")
        row = pd.json_normalize(rec, sep=".").iloc[0].to_dict()
        row["curve"] = curve
        row["path"] = str(path)
        rows.append(row)
    if conflicts:
        raise ValueError("records of one run id disagree: " + "; ".join(conflicts)
                         + " (keep one of each: they are not the same run)")
    df = pd.DataFrame(rows)
    df.attrs["duplicates"] = duplicates
    return df
