"""Command line: ``study run``, ``study grid``, ``study show``, ``study corpus-stats``,
``study evaluate``, ``study compare``, ``study pretrain``.

    study run --config configs/quick.yaml --set lsp=0.5 --out results/runs
    study run --nproc 4 --config configs/quick.yaml --out results/runs  # 4 processes under torchrun
    study evaluate --run 9b706c0f671e --runs results/runs --set max_gen_toks=512   # re-score a saved student
    study grid configs/grids/truncation.yaml --out results/runs      # resumes; --quick, --jobs 2
    study show --config configs/quick.yaml --set lsp=0.5 --index 3     # sections + supervision
    study corpus-stats --config configs/default.yaml
    study compare results/runs results/reproduced/runs   # per variant: identical, within CI or not
    study pretrain [--config C] [--force] [--release]   # tokenizer, teacher, base (default: the study's)

Bad input (unknown key, invalid value, malformed YAML, a run that supervises nothing, an
existing record without --overwrite, an output folder that is a file) ends with one clear line
on stderr and exit status 2, before any model is built where the config alone shows it; a grid
with failed cells ends with status 1, and so does a comparison with a disagreement beyond the
CI or a variant missing in the reproduction.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import yaml

from .config import load_config
from .records import RecordExists
from .sections import SectionError

# What bad input raises; main turns each into one line on stderr and exit status 2.
USER_ERRORS = (ValueError, SectionError, FileNotFoundError, RecordExists, yaml.YAMLError)


class UsageError(Exception):
    """A command line argparse rejects (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit; main reports one line
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted for nested keys (corpus.layout=late); repeatable")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="study", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="distil one student and write its record")
    _common(p_run)
    p_run.add_argument("--out", required=True, help="folder for the record (<run_id>.json)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p_run.add_argument("--overwrite", action="store_true",
                       help="replace an existing record of this run (the old one moves to <out>/.replaced/)")
    p_run.add_argument("--nproc", type=int, metavar="N",
                       help="train on N processes (GPUs) of this machine: launches torchrun (= --set nproc=N)")
    p_grid = sub.add_parser("grid", help="run every cell of a grid (skips cells whose record exists)")
    p_grid.add_argument("grid", help="grid YAML (see configs/grids/)")
    p_grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every cell (teacher_cache=false); repeatable")
    p_grid.add_argument("--out", required=True, help="folder for the records (<run_id>.json)")
    p_grid.add_argument("--quick", action="store_true", help="the small budget and seeds of quick.yaml")
    p_grid.add_argument("--base", help="base run config instead of the grid's own `base`")
    p_grid.add_argument("--jobs", type=int, default=1, help="cells at once (each with cores/jobs threads)")
    p_grid.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")
    p_grid.add_argument("--executor", choices=("local", "submitit-local", "slurm"), default="local",
                        help="local: run the cells here (default); slurm: submit the pending cells as one Slurm "
                             "array through submitit; submitit-local: the same through submitit's local executor")
    p_grid.add_argument("--slurm", metavar="FILE",
                        help="Slurm resources (configs/slurm/example.yaml) instead of the grid's `slurm:` section; "
                             "override keys with --set slurm.partition=gpu")
    p_grid.add_argument("--status", action="store_true",
                        help="each cell's record status and its latest submitted job's state")
    p_grid.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p_show = sub.add_parser("show", help="print a training sequence with sections and supervision marked")
    _common(p_show)
    p_show.add_argument("--index", type=int, default=0)
    p_show.add_argument("--color", action="store_true")
    p_stats = sub.add_parser("corpus-stats", help="tokens per section and first-answer position")
    _common(p_stats)
    p_eval = sub.add_parser("evaluate", help="score a run's saved student again with other evaluation settings")
    p_eval.add_argument("--run", required=True, metavar="RUN_ID", help="the run id (its record's file name)")
    p_eval.add_argument("--runs", default="results/runs", help="folder of the record and its saved student")
    p_eval.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an evaluation setting (eval_examples, max_gen_toks, eval_batch_size, samples, eval_temperature, eval_top_p), such as samples=8 with eval_temperature=0.6 for the paper's decoding; repeatable")
    p_cmp = sub.add_parser("compare", help="compare a reproduction's records with the committed ones, per variant")
    p_cmp.add_argument("committed", help="records folder of the committed study (results/runs)")
    p_cmp.add_argument("reproduced", help="records folder of the reproduction (results/reproduced/runs)")
    p_cmp.add_argument("--reference", metavar="CONFIG",
                       help="run config the variants are named against (default: inferred from the committed runs)")
    p_cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of --reference; repeatable")
    p_cmp.add_argument("--all", action="store_true",
                       help="expect every committed record, not only those the grid summaries name")
    p_pre = sub.add_parser("pretrain", help="build (--force: retrain) the tokenizer, teacher and base student "
                                            "of a config; --release writes them into artefacts/")
    p_pre.add_argument("--config", action="append", default=[],
                       help="run config YAML (repeatable); default: every config of the study's grids "
                            "(configs/grids/*.yaml): the default and the late-answer corpus, the light-touch base")
    p_pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (teacher.steps=100); repeatable")
    p_pre.add_argument("--force", action="store_true",
                       help="retrain each from scratch (replacing the cached copy; the release is not read)")
    p_pre.add_argument("--release", action="store_true",
                       help="then write them into the repository's release (artefacts/<name>/ with SHA256SUMS)")
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.command == "grid":
            return _grid(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "run" and args.nproc is not None:
            args.set.append(f"nproc={args.nproc}")
        if args.command == "compare":
            return _compare(args)
        if args.command == "pretrain":
            return _pretrain(args)
        cfg = load_config(args.config, args.set)
        if args.command == "run":
            from .distributed import launch, launched_world
            from .records import record_path
            from .run import run

            world = launched_world()  # torchrun's rank, or a single process
            if world.size > 1 and cfg.nproc == 1:  # `torchrun --nproc-per-node N -m study run ...`
                cfg = dataclasses.replace(cfg, nproc=world.size)
            if world.size == 1 and cfg.nproc > 1:  # start the ranks, which run this command line
                return launch(cfg, _without_nproc(sys.argv[1:] if argv is None else list(argv)))
            if not world.main:
                logging.getLogger().setLevel(logging.WARNING)
            rec = run(cfg, args.out, progress=not args.no_progress, overwrite=args.overwrite, world=world)
            if rec is None:  # not rank 0: rank 0 evaluates and writes the record
                return 0
            q = next(iter(rec["quality"].values()))
            print(f"{rec['run_id']}: accuracy {q['accuracy']:.3f} (first \\boxed: {q['accuracy_first_boxed']:.3f}), "
                  f"{rec['compute']['train_seconds']:.1f} s training -> {record_path(args.out, rec['run_id'])}")
        elif args.command == "show":
            _show(cfg, args.index, args.color)
        else:
            _stats(cfg)
    except USER_ERRORS as e:
        print(f"study {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _grid(args) -> int:
    from .grid import describe, load_grid, run_grid, status
    from .slurm import split_overrides

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    config_sets, slurm_sets = split_overrides(args.set)
    grid = load_grid(args.grid, config_sets, quick=args.quick, base=args.base)
    if args.executor != "local" or args.status:
        return _submitted_grid(args, grid, slurm_sets)
    if slurm_sets or args.slurm:
        raise ValueError("--slurm and --set slurm.KEY=VALUE apply to --executor slurm or submitit-local only")
    if args.dry_run:
        from .grid import cells_for_jobs

        for cell in cells_for_jobs(grid.cells, args.jobs):  # --jobs sets the threads in the run ids
            # A run id names the teacher's and base's weights: unknown until they are built.
            print(f"{cell.run_id or '(not built)':12s}  {status(cell, args.out):8s} {cell.label} (seed {cell.seed})")
        return 0
    summary = run_grid(grid, args.out, jobs=args.jobs, progress=not args.no_progress)
    print(describe(summary))
    return 1 if summary["failures"] else 0


def _compare(args) -> int:
    from .compare import compare_folders

    if args.set and not args.reference:
        raise ValueError("--set needs --reference (the config it overrides)")
    reference = load_config(args.reference, args.set) if args.reference else None
    report = compare_folders(args.committed, args.reproduced, reference=reference, every=args.all)
    print(report.text(), end="")
    return 0 if report.ok else 1


def _pretrain(args) -> int:
    import dataclasses
    import time

    from .config import config_from_dict
    from .pretrain import pretrain_artefacts, study_configs
    from .release import RELEASE_DIR

    if args.config:
        configs = [load_config(c, args.set) for c in args.config]
    else:
        configs = [config_from_dict(dataclasses.asdict(c), args.set) for c in study_configs("configs/grids")]
    done, rebuilt = set(), set()
    for cfg in configs:
        started = time.perf_counter()
        rows = [r for r in pretrain_artefacts(cfg, force=args.force, release_to=RELEASE_DIR if args.release else None,
                                              rebuilt=rebuilt)
                if (r["name"], cfg.cache_dir) not in done]
        for r in rows:
            done.add((r["name"], cfg.cache_dir))
            how = {"trained": "trained", "released": "from the release", "cached": "cached"}[r["source"]]
            threads = f", {r['threads']} threads" if r["threads"] else ""
            out = f" -> {r['released_to']}" if "released_to" in r else ""
            print(f"{r['name']:22s} {how}{threads}  sha256 {r['sha256'][:12]}  {r['release']}{out}")
        print(f"  ({time.perf_counter() - started:.0f} s, cache {cfg.cache_dir})")
    return 0


def _submitted_grid(args, grid, slurm_sets: list[str]) -> int:
    """``study grid --executor slurm | submitit-local`` (submit; --dry-run: what would be
    submitted) and ``--status`` (the records and the jobs' state)."""
    from .grid import status
    from .slurm import describe_status, pending, slurm_config, submit, with_nproc

    slurm = slurm_config(grid, args.slurm, slurm_sets)
    cells = with_nproc(grid.cells, slurm.nproc)
    if args.status:
        print("\n".join(describe_status(grid, args.out, cells)))
        return 0
    if args.dry_run:
        todo = pending(cells, args.out)
        where = (f"partition {slurm.partition or '(default)'}, account {slurm.account or '(default)'}, "
                 f"{slurm.nodes} node(s) x {slurm.gpus_per_node} GPU(s), {slurm.cpus_per_task} CPUs, "
                 f"{slurm.mem_gb} GB, {slurm.time_minutes} min, at most {slurm.array_parallelism} at once"
                 if args.executor == "slurm" else "submitit's local executor")
        print(f"would submit {len(todo)} of {len(cells)} cells as one array ({where}); "
              f"{cells[0].config.nproc} process(es) per cell")
        for cell in cells:
            print(f"{cell.run_id or '(not built)':12s}  {status(cell, args.out):8s} {cell.label} (seed {cell.seed})")
        return 0
    jobs = submit(grid, args.out, args.executor, slurm)
    print(f"grid {grid.name}: submitted {len(jobs)} of {len(cells)} cells "
          f"({len(cells) - len(jobs)} have a record or a queued job)")
    for cell, job in jobs:
        print(f"  job {job.job_id}: {cell.label} (seed {cell.seed})")
    if args.executor == "slurm":
        print(f"follow them with: study grid {args.grid} --out {args.out} --executor slurm --status")
        return 0
    failed = 0
    for cell, job in jobs:  # the local executor's jobs are this machine's processes: wait for them
        try:
            outcome = job.result()
        except Exception as e:  # the job's process died (killed) or raised outside the cell
            outcome = {"status": "failed", "error": _one_line(e)}
        failed += outcome["status"] == "failed"
        print(f"  {cell.label} (seed {cell.seed}): {outcome['status']}"
              + (f": {outcome['error']}" if "error" in outcome else ""))
    return 1 if failed else 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line the ranks run: ``--nproc N`` becomes ``--set nproc=N`` (torchrun's own
    parser would take ``--nproc`` for an abbreviation of its ``--nproc-per-node``)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--nproc":
            out += ["--set", f"nproc={argv[i + 1]}"]
            i += 2
            continue
        if argv[i].startswith("--nproc="):
            out += ["--set", f"nproc={argv[i].split('=', 1)[1]}"]
        else:
            out.append(argv[i])
        i += 1
    return out


def _evaluate(args) -> int:
    from .run import rescore

    out = rescore(args.runs, args.run, args.set)
    q = next(iter(out["quality"].values()))
    settings = ", ".join(f"{k}={v}" for k, v in out["settings"].items())
    print(f"{args.run} ({settings}): accuracy {q['accuracy']:.3f} (first \\boxed: {q['accuracy_first_boxed']:.3f}), "
          f"{q['hit_token_limit']:.0%} at the token limit")
    return 0


def _show(cfg, index: int, color: bool) -> None:
    from .figures import example_text

    text, supervised = example_text(cfg, index, color)
    if not supervised:
        print(f"warning: this config supervises no token of example {index} (condition={cfg.condition}, "
              f"lsp={cfg.lsp}, window={cfg.window}, cut_after_think={cfg.cut_after_think})", file=sys.stderr)
    print(text)


def _stats(cfg) -> None:
    if cfg.corpus.source != "synthetic":
        return _hub_stats(cfg)
    from .data.pipeline import corpus_stats
    from .data.synthetic import make_splits
    from .models import get_tokenizer

    tokenizer, _ = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    table = corpus_stats(make_splits(cfg.corpus)["train"], tokenizer)
    print(f"{len(table)} training examples of the run's corpus (layout {cfg.corpus.layout})")
    _summary(table)


def _summary(table) -> None:
    summary = table.describe().T.rename(columns={"25%": "q1", "50%": "median", "75%": "q3"})
    print(summary[["mean", "std", "min", "q1", "median", "q3", "max"]].to_string(float_format=lambda x: f"{x:.3f}"))


def _hub_stats(cfg) -> None:
    """A hub corpus as the run reads it, rendered with the student's tokenizer
    (``base.model.pretrained``: a hub id or a local folder)."""
    from transformers import AutoTokenizer

    from .data.corpus import ANSWER_STATES, answer_stats, load_corpus

    tokenizer = AutoTokenizer.from_pretrained(cfg.base.model.pretrained)
    corpus = load_corpus(cfg.corpus, tokenizer)
    table = answer_stats(corpus.train, tokenizer)
    info = corpus.info
    rejected = ", ".join(f"{r} {n}" for r, n in corpus.rejected.items()) or "none"
    print(f"{len(table)} training examples of corpus {cfg.corpus.source} ({info['location']}"
          f"{', revision ' + info['revision'] if info['revision'] else ''}), rendered with {cfg.base.model.pretrained}")
    print(f"rows: {info['rows']} read, {info['kept']} kept, {sum(corpus.rejected.values())} rejected "
          f"({rejected}); split: {len(corpus.train)} train, {len(corpus.val)} validation")
    counts = table["answer"].value_counts()
    print("final answer (gold, else the last \\boxed{} of A) in the CoT: "
          + ", ".join(f"{state} {int(counts.get(state, 0))}" for state in ANSWER_STATES)
          + " (positions over the in_cot examples)")
    _summary(table)


if __name__ == "__main__":
    sys.exit(main())
