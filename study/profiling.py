"""Compute measurements of a training step: FLOPs from torch.profiler, an analytic FLOP count
to cross-check it, and peak memory.

FLOPs: torch.profiler (``with_flops=True``) counts FLOPs op by op. We keep the matrix
multiplications (``MATMUL_OPS``), which are what the analytic formula models, and report the
elementwise ops it also counts (norms, activations, softmax, optimiser arithmetic) apart, so
that the two sides of the cross-check count the same thing. Two blind spots are known and
guarded: in-place matmuls (``addmm_`` and friends) are counted as 0 FLOPs, so the training
code avoids them and ``profile_step`` reports any it sees (``uncounted_ops``, tested empty);
fused SDPA kernels are invisible too (measured on torch 2.13: the dense term only), so
measurements are taken under eager attention and the analytic count includes the attention
term the same way eager computes it: the full T x T score matrix (no causal skipping) for
every head.

Peak memory: on CUDA the allocator's peak over the training loop. On CPU the process's
resident size would be dominated by the interpreter and libraries, so we measure the training
step's own allocations: the peak of live bytes allocated during profiled training steps
(profiler memory events, the steps run exactly as training runs them: collation, forward,
backward, clipping and the AdamW step, whose first call allocates its moment buffers) plus
the bytes already resident when they start (the parameters of the student and of a live
teacher).
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


def matmul_params(config) -> int:
    """Weights that take part in a matmul per token: attention and MLP projections of every
    layer, plus the output head (embedding lookups cost no FLOPs)."""
    h, hd = config.hidden_size, config.head_dim
    q = config.num_attention_heads * hd
    kv = config.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
    return config.num_hidden_layers * per_layer + h * config.vocab_size


def analytic_flops(config, shapes: list[tuple[int, int]], backward: bool = True,
                   head_tokens: int | None = None) -> float:
    """FLOPs of forward (and backward) passes over batches of shape (batch, tokens).

    Forward: 2 * N per token for the dense matmuls plus, per layer, 2 * 2 * T^2 * d_attn per
    sequence for QK^T and attention x V. Backward costs twice the forward for every matmul.
    ``head_tokens``: the positions the output head runs on (the training step forms logits
    only where the next token is supervised); default every token, as a plain forward does."""
    n = matmul_params(config)
    head = config.hidden_size * config.vocab_size
    d_attn = config.num_attention_heads * config.head_dim
    fwd = 0.0
    for b, t in shapes:
        fwd += 2.0 * (n - head) * b * t + config.num_hidden_layers * 4.0 * b * t * t * d_attn
    fwd += 2.0 * head * (sum(b * t for b, t in shapes) if head_tokens is None else head_tokens)
    return 3.0 * fwd if backward else fwd


def _cpu_peak_bytes(prof) -> int:
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


# Ops whose FLOPs the profiler counts and the analytic formula models.
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::addmv", "aten::mv")
# Matmuls the profiler sees but counts as 0 FLOPs (measured on torch 2.13).
UNCOUNTED_MATMUL_OPS = ("aten::addmm_", "aten::baddbmm_", "aten::addbmm_", "aten::addmv_")


def profile_step(step_fn, n_steps: int, device: torch.device) -> dict:
    """Run ``step_fn(i)`` for i in range(n_steps) under the profiler. Returns ``flops`` (the
    matmul FLOPs), ``flops_other`` (the elementwise FLOPs the profiler also counts),
    ``uncounted_ops`` (names of matmul ops it counted as 0, which should be none) and, on
    CPU, ``step_peak_bytes``: the peak of live bytes allocated during the steps."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True, profile_memory=device.type == "cpu") as prof:
        for i in range(n_steps):
            step_fn(i)
    events = prof.key_averages()
    matmul = float(sum(e.flops for e in events if e.flops and e.key in MATMUL_OPS))
    other = float(sum(e.flops for e in events if e.flops and e.key not in MATMUL_OPS))
    return {"flops": matmul, "flops_other": other,
            "uncounted_ops": sorted({e.key for e in events if e.key in UNCOUNTED_MATMUL_OPS}),
            "step_peak_bytes": _cpu_peak_bytes(prof) if device.type == "cpu" else None}


def tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters this process holds (a sharded parameter: its local shard)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() * p.element_size() for p in model.parameters())
