"""One distillation run, top to bottom: RunConfig -> data -> train -> evaluate -> record.

    study run --config configs/quick.yaml --out results/runs          # CLI
    study.run.run(RunConfig(lsp=0.5), "results/runs")                  # Python

The teacher and the base student come from the cache (trained on first use); the student is
a copy of the base student (or a fresh model with ``init: scratch``). The record is written
atomically as ``<out>/<run_id>.json`` with the raw lm-eval output beside it.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import benchmarks, distributed, records, teacher_cache
from .config import RunConfig
from .data.corpus import load_corpus
from .data.pipeline import prepare
from .data.synthetic import make_splits
from .evaluate import TASK, ending_prior, evaluate, prepare_benchmarks, run_benchmarks
from .distributed import SINGLE, World
from .identity import DECODING_KEYS, execution, run_id, weights_sha256
from .models import (atomic_dir, build_model, check_heads, check_tokenizers, load_pretrained_tokenizer,
                     run_tokenizer, tokenizer_identity)
from .pretrain import get_base, get_teacher, test_file
from .scoring import scorer_name
from .profiling import analytic_flops, profile_step, tensor_bytes
from .train import (LoopSettings, batch_schedule, distiller, make_optimizer, micro_batch_shapes, micro_batches, pick_device,
                    supervised_targets, torch_threads, train_loop, train_step, check_schedule)

log = logging.getLogger(__name__)


def load_items(cfg: RunConfig, encoded):
    """The run's training items after truncation and supervision; fails if none is left."""
    items, empty = prepare(encoded, cfg)
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        msg = (f"{len(empty)} of {len(encoded)} training sequences have no supervised token under "
               f"condition={cfg.condition}, lsp={cfg.lsp}, window={cfg.window}, "
               f"cut_after_think={cfg.cut_after_think}, keep_answer={cfg.keep_answer} (e.g. {shown})")
        if not items:
            raise ValueError(msg + "; nothing to train on: supervise a section the truncation keeps "
                             "(e.g. condition P+CoT+A or a larger lsp)")
        log.warning(msg + "; they are skipped and counted in the record")
    return items, empty


def training_data(cfg: RunConfig, tokenizer):
    """The run's data, before any model: (corpus, its encoded training sequences, the training
    items after truncation and supervision, ids of sequences left with nothing supervised).
    Rows a hub corpus rejects are counted in ``corpus.rejected`` (the record's ``data.rejected``)
    and named in a warning; a run left with nothing to train on fails here."""
    corpus = load_corpus(cfg.corpus, tokenizer)
    encoded = corpus.encode(corpus.train, tokenizer)
    items, empty = load_items(cfg, encoded)
    return corpus, encoded, items, empty


def loop_settings(cfg: RunConfig, n_items: int, vocab: int = 0) -> LoopSettings:
    """The loop's settings; ``vocab``: the tokenizer's size, the head rows the losses read."""
    steps = cfg.epochs * (n_items // cfg.batch_size)
    return LoopSettings(vocab=vocab,
        steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_accum=cfg.grad_accum,
        weight_decay=cfg.weight_decay, warmup=cfg.warmup, grad_clip=cfg.grad_clip, seed=cfg.seed,
        alpha=cfg.alpha, loss=cfg.loss, temperature=cfg.temperature, beta=cfg.beta,
        cycle_momentum=cfg.cycle_momentum, lr_div_factor=cfg.lr_div_factor,
        lr_final_div_factor=cfg.lr_final_div_factor, decay_norms_and_embeddings=cfg.decay_norms_and_embeddings,
    )


def profiled_steps(step_tokens: list[int], n: int) -> list[int]:
    """Which optimiser steps to profile: the first ``n`` minus one, and the step whose largest
    micro-batch has the most padded tokens, so that the CPU peak bounds every step of the run."""
    first = list(range(min(n, len(step_tokens))))
    largest = max(range(len(step_tokens)), key=step_tokens.__getitem__)
    return first if largest in first else first[:-1] + [largest]


def _profile_training_steps(model, teacher, items, steps: list[list[int]], s: LoopSettings, pad: int, device,
                            world: World = SINGLE) -> dict:
    """``steps`` under the profiler, each a full ``train_step`` with a throwaway optimiser."""
    opt, sched = make_optimizer(model, s)
    return profile_step(lambda i: train_step(model, teacher, items, steps[i], pad, s, opt, sched, device, world),
                        len(steps), device)


def job_batches(items, indices: list[int], s: LoopSettings, pad: int, world: World = SINGLE) -> list[dict]:
    """The micro-batches every rank of the job collates for one optimiser step."""
    return [b for r in range(world.size) for b in micro_batches(items, World(r, world.size).share(indices),
                                                                 s.grad_accum, pad)]


def job_shapes(items, indices: list[int], s: LoopSettings, world: World = SINGLE) -> list[tuple[int, int]]:
    """The (batch, width) of every micro-batch of one step over all ranks, without collating."""
    return [shape for r in range(world.size)
            for shape in micro_batch_shapes(items, World(r, world.size).share(indices), s.grad_accum)]


def measure(model, teacher, items, schedule: list[list[int]], chosen: list[int], s: LoopSettings, pad: int,
            device, world: World = SINGLE) -> dict:
    """Profile the ``chosen`` optimiser steps of ``schedule`` exactly as training runs them
    (``train_step``: collation, forward, backward, clipping, the AdamW step), then put the
    student back as it was, so training starts from the same weights and a fresh optimiser.
    Returns the student's step FLOPs (matmuls, and the elementwise rest), the teacher's
    forward FLOPs on the same steps (a separate pass) and the peak of live allocations.
    On several processes (``model`` a sharded Distiller) every rank profiles its share: the
    FLOPs are the sums over ranks (the whole job), the peak is the largest rank's."""
    student = distiller(model).student
    snapshot = {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}
    steps = [schedule[i] for i in chosen]
    prof = _profile_training_steps(model, teacher, items, steps, s, pad, device, world)
    student.load_state_dict(snapshot)
    student.zero_grad(set_to_none=True)
    # AdamW and its scheduler reference each other: collect the throwaway pair now, not at some
    # later collection, or the CUDA peak of training would include a second AdamW state.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if prof["uncounted_ops"]:  # the profiler would count these matmuls as 0 FLOPs
        log.warning("torch.profiler counts no FLOPs for %s: flops_profiler is low", ", ".join(prof["uncounted_ops"]))

    def teacher_step(i):  # the teacher's share of a step: its body, then its head on the rows
        for b in micro_batches(items, world.share(steps[i]), s.grad_accum, pad):
            b = {k: v.to(device) for k, v in b.items()}
            distiller(model, teacher).teacher_logits(b, s)

    live = distiller(model, teacher).teacher is not None
    teacher_flops = profile_step(teacher_step, len(steps), device)["flops"] if live else 0.0
    flops, other, teacher_flops = world.sum([prof["flops"], prof["flops_other"], teacher_flops])
    peak = world.max([prof["step_peak_bytes"]])[0] if prof["step_peak_bytes"] is not None else None
    return {"flops": flops - teacher_flops, "flops_other": other, "teacher_flops": teacher_flops,
            "uncounted_ops": prof["uncounted_ops"], "step_peak_bytes": None if peak is None else int(peak)}


def run(cfg: RunConfig, out_dir: str | Path, progress: bool = True, overwrite: bool = False,
        world: World = SINGLE) -> dict | None:
    """Distil one student and write its record ``<out_dir>/<run_id>.json``. Everything that can
    be checked before work is checked first: the output folder, the device and that the run
    supervises something; an existing record is refused (before training) unless ``overwrite``.

    ``world``: this process's rank in a job of ``cfg.nproc`` processes started by torchrun
    (study/distributed.py); every rank trains its share, rank 0 alone evaluates, writes and
    returns the record (the others return None)."""
    started = time.perf_counter()
    if world.size != cfg.nproc:
        raise ValueError(f"nproc {cfg.nproc} but this process is one of {world.size}: launch the run with "
                         f"`study run --nproc {cfg.nproc}` or `torchrun --nproc-per-node {cfg.nproc} -m study run`")
    # Pretrained models: the student's tokenizer must be the teacher's (before any folder is made).
    tokenizer = pretrained_tokenizer(cfg) if cfg.base.model.pretrained else None
    out_dir = Path(out_dir)
    records.check_out_dir(out_dir)
    device = pick_device(cfg.device)
    if cfg.benchmarks:  # the benchmark files and the backend, before any model is built
        benchmarks.check_files(cfg.benchmarks, cfg.benchmark_dir)
        benchmarks.check_backend(cfg.eval_backend)
    device = distributed.start(world, device)
    try:
        with torch_threads(cfg.threads):  # the run's thread count, for this run only
            return _distil(cfg, out_dir, device, started, progress, overwrite, tokenizer, world)
    finally:
        distributed.stop(world)


def pretrained_tokenizer(cfg: RunConfig):
    """(tokenizer, key) of a run with pretrained models: the student's, checked to be the
    teacher's (one token-to-id map, one chat template)."""
    tokenizer, tok_key = run_tokenizer(cfg)
    check_tokenizers(load_pretrained_tokenizer(cfg.teacher.model, "teacher"), tokenizer)
    return tokenizer, tok_key


def fresh_student(cfg: RunConfig, tokenizer, device):
    """(student before training, the base's meta or None): the cached base student, or a
    fresh model seeded by the run (``init: scratch``)."""
    if cfg.init == "base":
        return get_base(cfg)
    torch.manual_seed(cfg.seed)  # independent of whatever the cache lookups trained
    return build_model(cfg.base.model, tokenizer, cfg.attn_implementation).to(device), None


def _distil(cfg: RunConfig, out_dir: Path, device, started: float, progress: bool, overwrite: bool,
            tokenizer=None, world: World = SINGLE) -> dict | None:
    # Several processes: rank 0 builds what the cache lacks (tokenizer, teacher, base student,
    # teacher rows) while the other ranks wait; then they read it.
    with world.rank0_first():
        # --- data: tokenise, truncate, supervise (fails here if nothing is supervised) -----------
        # The embedded tokenizer, or the student's (pretrained models: ``pretrained_tokenizer``).
        tokenizer, tok_key = tokenizer or run_tokenizer(cfg)
        hub_models = bool(cfg.teacher.model.pretrained)
        corpus, encoded, items, empty = training_data(cfg, tokenizer)
        s = loop_settings(cfg, len(items), len(tokenizer))
        if s.steps < 1:
            raise ValueError(f"{len(items)} training items cannot fill one batch of batch_size={cfg.batch_size}; "
                             "lower batch_size or raise corpus.train_examples")
        check_schedule(s)

        # --- models: cached (or pretrained) teacher, student from the base (or scratch) -----------
        teacher, teacher_meta = get_teacher(cfg)
        student, base_meta = fresh_student(cfg, tokenizer, device)
        check_heads(teacher, student, len(tokenizer))  # padded past the tokenizer: rows never read
        # Whether the teacher and the base (the student before distillation) end traces, read
        # off their distributions on the gold test traces (evaluate.ending_prior); the
        # student's after training. Rank 0 alone evaluates.
        gold = (make_splits(cfg.corpus)["test"][:cfg.eval_examples]
                if cfg.corpus.source == "synthetic" and world.main else None)
        teacher_prior = ending_prior(teacher, tokenizer, gold, cfg.eval_batch_size) if gold else None
        base_prior = ending_prior(student, tokenizer, gold, cfg.eval_batch_size) if gold and base_meta else None
        weights = {"teacher": teacher_meta["weights_sha256"], "base": base_meta["weights_sha256"] if base_meta else None}
        rid = run_id(cfg, weights)
        exe = execution(cfg)
        records.check_out_dir(out_dir, rid, overwrite)  # before any training
        # The benchmarks' prepared files (rows in their schema, prompts that fit the student's
        # context), before any training.
        prepared = prepare_benchmarks(cfg.benchmarks, cfg.benchmark_dir, tokenizer, Path(cfg.cache_dir) / "benchmarks",
                                      student.config.max_position_embeddings, cfg.max_gen_toks) if cfg.benchmarks else {}
        if overwrite and world.main:  # the old record, raw output and student go to <out>/.replaced/, never deleted
            records.set_aside(out_dir, rid)

        # --- teacher rows from the cache; a cached teacher leaves the device ----------------------
        cache, cache_built = None, False
        if cfg.teacher_cache:
            cache, cache_built = teacher_cache.get_or_build(cfg, teacher, weights["teacher"], tokenizer, tok_key,
                                                            encoded, device)
            items = cache.attach(items)  # memory-mapped: each rank reads the rows of its share
    tc = teacher.config
    live = None if cache else teacher  # the model the training steps run, if any
    if live is None:  # its outputs are cached: free it, so peak memory counts what training holds
        del teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()
    schedule = batch_schedule(len(items), s.batch_size, s.steps, s.seed)
    pad = tokenizer.pad_token_id
    step_shapes = [job_shapes(items, idx, s, world) for idx in schedule]  # every rank's micro-batches
    all_shapes = [shape for step in step_shapes for shape in step]
    largest = [max(b * t for b, t in step) for step in step_shapes]

    # --- shard (several processes), measure (profiled steps on a snapshot of the student), train
    if cfg.activation_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        student.train()  # Hugging Face recomputes only in training mode (the profiled steps too)
    model, teacher_arg = student, live
    if world.size > 1:  # one sharded Distiller holds the student and the live teacher
        model, teacher_arg = distributed.shard(student, live, world, device), None
    chosen = profiled_steps(largest, cfg.profile_steps)
    prof = measure(model, teacher_arg, items, schedule, chosen, s, pad, device, world)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_loop(model, items, pad, s, device, teacher=teacher_arg, desc=f"run {rid}", progress=progress,
                       world=world)
    resident = tensor_bytes(student) + (tensor_bytes(live) if live is not None else 0)
    teacher_where = "live teacher resident" if live is not None else "teacher freed (outputs cached)"
    ranks = (f"; per process: the largest of the {world.size} ranks' peaks (each holds its shard of the "
             f"parameters, gradients and AdamW state and the activations of its share of every batch)"
             if world.size > 1 else "")
    if device.type == "cuda":
        peak, peak_source = world.max([torch.cuda.max_memory_allocated(device)])[0], "cuda_max_memory_allocated"
        scope = (f"CUDA allocator peak over all {s.steps} training steps (parameters, gradients, AdamW "
                 f"state, activations, batches); {teacher_where}{ranks}")
    else:
        resident = world.max([resident])[0]  # the rank's own shards (equal sizes on every rank, up to rounding)
        peak, peak_source = resident + prof["step_peak_bytes"], "cpu_profiler_training_steps+resident_parameters"
        scope = (f"parameters resident before training + the peak of live allocations (torch.profiler) over "
                 f"{len(chosen)} training steps run as training runs them (the collated batch, with its "
                 f"teacher rows when cached; forward, backward, clipping, AdamW step and its state), including the "
                 f"step with the largest micro-batch; {teacher_where}; memory-mapped cache pages not counted{ranks}")
    if world.size > 1:  # rank 0 gathers the trained weights into a plain student; the others are done
        full = distributed.full_state_dict(student, world)
        if not world.main:
            return None
        student = fresh_student(cfg, tokenizer, device)[0]
        student.load_state_dict(full)

    # --- evaluate, save ----------------------------------------------------------------------
    # A hub corpus has no synthetic test split: its quality is the benchmarks' (below).
    quality, eval_seconds = None, 0.0
    if cfg.corpus.source == "synthetic":
        data_file = test_file(cfg, cfg.corpus, tokenizer, tok_key)
        eval_start = time.perf_counter()
        quality = evaluate(student, tokenizer, data_file, cfg.eval_examples, cfg.max_gen_toks,
                           cfg.eval_batch_size, raw_path=out_dir / f"{rid}.lm_eval.json", seed=cfg.seed,
                           **decoding(cfg))
        quality["ending_prior"] = ending_prior(student, tokenizer, gold, cfg.eval_batch_size)
        eval_seconds = time.perf_counter() - eval_start
    student_weights = weights_sha256(student)
    if cfg.save_student:
        save_student(student, tokenizer, out_dir, rid)
    bench, bench_seconds = None, None
    if cfg.benchmarks:
        bench_start = time.perf_counter()
        bench = _benchmarks(cfg, student, tokenizer, prepared, out_dir, rid)
        bench_seconds = time.perf_counter() - bench_start

    # --- record -----------------------------------------------------------------------------
    # The output heads run only where the next token is supervised, so they count per target.
    prof_batches = [b for i in chosen for b in job_batches(items, schedule[i], s, pad, world)]
    prof_shapes = [tuple(b["input_ids"].shape) for b in prof_batches]
    prof_targets = sum(supervised_targets(b) for b in prof_batches)
    sc = student.config
    seen = [items[i] for idx in schedule for i in idx]  # every example the steps consumed
    sup = {k: sum(it.supervised[k] for it in seen) for k in ("P", "CoT", "A")}
    all_targets = sum(sup.values())
    student_sample = analytic_flops(sc, prof_shapes, head_tokens=prof_targets)
    student_run = analytic_flops(sc, all_shapes, head_tokens=all_targets)
    teacher_sample = analytic_flops(tc, prof_shapes, backward=False, head_tokens=prof_targets)
    teacher_run = analytic_flops(tc, all_shapes, backward=False, head_tokens=all_targets)
    record = {
        "run_id": rid,
        "config": asdict(cfg),
        "env": {**records.env_info(device), "execution": exe, "world_size": world.size, "launcher": world.launcher},
        "teacher": {"id": teacher_meta["id"], "weights_sha256": weights["teacher"],
                    # Pretrained: scored on no synthetic split (None), and where it came from.
                    "accuracy": teacher_meta["accuracy"],
                    "quality": teacher_meta["quality"]["test"] if teacher_meta["quality"] else None,
                    **checkpoint_fields(teacher_meta),
                    "parameters": teacher_meta["parameters"], "train_seconds": teacher_meta["train_seconds"],
                    "built": teacher_meta.get("built"),
                    "ending_prior": teacher_prior,
                    "cached": cache is not None,
                    "cache": cache.record(cache_built) if cache else None},
        "student": {"init": cfg.init, "base_id": base_meta["id"] if base_meta else None,
                    "base_weights_sha256": weights["base"],
                    # How the base was built (its threads, CPU kernels, torch), as teacher.built.
                    "base_built": base_meta.get("built") if base_meta else None,
                    # The base scored on this run's test split, by the base's evaluation settings.
                    "base_accuracy": base_meta["accuracy"] if base_meta else None,
                    "base_one_op_accuracy": (base_meta["quality"]["one_op_facts"]["accuracy"]
                                             if base_meta and base_meta["quality"] else None),
                    # All of it: whether the base already ends its traces (closed_think, ended_eos).
                    "base_quality": base_meta["quality"]["test"] if base_meta and base_meta["quality"] else None,
                    "base_ending_prior": base_prior,
                    **({f"base_{k}": v for k, v in checkpoint_fields(base_meta).items()} if hub_models else {}),
                    "parameters": sum(p.numel() for p in student.parameters()),
                    "weights_sha256": student_weights,
                    "saved": str(student_path(out_dir, rid).name) if cfg.save_student else None},
        "data": {
            "examples": len(items),
            "empty_examples": len(empty),
            "empty_example_ids": empty[:20],
            "rejected": corpus.rejected,  # corpus rows dropped per reason ({} for the synthetic corpus)
            "steps": s.steps,
            "tokens_forwarded": stats["tokens"],
            "tokens_padded": stats["tokens_padded"],
            # What the same steps would forward without truncation.
            "tokens_full_sequences": sum(it.full_length for it in seen),
            "tokens_supervised": all_targets,
            "supervised_by_section": sup,
        },
        "compute": {
            "train_seconds": stats["seconds"],
            "eval_seconds": eval_seconds,
            # The whole run in this process (rank 0's): model loading (and any teacher, base or
            # cache build it triggered), profiling, training, evaluation. FLOPs and tokens are
            # the whole job's (every rank's), the peak memory is per process.
            "wall_seconds": time.perf_counter() - started,
            "tokens_per_second": stats["tokens"] / stats["seconds"],
            "peak_memory_bytes": int(peak),
            "peak_memory_source": peak_source,
            "peak_memory_scope": scope,
            # FLOPs: measured = torch.profiler's matmul count on the profiled steps (student
            # forward + backward; the teacher's forward apart); the run's totals are that count
            # scaled by the analytic ratio of all steps to the profiled ones (extrapolated).
            "flops_profiler": prof["flops"] * student_run / student_sample,
            "flops_profiler_measured": prof["flops"],
            "flops_profiler_elementwise_measured": prof["flops_other"],
            "flops_profiler_method": (f"torch.profiler matmul FLOPs of {len(chosen)} profiled steps x analytic "
                                      "(all steps / profiled steps); elementwise FLOPs reported apart"),
            "flops_analytic": student_run,
            "flops_analytic_profiled": student_sample,
            "flops_ratio": prof["flops"] / student_sample,
            # Teacher forward FLOPs the run's steps spent: 0 when its rows came from the cache
            # (whose one-off cost is teacher.cache.build_flops_analytic). The "live" count is
            # what a teacher pass per step would cost, as in the paper's set-up.
            "flops_teacher_profiler": prof["teacher_flops"] * teacher_run / teacher_sample if live else 0.0,
            "flops_teacher_profiler_measured": prof["teacher_flops"],
            "flops_teacher_analytic": teacher_run if live else 0.0,
            "flops_teacher_ratio": prof["teacher_flops"] / teacher_sample if live else None,
            "flops_teacher_live_analytic": teacher_run,
            "flops_uncounted_ops": prof["uncounted_ops"],
            "profiled_steps": len(chosen),
            "profiled_step_indices": chosen,
            # The implementation profiled (and trained): only eager exposes the attention
            # matmuls to the profiler, so flops_ratio is ~1 under eager and < 1 under sdpa.
            "attention": cfg.attn_implementation,
            "dtype": exe["dtype"],
        },
        # The synthetic test split's; a hub corpus has none, and its headline is the benchmarks'.
        "quality": {TASK: quality} if quality is not None else bench,
        "curve": stats["curve"],
    }
    if corpus.info:  # where a hub corpus came from (its resolved revision, files, rows read and kept)
        record["data"]["corpus"] = corpus.info
    if hub_models:  # the student's tokenizer, which rendered the corpus (equal to the teacher's)
        record["data"]["tokenizer"] = {"id": tok_key, "source": cfg.base.model.pretrained,
                                       **tokenizer_identity(tokenizer)}
    if cfg.benchmarks:  # the paper's benchmarks (a synthetic run's headline stays its test split)
        record["benchmarks"] = bench
        record["compute"]["benchmark_seconds"] = bench_seconds
    records.write(record, out_dir, overwrite=overwrite)
    return record


def checkpoint_fields(meta: dict) -> dict:
    """Where a pretrained teacher or base came from (hub id or folder, revision asked for and
    resolved: the hub commit, None for a local folder, named by its weights hash); the dtype it
    ran in and its head rows. Empty for one trained here."""
    keys = ("pretrained", "revision", "resolved_revision", "dtype", "vocab_rows")
    return {k: meta[k] for k in keys} if "pretrained" in meta else {}


def _benchmarks(cfg: RunConfig, student, tokenizer, prepared, out_dir: Path, rid: str) -> dict:
    """The run's benchmarks, sampled from the distilled student; vLLM reads it from a folder
    (the saved student, or a temporary copy when the run saves none)."""
    import tempfile

    args = dict(samples=cfg.samples, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                max_gen_toks=cfg.max_gen_toks, batch_size=cfg.eval_batch_size, backend=cfg.eval_backend,
                seed=cfg.seed, raw_path=out_dir / f"{rid}{records.BENCHMARKS_RAW}")
    if cfg.eval_backend == "hf" or cfg.save_student:
        return run_benchmarks(student, tokenizer, prepared, model_path=student_path(out_dir, rid), **args)
    with tempfile.TemporaryDirectory() as tmp:
        student.save_pretrained(tmp), tokenizer.save_pretrained(tmp)
        return run_benchmarks(student, tokenizer, prepared, model_path=Path(tmp), **args)


def student_path(out_dir: str | Path, rid: str) -> Path:
    return Path(out_dir) / f"{rid}.student"


def save_student(student, tokenizer, out_dir: Path, rid: str) -> Path:
    """The distilled student in Hugging Face format beside its record (``study evaluate``
    re-scores it), written whole or not at all."""
    path = student_path(out_dir, rid)
    if path.exists():  # left by a run killed before its record (a recorded one was set aside)
        shutil.rmtree(path)
    return atomic_dir(path, lambda tmp: (student.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))


EVAL_KEYS = ("eval_examples", "max_gen_toks", "eval_batch_size", "samples", "eval_temperature", "eval_top_p")


def decoding(cfg: RunConfig) -> dict:
    """How the synthetic test split is decoded (study.evaluate.evaluate's keywords)."""
    return dict(samples=cfg.samples, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p)


def rescore(runs_dir: str | Path, rid: str, overrides: list[str] = ()) -> dict:
    """Score the saved student of run ``rid`` again, with evaluation settings changed by
    ``overrides`` (``max_gen_toks=512``, ``eval_examples=100``, ``eval_batch_size=10``).
    The result, with its settings, goes to ``<rid>.student/evaluations/<key>.json`` (the raw
    lm-eval output beside it); the record itself is never changed. Returns that result."""
    from transformers import AutoTokenizer

    from .config import config_from_dict, config_hash, parse_override
    from .models import load_model, tokenizer_key

    runs_dir = Path(runs_dir)
    rec_path = records.record_path(runs_dir, rid)
    if not rec_path.exists():
        raise FileNotFoundError(f"no record {rec_path}: give the run id of a record in --runs {runs_dir}")
    rec = records.read(rec_path)
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in EVAL_KEYS:
            raise ValueError(f"study evaluate changes evaluation settings only ({', '.join(EVAL_KEYS)}), "
                             f"not {key}: train a new run with `study run --set {text}` instead")
    cfg = config_from_dict(rec["config"], list(overrides))
    if cfg.corpus.source != "synthetic":
        raise ValueError(f"run {rid} trained on corpus {cfg.corpus.source!r}, which has no synthetic test split: "
                         "study evaluate re-scores that split only; the run's quality is its benchmarks")
    folder = student_path(runs_dir, rid)
    if not folder.exists():
        raise FileNotFoundError(f"run {rid} has no saved student ({folder}); it ran with save_student=false. "
                                f"Rerun it with `study run --set save_student=true --overwrite`")
    device = pick_device(cfg.device)
    student = load_model(folder, cfg.attn_implementation, device)
    expected = rec["student"].get("weights_sha256")
    if expected and weights_sha256(student) != expected:
        raise ValueError(f"{folder}: its weights differ from those run {rid} recorded; the files were changed")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = {k: getattr(cfg, k) for k in EVAL_KEYS}
    if cfg.greedy:  # keyed as before sampling was offered
        settings = {k: v for k, v in settings.items() if k not in DECODING_KEYS}
    key = {**settings, "attn_implementation": cfg.attn_implementation, "execution": execution(cfg),
           "scorer": scorer_name()}
    out = folder / "evaluations" / f"{config_hash(key)}.json"
    if out.exists():
        return records.read(out)
    data_file = test_file(cfg, cfg.corpus, tokenizer, tokenizer_key(cfg.tokenizer))
    quality = evaluate(student, tokenizer, data_file, cfg.eval_examples, cfg.max_gen_toks, cfg.eval_batch_size,
                       raw_path=out.with_suffix(".lm_eval.json"), seed=cfg.seed, **decoding(cfg))
    result = {"run_id": rid, "settings": settings, "quality": {TASK: quality},
              "env": records.env_info(device)}
    records.atomic_write_text(out, json.dumps(result, indent=1))
    return result
