"""Command line: ``study run``, ``study grid``, ``study show``, ``study corpus-stats``.

    study run --config configs/quick.yaml --set lsp=0.5 --out results/runs
    study grid configs/grids/truncation.yaml --out results/runs      # resumes; --quick, --jobs 2
    study show --config configs/quick.yaml --set lsp=0.5 --index 3     # sections + supervision
    study corpus-stats --config configs/default.yaml

Bad input (unknown key, invalid value, malformed YAML, a run that supervises nothing) ends
with one clear line on stderr and exit status 2; a grid with failed cells ends with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from .config import load_config, run_id
from .sections import SectionError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted for nested keys (corpus.layout=late); repeatable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="distil one student and write its record")
    _common(p_run)
    p_run.add_argument("--out", required=True, help="folder for the record (<run_id>.json)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p_grid = sub.add_parser("grid", help="run every cell of a grid (skips cells whose record exists)")
    p_grid.add_argument("grid", help="grid YAML (see configs/grids/)")
    p_grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every cell (teacher_cache=false); repeatable")
    p_grid.add_argument("--out", required=True, help="folder for the records (<run_id>.json)")
    p_grid.add_argument("--quick", action="store_true", help="the small budget and seeds of quick.yaml")
    p_grid.add_argument("--base", help="base run config instead of the grid's own `base`")
    p_grid.add_argument("--jobs", type=int, default=1, help="cells at once (each with cores/jobs threads)")
    p_grid.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")
    p_grid.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p_show = sub.add_parser("show", help="print a training sequence with sections and supervision marked")
    _common(p_show)
    p_show.add_argument("--index", type=int, default=0)
    p_show.add_argument("--color", action="store_true")
    p_stats = sub.add_parser("corpus-stats", help="tokens per section and first-answer position")
    _common(p_stats)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "grid":
            return _grid(args)
        cfg = load_config(args.config, args.set)
        if args.command == "run":
            from .records import record_path
            from .run import run

            rec = run(cfg, args.out, progress=not args.no_progress)
            q = next(iter(rec["quality"].values()))
            print(f"{rec['run_id']}: accuracy {q['accuracy']:.3f} (first \\boxed: {q['accuracy_first_boxed']:.3f}), "
                  f"{rec['compute']['train_seconds']:.1f} s training -> {record_path(args.out, rec['run_id'])}")
        elif args.command == "show":
            _show(cfg, args.index, args.color)
        else:
            _stats(cfg)
    except (ValueError, SectionError, FileNotFoundError, yaml.YAMLError) as e:
        print(f"study {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _grid(args) -> int:
    from .grid import describe, load_grid, run_grid, status

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    grid = load_grid(args.grid, args.set, quick=args.quick, base=args.base)
    if args.dry_run:
        for cell in grid.cells:
            print(f"{cell.run_id}  {status(cell, args.out):8s} {cell.label} (seed {cell.seed})")
        return 0
    summary = run_grid(grid, args.out, jobs=args.jobs, progress=not args.no_progress)
    print(describe(summary))
    return 1 if summary["failures"] else 0


def _show(cfg, index: int, color: bool) -> None:
    from .data.pipeline import example_view
    from .data.synthetic import make_splits
    from .models import get_tokenizer
    from .sections import render

    tokenizer, _ = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    enc, ids, secs, mask = example_view(make_splits(cfg.corpus)["train"], index, tokenizer, cfg)
    print(f"run {run_id(cfg)}: condition={cfg.condition} lsp={cfg.lsp} window={cfg.window} "
          f"cut_after_think={cfg.cut_after_think} ({len(ids)}/{len(enc.ids)} tokens kept)")
    print(render([tokenizer.decode([i]) for i in ids], secs, mask, color=color))


def _stats(cfg) -> None:
    from .data.pipeline import corpus_stats
    from .data.synthetic import make_splits
    from .models import get_tokenizer

    tokenizer, _ = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    table = corpus_stats(make_splits(cfg.corpus)["train"], tokenizer)
    print(table.describe().T[["mean", "std", "min", "max"]].to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
