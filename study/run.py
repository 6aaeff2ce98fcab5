"""One distillation run, top to bottom: RunConfig -> data -> train -> evaluate -> record.

    study run --config configs/quick.yaml --out results/runs          # CLI
    study.run.run(RunConfig(lsp=0.5), "results/runs")                  # Python

The teacher and the base student come from the cache (trained on first use); the student is
a copy of the base student (or a fresh model with ``init: scratch``). The record is written
atomically as ``<out>/<run_id>.json`` with the raw lm-eval output beside it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import records, teacher_cache
from .config import RunConfig, run_id
from .data.pipeline import encode, prepare
from .data.synthetic import make_splits
from .evaluate import TASK, evaluate
from .models import build_model, check_compatible, get_tokenizer
from .pretrain import get_base, get_teacher, test_file
from .profiling import analytic_flops, profile_step, tensor_bytes
from .losses import IGNORE_INDEX
from .train import (LoopSettings, batch_schedule, loss_step, micro_batches, pick_device, supervised_targets,
                    teacher_rows, train_loop)

log = logging.getLogger(__name__)


def load_items(cfg: RunConfig, encoded):
    """The run's training items after truncation and supervision; fails if none is left."""
    items, empty = prepare(encoded, cfg)
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        msg = (f"{len(empty)} of {len(encoded)} training sequences have no supervised token under "
               f"condition={cfg.condition}, lsp={cfg.lsp}, window={cfg.window}, "
               f"cut_after_think={cfg.cut_after_think} (e.g. {shown})")
        if not items:
            raise ValueError(msg + "; nothing to train on: supervise a section the truncation keeps "
                             "(e.g. condition P+CoT+A or a larger lsp)")
        log.warning(msg + "; they are skipped and counted in the record")
    return items, empty


def loop_settings(cfg: RunConfig, n_items: int) -> LoopSettings:
    steps = cfg.epochs * (n_items // cfg.batch_size)
    return LoopSettings(
        steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_accum=cfg.grad_accum,
        weight_decay=cfg.weight_decay, warmup=cfg.warmup, grad_clip=cfg.grad_clip, seed=cfg.seed,
        alpha=cfg.alpha, loss=cfg.loss, temperature=cfg.temperature, beta=cfg.beta,
    )


def measure(model, teacher, steps: list[list[dict]], s: LoopSettings, device) -> dict:
    """Profile the given steps (lists of micro-batches) before training: FLOPs of the whole
    step, FLOPs of the teacher's forward alone, and the step's peak of live allocations.
    Gradients are cleared afterwards, so training starts from the same state."""

    def full_step(i):
        n_sup = sum(supervised_targets(b) for b in steps[i])
        for b in steps[i]:
            loss_step(model, teacher, b, s, n_sup, device)

    def teacher_step(i):  # the teacher's share of a step: its body, then its head on the rows
        for b in steps[i]:
            b = {k: v.to(device) for k, v in b.items()}
            rows = teacher_rows(teacher, b, b["labels"][:, 1:] != IGNORE_INDEX)
            rows.hidden @ rows.weight.T

    total = profile_step(full_step, len(steps), device)
    model.zero_grad(set_to_none=True)
    teacher_flops = profile_step(teacher_step, len(steps), device)["flops"] if teacher is not None else 0.0
    return {"flops": total["flops"], "teacher_flops": teacher_flops, "step_peak_bytes": total["step_peak_bytes"]}


def run(cfg: RunConfig, out_dir: str | Path, progress: bool = True) -> dict:
    rid = run_id(cfg)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()

    # --- models: cached teacher, student from the cached base (or scratch) --------------------
    tokenizer, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    teacher, teacher_meta = get_teacher(cfg)
    if cfg.init == "base":
        student, base_meta = get_base(cfg)
    else:
        torch.manual_seed(cfg.seed)  # independent of whatever the cache lookups trained
        student, base_meta = build_model(cfg.base.model, tokenizer, cfg.attn_implementation).to(device), None
    check_compatible(teacher, student, tokenizer, tokenizer)

    # --- data: tokenise, truncate, supervise; teacher rows from the cache --------------------
    encoded = encode(make_splits(cfg.corpus)["train"], tokenizer)
    items, empty = load_items(cfg, encoded)
    cache, cache_built = None, False
    if cfg.teacher_cache:
        cache, cache_built = teacher_cache.get_or_build(cfg, teacher, teacher_meta["id"], tokenizer, tok_key,
                                                        encoded, device)
        items = cache.attach(items)
    live = None if cache else teacher  # the model the training steps run, if any
    s = loop_settings(cfg, len(items))
    if s.steps < 1:
        raise ValueError(f"{len(items)} training items cannot fill one batch of {cfg.batch_size}")
    schedule = batch_schedule(len(items), s.batch_size, s.steps, s.seed)
    pad = tokenizer.pad_token_id
    all_shapes = [tuple(b["input_ids"].shape) for idx in schedule for b in micro_batches(items, idx, s.grad_accum, pad)]

    # --- measure (profiler, before training) and train --------------------------------------
    n_prof = min(cfg.profile_steps, s.steps)
    prof_steps = [micro_batches(items, schedule[i], s.grad_accum, pad) for i in range(n_prof)]
    prof = measure(student, live, prof_steps, s, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_loop(student, items, pad, s, device, teacher=live, desc=f"run {rid}", progress=progress)
    if device.type == "cuda":
        peak, peak_source = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    else:
        # Parameters of both models and AdamW's two moments persist; gradients and activations
        # are inside the profiled step's peak.
        static = (tensor_bytes(live) if live else 0) + 3 * tensor_bytes(student)
        peak, peak_source = static + prof["step_peak_bytes"], "cpu_profiler_step_allocations+parameters+adam_state"

    # --- evaluate ---------------------------------------------------------------------------
    data_file = test_file(cfg, cfg.corpus, tokenizer, tok_key)
    out_dir = Path(out_dir)
    eval_start = time.perf_counter()
    quality = evaluate(student, tokenizer, data_file, cfg.eval_examples, cfg.max_gen_toks,
                       cfg.eval_batch_size, raw_path=out_dir / f"{rid}.lm_eval.json", seed=cfg.seed)
    eval_seconds = time.perf_counter() - eval_start

    # --- record -----------------------------------------------------------------------------
    # The output heads run only where the next token is supervised, so they count per target.
    prof_shapes = [tuple(b["input_ids"].shape) for step in prof_steps for b in step]
    prof_targets = sum(supervised_targets(b) for step in prof_steps for b in step)
    sc, tc = student.config, teacher.config
    seen = [items[i] for idx in schedule for i in idx]  # every example the steps consumed
    sup = {k: sum(it.supervised[k] for it in seen) for k in ("P", "CoT", "A")}
    all_targets = sum(sup.values())
    student_sample = analytic_flops(sc, prof_shapes, head_tokens=prof_targets)
    student_run = analytic_flops(sc, all_shapes, head_tokens=all_targets)
    teacher_sample = analytic_flops(tc, prof_shapes, backward=False, head_tokens=prof_targets)
    teacher_run = analytic_flops(tc, all_shapes, backward=False, head_tokens=all_targets)
    scale = student_run / student_sample  # profiled steps -> whole run
    measured_student = prof["flops"] - prof["teacher_flops"]
    record = {
        "run_id": rid,
        "config": asdict(cfg),
        "env": records.env_info(device),
        "teacher": {"id": teacher_meta["id"], "accuracy": teacher_meta["accuracy"],
                    "parameters": teacher_meta["parameters"], "train_seconds": teacher_meta["train_seconds"],
                    "cached": cache is not None,
                    "cache": cache.record(cache_built) if cache else None},
        "student": {"init": cfg.init, "base_id": base_meta["id"] if base_meta else None,
                    "base_accuracy": base_meta["accuracy"] if base_meta else None,
                    "base_one_op_accuracy": base_meta["quality"]["one_op_facts"]["accuracy"] if base_meta else None,
                    "parameters": sum(p.numel() for p in student.parameters())},
        "data": {
            "examples": len(items),
            "empty_examples": len(empty),
            "empty_example_ids": empty[:20],
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
            # The whole run in this process: model loading (and any teacher, base or cache
            # build it triggered), profiling, training, evaluation.
            "wall_seconds": time.perf_counter() - started,
            "tokens_per_second": stats["tokens"] / stats["seconds"],
            "peak_memory_bytes": int(peak),
            "peak_memory_source": peak_source,
            # Student forward+backward FLOPs of the whole run: the profiler's count on the
            # profiled steps, scaled to the run by the analytic ratio of all steps to them.
            "flops_profiler": measured_student * scale,
            "flops_analytic": student_run,
            "flops_ratio": measured_student / student_sample,
            # Teacher forward FLOPs the run's steps spent: 0 when its rows came from the cache
            # (whose one-off cost is teacher.cache.build_flops_analytic). The "live" count is
            # what a teacher pass per step would cost, as in the paper's set-up.
            "flops_teacher_profiler": prof["teacher_flops"] * scale,
            "flops_teacher_analytic": teacher_run if live else 0.0,
            "flops_teacher_ratio": prof["teacher_flops"] / teacher_sample if live else None,
            "flops_teacher_live_analytic": teacher_run,
            "profiled_steps": n_prof,
            # The implementation profiled (and trained): only eager exposes the attention
            # matmuls to the profiler, so flops_ratio is ~1 under eager and < 1 under sdpa.
            "attention": cfg.attn_implementation,
            "dtype": "bfloat16" if device.type == "cuda" else "float32",
        },
        "quality": {TASK: quality},
        "curve": stats["curve"],
    }
    records.write(record, out_dir)
    return record
