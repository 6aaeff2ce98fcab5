"""Error of the top-k teacher cache against the exact one, as a function of k.

    python benchmarks/topk_error.py                    # default teacher, base student, 256 traces
    python benchmarks/topk_error.py --examples 64 --ks 1 4 16

Builds the exact and top-k caches of the default (cached) teacher over the first training
traces of the default corpus in a temporary folder, then compares the KD term (alpha = 1,
forward KL, P+CoT+A at lsp 1) that a student (the default base student, i.e. where every
distillation run starts) gets from each: the relative error of the loss value and the cosine
between the two gradients with respect to the student's parameters, with the storage per
token. Needs the default teacher and base student in ``cache/`` (``make reproduce`` trains them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from study.config import RunConfig
from study.data.pipeline import collate, encode, prepare
from study.data.synthetic import make_splits
from study.models import get_tokenizer
from study.pretrain import get_base, get_teacher
from study.teacher_cache import TeacherCache, build
from study.train import LoopSettings, loss_step


def kd_and_grad(student, items, pad_id):
    student.zero_grad(set_to_none=True)
    batch = collate(items, pad_id)
    n = int((batch["labels"][:, 1:] != -100).sum())
    s = LoopSettings(steps=1, batch_size=len(items), lr=0.0, alpha=1.0)
    kd = loss_step(student, None, batch, s, n, torch.device("cpu")).kd.item()
    grad = torch.cat([p.grad.flatten() for p in student.parameters()])
    return kd, grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    args = ap.parse_args()
    cfg = replace(RunConfig(), device="cpu")
    tokenizer, _ = get_tokenizer(cfg.tokenizer, cfg.cache_dir)
    teacher, _ = get_teacher(cfg)
    student, _ = get_base(cfg)
    encoded = encode(make_splits(cfg.corpus)["train"][: args.examples], tokenizer)
    items, _ = prepare(encoded, cfg)
    seqs = [(e.id, e.ids) for e in encoded]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exact_dir = Path(tmp) / "exact"
        exact_dir.mkdir()
        build(teacher, seqs, "exact", 0, exact_dir, tokenizer.pad_token_id, torch.device("cpu"))
        exact = TeacherCache.open(exact_dir)
        kd_exact, g_exact = kd_and_grad(student, exact.attach(items), tokenizer.pad_token_id)
        print(f"{args.examples} traces, V = {teacher.config.vocab_size}; exact: KD {kd_exact:.6f}, "
              f"{exact.meta['bytes_per_token']:.0f} bytes/token")
        print(f"{'k':>5} {'bytes/token':>12} {'KD':>10} {'rel. error':>11} {'grad cosine':>12} {'grad rel. err':>14}")
        for k in args.ks:
            d = Path(tmp) / f"top{k}"
            d.mkdir()
            build(teacher, seqs, "topk", k, d, tokenizer.pad_token_id, torch.device("cpu"))
            cache = TeacherCache.open(d)
            kd, g = kd_and_grad(student, cache.attach(items), tokenizer.pad_token_id)
            row = {"k": k, "bytes_per_token": cache.meta["bytes_per_token"], "kd": kd,
                   "kd_rel_error": abs(kd - kd_exact) / kd_exact,
                   "grad_cosine": torch.nn.functional.cosine_similarity(g, g_exact, dim=0).item(),
                   "grad_rel_error": ((g - g_exact).norm() / g_exact.norm()).item()}
            rows.append(row)
            print(f"{k:>5} {row['bytes_per_token']:>12.0f} {kd:>10.6f} {row['kd_rel_error']:>11.2e} "
                  f"{row['grad_cosine']:>12.6f} {row['grad_rel_error']:>14.2e}")
    print(json.dumps({"kd_exact": kd_exact, "rows": rows}))


if __name__ == "__main__":
    main()
