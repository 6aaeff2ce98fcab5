"""Where a training step's time goes: cProfile over the default run's cached-teacher steps.

    python benchmarks/step_breakdown.py --lsp 0.5 --steps 200 --threads 1

Uses the default teacher, base student and teacher-output cache (``make reproduce`` builds
them), the default batch schedule and optimiser, and prints the cumulative time of the step's
parts (student forward ``hidden_rows``, the chunked loss, backward, AdamW) per step. For tiny
models most of a step is per-operation overhead, which does not shrink with the sequence;
this is the measurement behind that statement in results/LOG.md. Not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from dataclasses import replace

import torch

from study import teacher_cache
from study.config import RunConfig
from study.data.pipeline import encode, prepare
from study.data.synthetic import make_splits
from study.models import get_tokenizer
from study.pretrain import get_base, get_teacher
from study.run import loop_settings
from study.train import batch_schedule, loss_step, make_optimizer, micro_batches, supervised_targets

PARTS = {"hidden_rows": "student forward", "chunked_distillation_loss": "chunked loss (fwd + grads)",
         "run_backward": "backward", "step": "AdamW step", "micro_batches": "collate", "clip_grad_norm_": "clipping"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lsp", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(RunConfig(), lsp=args.lsp, device="cpu")
    device = torch.device("cpu")
    tok, tok_key = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    teacher, meta = get_teacher(cfg)
    student, _ = get_base(cfg)
    encoded = encode(make_splits(cfg.corpus)["train"], tok)
    items, _ = prepare(encoded, cfg)
    cache, _ = teacher_cache.get_or_build(cfg, teacher, meta["weights_sha256"], tok, tok_key, encoded, device)
    items = cache.attach(items)
    s = replace(loop_settings(cfg, len(items)), steps=args.steps)
    schedule = batch_schedule(len(items), s.batch_size, s.steps, s.seed)
    opt, sched = make_optimizer(student, s)

    def steps():
        for idx in schedule:
            batches = micro_batches(items, idx, s.grad_accum, tok.pad_token_id)
            n = sum(supervised_targets(b) for b in batches)
            for b in batches:
                loss_step(student, None, b, s, n, device)
            torch.nn.utils.clip_grad_norm_(student.parameters(), s.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(steps)
    total = time.perf_counter() - start
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    print(f"lsp {args.lsp}, batch {s.batch_size}, {args.steps} steps, {args.threads} thread(s): "
          f"{1000 * total / args.steps:.1f} ms per step (under cProfile)")
    for name, label in PARTS.items():
        # A name can match several functions (e.g. "step"): take the largest, the outermost.
        cum = max((v[3] for (f, _, fn), v in stats.items()
                   if (fn == name or f"'{name}'" in fn) and ("optim" in f or name != "step")), default=0.0)
        print(f"  {label:<28} {1000 * cum / args.steps:6.2f} ms")


if __name__ == "__main__":
    main()
