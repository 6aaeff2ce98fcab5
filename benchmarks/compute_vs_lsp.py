"""Compute against the lead-span proportion at the paper's model sizes, and the peak memory of a
KD training step against plain fine-tuning (SFT) of the same student.

    python benchmarks/compute_vs_lsp.py                                  # CPU-sized (see below)
    python benchmarks/compute_vs_lsp.py --device cuda --models 0.6B 1.7B 4B --teacher 4B \
        --layers 0 --attn sdpa --peak-tflops 989 --out results/compute_vs_lsp_gpu.md  # one GPU, as is

Students are Qwen3-0.6B, 1.7B and 4B architectures (their published configs: hidden size,
layers, heads, KV heads, MLP width, tied embeddings), randomly initialised: nothing is
downloaded. A step is ``study.train.train_step``, exactly as training runs it (collation,
student forward and backward through the chunked loss, clipping, AdamW), on a batch of
``--batch`` sequences drawn from a length distribution like the paper's corpora (log-normal,
median 0.45 x max, clipped to [max / 16, max], max 4,096 tokens), the first 8% of every
sequence unsupervised (the prompt), truncated to its lead span at every lsp. The teacher is
either live (a ``--teacher`` architecture, forward under no_grad each step) or cached (top-k
rows in the batch, k = 64, as the teacher cache stores them at this vocabulary).

Per (student, teacher mode, lsp): the mean wall time of ``--steps`` timed steps after one
profiled step, tokens/s (tokens forwarded, padding excluded), peak memory (CUDA: the
allocator's peak over the timed steps; CPU: the study's measure: parameters resident + the
profiler's peak of live allocations during the profiled step, AdamW state included),
torch.profiler's matmul FLOPs of the profiled step against the analytic count (student forward
+ backward and, when live, the teacher's forward), and MFU = analytic FLOPs / step time /
device peak (``--peak-tflops``; on CPU the measured rate of a 2,048 x 2,048 fp32 matmul).

Memory on a GPU at full size: the 4B student with fp32 AdamW holds 64 GB of weights, gradients
and moments before any activation, and eager attention keeps a T x T matrix per head and layer:
use ``--attn sdpa`` (the profiler then misses the fused attention, so the FLOP ratio drops below 1)
and a card of more than 80 GB for 4B, or ``--models 0.6B 1.7B`` on 80 GB.

The memory figure: one whole training step (not profiled) of KD (alpha 0.5, teacher cached
and live) against SFT (alpha 0: cross-entropy only, the same chunked head) of the smallest
student, at V = 151,936 and one sequence of T = 4,096 tokens, all supervised. Goal: KD at most
1.2 x SFT.

On CPU the layer count is reduced (``--layers``, default 1 decoder layer per model; 0 = as
published), and so are the sizes of the lsp table (``--vocab 8192 --max-len 256``);
the memory figure keeps V = 151,936 and T = 4,096 (``--memory-layers``, default as ``--layers``)
and leaves out its live-teacher row unless ``--memory-live``. Each memory row runs in a fresh
process (under ``--limit-gb`` of address space on CPU), so one row's freed memory is not another's.
Not a test: timings depend on the machine; compare rows of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from study.data.pipeline import TrainItem
from study.profiling import analytic_flops, profile_step, tensor_bytes
from study.train import LoopSettings, make_optimizer, micro_batch_shapes, pick_device, train_step

# Published Qwen3 configs (hidden, layers, heads, KV heads, head dim, MLP width, tied embeddings).
ARCH = {"0.6B": (1024, 28, 16, 8, 128, 3072, True), "1.7B": (2048, 28, 16, 8, 128, 6144, True),
        "4B": (2560, 36, 32, 8, 128, 9728, True), "8B": (4096, 36, 32, 8, 128, 12288, False)}
VOCAB = 151_936  # head rows of every Qwen3 checkpoint
TOKENS = 151_669  # its tokenizer's tokens: the losses read these rows only
TOPK = 64
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense bf16


def qwen3(name: str, layers: int, vocab: int, attn: str) -> Qwen3ForCausalLM:
    h, n, heads, kv, hd, ff, tied = ARCH[name]
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers or n, num_attention_heads=heads,
                      num_key_value_heads=kv, head_dim=hd, intermediate_size=ff, tie_word_embeddings=tied,
                      max_position_embeddings=40960, pad_token_id=0, attn_implementation=attn)
    return Qwen3ForCausalLM(cfg)


def lengths(n: int, max_len: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(min(max_len, max(max_len // 16, rng.lognormvariate(math.log(0.45 * max_len), 0.55))))
            for _ in range(n)]


def items_for(lens: list[int], lsp: float, vocab: int, cached: bool, seed: int) -> list[TrainItem]:
    """Lead spans of random sequences, the first 8% unsupervised; ``cached``: top-k teacher rows."""
    g = torch.Generator().manual_seed(seed)
    real = TOKENS if vocab == VOCAB else vocab  # a Qwen3 head's padded rows are no token
    out = []
    for i, n in enumerate(lens):
        ids = torch.randint(1, real, (n,), generator=g).tolist()
        labels = [-100 if t < max(1, int(0.08 * n)) else x for t, x in enumerate(ids)]
        keep = max(1, int(n * lsp))
        ids, labels = ids[:keep], labels[:keep]
        teacher = None
        if cached:
            teacher = {"topk_indices": torch.randint(0, real, (keep, TOPK), generator=g, dtype=torch.int32),
                       "topk_logprobs": torch.randn(keep, TOPK + 1, generator=g).log_softmax(-1)}
        out.append(TrainItem(f"seq{i}", ids, labels, {"P": 0, "CoT": sum(x != -100 for x in labels[1:]), "A": 0},
                             n, teacher))
    return out


def device_peak_flops(device, given_tflops: float | None) -> tuple[float, str]:
    if given_tflops:
        return given_tflops * 1e12, f"{given_tflops:g} TFLOP/s (given)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{tflops:g} TFLOP/s ({name}, dense bf16 datasheet)"
        raise SystemExit(f"unknown GPU {name}: pass --peak-tflops")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    rate = 5 * 2 * 2048**3 / (time.perf_counter() - start)
    return rate, f"{rate / 1e9:.0f} GFLOP/s (measured fp32 2048^2 matmul, {torch.get_num_threads()} thread(s))"


def measure(student, teacher, items: list[TrainItem], batch: int, steps: int, alpha: float, device) -> dict:
    """One profiled step (FLOPs; CPU peak memory), then ``steps`` timed steps (0: none), each
    on its own batch of ``batch`` items."""
    s = LoopSettings(steps=max(2, steps + 1), batch_size=batch, lr=1e-5, warmup=0.3, alpha=alpha, vocab=TOKENS
                     if student.config.vocab_size == VOCAB else 0)
    opt, sched = make_optimizer(student, s)
    student.train()
    batches = [list(range(i * batch, (i + 1) * batch)) for i in range(steps + 1)]
    resident = tensor_bytes(student) + (tensor_bytes(teacher) if teacher is not None else 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prof = profile_step(lambda i: train_step(student, teacher, items, batches[0], 0, s, opt, sched, device), 1, device)
    if not steps:
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident + prof["step_peak_bytes"]
        return {"peak_bytes": int(peak), "resident_bytes": resident}
    times, tokens = [], 0
    for idx in batches[1:]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = train_step(student, teacher, items, idx, 0, s, opt, sched, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        tokens += out["tokens"]
    shapes = micro_batch_shapes(items, batches[0], 1)
    targets = sum(sum(x != -100 for x in items[j].labels[1:]) for j in batches[0])
    analytic = analytic_flops(student.config, shapes, head_tokens=targets)
    if teacher is not None:
        analytic += analytic_flops(teacher.config, shapes, backward=False, head_tokens=targets)
    timed_shapes = [sh for idx in batches[1:] for sh in micro_batch_shapes(items, idx, 1)]
    timed_targets = sum(sum(x != -100 for x in items[j].labels[1:]) for idx in batches[1:] for j in idx)
    timed_flops = analytic_flops(student.config, timed_shapes, head_tokens=timed_targets)
    if teacher is not None:
        timed_flops += analytic_flops(teacher.config, timed_shapes, backward=False, head_tokens=timed_targets)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resident + prof["step_peak_bytes"])
    return {"step_seconds": sum(times) / len(times), "tokens_per_second": tokens / sum(times),
            "peak_bytes": int(peak), "flops_profiler": prof["flops"], "flops_analytic": analytic,
            "flops_per_second": timed_flops / sum(times)}


def build(name: str, layers: int, vocab: int, attn: str, device, frozen: bool = False):
    torch.manual_seed(0)
    model = qwen3(name, layers, vocab, attn).to(device)
    if frozen:
        model = model.to(torch.bfloat16) if device.type == "cuda" else model
        model.eval().requires_grad_(False)
    return model


MEMORY_ROWS = {"sft": "SFT (alpha 0)", "cached": "KD, teacher cached (top-64)", "live": "KD, teacher live"}


def memory_row(mode: str, args, device) -> dict:
    """One row of the memory figure (run in its own process): the profiled step only."""
    name = args.models[0]
    student = build(name, args.memory_layers, VOCAB, args.memory_attn, device)
    teacher = build(args.teacher, args.memory_layers, VOCAB, args.memory_attn, device, frozen=True) \
        if mode == "live" else None
    items = items_for([4096], 1.0, VOCAB, mode == "cached", seed=1)
    s = LoopSettings(steps=2, batch_size=1, lr=1e-5, warmup=0.3, alpha=0.0 if mode == "sft" else 0.5, vocab=TOKENS)
    opt, sched = make_optimizer(student, s)
    student.train()
    resident = tensor_bytes(student) + (tensor_bytes(teacher) if teacher is not None else 0)
    # No profiler here: at this size its records of the chunked top-k loss outgrow the step
    # itself (> 22 GB against 2.3 GB, results/LOG.md). CPU: the rise of the process's peak
    # resident size over its size before the step, plus the parameters already resident.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss()
    train_step(student, teacher, items, [0], 0, s, opt, sched, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resident + max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    return {"peak_bytes": int(peak), "resident_bytes": resident,
            "without_teacher_weights": int(peak) - (tensor_bytes(teacher) if teacher is not None else 0)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="+", default=["0.6B", "1.7B", "4B"], choices=list(ARCH))
    p.add_argument("--teacher", default="1.7B", choices=list(ARCH), help="the live teacher's architecture")
    p.add_argument("--layers", type=int, default=None, help="decoder layers per model (0: as published; CPU default 1)")
    p.add_argument("--vocab", type=int, default=None, help=f"head rows of the lsp table (GPU default {VOCAB}, CPU 8192)")
    p.add_argument("--max-len", type=int, default=None, help="longest sequence (GPU default 4096, CPU 256)")
    p.add_argument("--batch", type=int, default=1, help="sequences per step")
    p.add_argument("--steps", type=int, default=1, help="timed steps per row (after the profiled one)")
    p.add_argument("--lsp", nargs="+", type=float, default=[round(0.1 * i, 1) for i in range(1, 11)])
    p.add_argument("--memory-layers", type=int, default=None, help="layers of the KD/SFT memory figure's models")
    p.add_argument("--no-memory", action="store_true", help="skip the KD against SFT memory figure")
    p.add_argument("--memory-only", action="store_true", help="only the KD against SFT memory figure")
    p.add_argument("--memory-row", choices=list(MEMORY_ROWS), help=argparse.SUPPRESS)  # one row, in a child
    p.add_argument("--memory-live", action=argparse.BooleanOptionalAction, default=None,
                   help="the memory figure's live-teacher row too (GPU default; on CPU it adds the teacher's "
                        "forward at T = 4,096 and V = 151,936, minutes)")
    p.add_argument("--attn", default="eager", help="eager: the profiler sees the attention matmuls")
    p.add_argument("--memory-attn", default="sdpa",
                   help="attention of the memory figure (sdpa: no T x T score matrix kept per head, as trained)")
    p.add_argument("--limit-gb", type=float, default=12.0,
                   help="CPU: address-space cap of this process, so a row that does not fit fails (MemoryError) "
                        "instead of taking the machine down; 0 = none")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out", default=None, help="Markdown table (a .json with the rows is written beside it)")
    args = p.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    if not gpu and args.limit_gb:
        cap = int(args.limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if args.memory_row:  # a child of the memory figure: one row, as JSON
        print(json.dumps(memory_row(args.memory_row, args, device)))
        return
    layers = args.layers if args.layers is not None else (0 if gpu else 1)
    vocab = args.vocab or (VOCAB if gpu else 8192)
    max_len = args.max_len or (4096 if gpu else 256)
    batch = args.batch
    peak, peak_what = device_peak_flops(device, args.peak_tflops)
    lens = lengths(batch * (args.steps + 1), max_len, seed=0)
    started = time.perf_counter()
    where = (f"{device} ({torch.cuda.get_device_name(device)})" if gpu else f"cpu, {torch.get_num_threads()} thread(s)")
    layer_note = "as published" if layers == 0 else f"{layers} decoder layer(s) per model (reduced)"
    lines = [f"device {where}; {layer_note}; V = {vocab:,}; lengths {lens} (max {max_len}), batch {batch}; "
             f"teacher live = Qwen3-{args.teacher} architecture, cached = top-{TOPK} rows; peak {peak_what}", "",
             "| student | teacher | lsp | step s | tokens/s | peak MiB | profiler GFLOP | analytic GFLOP | ratio | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for name in [] if args.memory_only else args.models:
        student0 = build(name, layers, vocab, args.attn, device)
        state = {k: v.clone() for k, v in student0.state_dict().items()}
        for mode in ("cached", "live"):
            teacher = build(args.teacher, layers, vocab, args.attn, device, frozen=True) if mode == "live" else None
            for lsp in args.lsp:
                student0.load_state_dict(state)
                items = items_for(lens, lsp, vocab, mode == "cached", seed=1)
                r = measure(student0, teacher, items, batch, args.steps, 0.5, device)
                gc.collect()
                r |= {"student": name, "teacher": mode, "lsp": lsp, "mfu": r["flops_per_second"] / peak}
                rows.append(r)
                lines.append(f"| {name} | {mode} | {lsp:g} | {r['step_seconds']:.3f} | {r['tokens_per_second']:.0f} | "
                             f"{r['peak_bytes'] / 2**20:.0f} | {r['flops_profiler'] / 1e9:.1f} | "
                             f"{r['flops_analytic'] / 1e9:.1f} | {r['flops_profiler'] / r['flops_analytic']:.3f} | "
                             f"{r['mfu']:.1%} |")
                print(lines[-1], flush=True)
            del teacher
            gc.collect()  # AdamW and its scheduler reference each other
        del student0
    memory = None
    if not args.no_memory:
        mlayers = args.memory_layers if args.memory_layers is not None else layers
        name = args.models[0]
        lines += ["", f"Peak memory of one whole training step at V = {VOCAB:,}, T = 4,096 (one sequence, "
                  f"supervised after its first 8%; {args.memory_attn} attention), Qwen3-{name} student"
                  f"{'' if mlayers == 0 else f' with {mlayers} decoder layer(s)'}, each row in a fresh process:",
                  "", "| step | peak MiB | x SFT | peak without the teacher's weights, x SFT |", "|---|---|---|---|"]
        memory = {}
        modes = ["sft", "cached"] + (["live"] if (args.memory_live if args.memory_live is not None else gpu) else [])
        for mode in modes:
            cmd = [sys.executable, __file__, "--memory-row", mode, "--device", str(device), "--models", name,
                   "--teacher", args.teacher, "--memory-layers", str(mlayers), "--memory-attn", args.memory_attn,
                   "--limit-gb", str(args.limit_gb)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                lines.append(f"| {MEMORY_ROWS[mode]} | did not fit ({last[:80]}) | | |")
                print(lines[-1], flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            memory[mode] = r
            sft = memory.get("sft", {}).get("peak_bytes")
            ratio = lambda b: f"{b / sft:.2f}" if sft else "?"  # noqa: E731
            lines.append(f"| {MEMORY_ROWS[mode]} | {r['peak_bytes'] / 2**20:.0f} | {ratio(r['peak_bytes'])} | "
                         f"{ratio(r['without_teacher_weights'])} |")
            print(lines[-1], flush=True)
    lines.append(f"\n{time.perf_counter() - started:.0f} s in all")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"rows": rows, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
