"""Token-level distillation losses for teacher-forced reasoning distillation.

The student is trained on teacher-written sequences with

    total = (1 - alpha) * CE(student, target tokens) + alpha * KD(teacher, student)

where both terms are averaged over supervised target tokens only (labels != -100).
The paper's setting is alpha = 0.5, forward KL(teacher || student), temperature 1.

Conventions
-----------
* ``labels`` are aligned with the input ids (the label at position t is the token at t),
  so logits at position t predict the label at t + 1. The shift happens here, once.
* Divergences are computed in float32 (or float64 if the inputs already are), because
  log-softmax over a large vocabulary in bf16 loses too much precision.
* ``teacher_logits`` may be teacher log-probabilities instead of raw logits:
  log_softmax is idempotent, so a cache of log-probs gives the same loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSSES = ("forward_kl", "reverse_kl", "jsd", "tvd")

IGNORE_INDEX = -100


@dataclass
class LossParts:
    """Result of :func:`distillation_loss`.

    total: scalar, differentiable w.r.t. the student logits.
    ce: scalar cross-entropy part (already divided by the denominator).
    kd: scalar distillation part (already divided by the denominator).
    n_supervised: number of supervised target tokens in this call.
    """

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor
    n_supervised: int


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # Keep float64 when the caller asked for it (tests assert tight equalities);
    # everything lower precision is promoted to float32.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {LOSSES}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _check_mix(kind: str, temperature: float, alpha: float, has_teacher: bool) -> None:
    """The checks both loss entry points share: divergence, temperature, alpha, teacher."""
    _check_kind(kind)
    _check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not has_teacher and alpha != 0.0:
        raise ValueError(
            f"no teacher but alpha={alpha!r}; a teacher is needed unless alpha == 0 (plain fine-tuning)"
        )


def _denominator(n_supervised: int, num_supervised: int | None) -> int:
    """The loss normaliser: this call's supervised targets, or the accumulation group's."""
    if num_supervised is not None and num_supervised < n_supervised:
        raise ValueError(
            f"num_supervised={num_supervised} is smaller than the {n_supervised} "
            "supervised targets in this call; it should count the whole accumulation group"
        )
    return max(n_supervised if num_supervised is None else num_supervised, 1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-token divergence between teacher and student next-token distributions.

    student_logits: [N, V]; teacher_logits: [N, V] (raw logits or log-probs).
    Returns [N] in float32 (float64 if the student logits are float64).

    p = softmax(logits / temperature) for both models, then
      forward_kl: KL(p_t || p_s) = sum p_t (log p_t - log p_s)
      reverse_kl: KL(p_s || p_t)
      jsd:        beta * KL(p_t || m) + (1 - beta) * KL(p_s || m),
                  m = beta * p_t + (1 - beta) * p_s, beta in (0, 1)
      tvd:        0.5 * sum |p_t - p_s|
    The result is multiplied by temperature**2 (Hinton et al.) so that gradient
    magnitudes do not shrink as the temperature grows.
    """
    _check_kind(kind)
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape [N, V], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)} "
            "(slice both to the shared vocabulary first if their heads differ in size)"
        )

    dtype = _compute_dtype(student_logits)
    log_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)  # [N, V]
    log_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)  # [N, V]

    if kind == "forward_kl":
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif kind == "reverse_kl":
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    elif kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd needs beta in (0, 1), got {beta!r}")
        # log m via logsumexp avoids log(0) when both probabilities underflow.
        log_m = torch.logsumexp(
            torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0
        )
        kl_t_m = (log_t.exp() * (log_t - log_m)).sum(-1)
        kl_s_m = (log_s.exp() * (log_s - log_m)).sum(-1)
        div = beta * kl_t_m + (1.0 - beta) * kl_s_m
    else:  # tvd
        div = 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)

    return div * temperature**2


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    alpha: float = 0.5,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    num_supervised: int | None = None,
) -> LossParts:
    """Mixed CE + KD loss over supervised target tokens.

    student_logits: [B, T, V]; labels: [B, T] int64, -100 where unsupervised,
    aligned with the input ids (logits[:, t] predict labels[:, t + 1]);
    teacher_logits: [B, T, V] or None (only allowed with alpha == 0).

    ce = sum_targets -log p_s(target) / denom
    kd = sum_targets token_divergence(...) / denom
    denom = max(num_supervised if given else n_supervised, 1)

    Pass num_supervised = the supervised-target count of the whole accumulation
    group so that summing micro-batch losses reproduces the full-batch loss.
    With no supervised target all parts are 0.0 and still backward-able.
    """
    _check_mix(kind, temperature, alpha, teacher_logits is not None)
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"expected student_logits [B, T, V] and labels [B, T], got "
            f"{tuple(student_logits.shape)} and {tuple(labels.shape)}"
        )
    if teacher_logits is not None and teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits shape {tuple(teacher_logits.shape)} != student_logits shape "
            f"{tuple(student_logits.shape)} (slice both to the shared vocabulary first)"
        )

    # Shift: the logits at position t are scored against the token at t + 1.
    targets = labels[:, 1:]  # [B, T-1]
    mask = targets != IGNORE_INDEX  # [B, T-1]
    n_supervised = int(mask.sum().item())
    denom = _denominator(n_supervised, num_supervised)

    # Boolean indexing keeps only supervised rows, so the [N, V] float32 copies
    # below never cover padding or prompt tokens.
    dtype = _compute_dtype(student_logits)
    s = student_logits[:, :-1][mask].to(dtype)  # [N, V]
    y = targets[mask]  # [N]

    # reduction="sum" over an empty selection is an exact 0 that is still part of
    # the graph, so backward works when nothing is supervised.
    ce = F.cross_entropy(s, y, reduction="sum") / denom

    if teacher_logits is None:
        kd = torch.zeros((), dtype=dtype, device=student_logits.device)
    else:
        t = teacher_logits[:, :-1][mask]  # [N, V]
        kd = token_divergence(s, t, kind=kind, temperature=temperature, beta=beta).sum() / denom

    # With alpha == 0 this is exactly ce (1.0 * ce + 0.0 * kd), i.e. plain fine-tuning.
    total = (1 - alpha) * ce + alpha * kd
    return LossParts(total=total, ce=ce, kd=kd, n_supervised=n_supervised)


# ---------------------------------------------------------------------------------------------
# The loss the training step uses: the same (1 - alpha) CE + alpha KD, computed in chunks of
# supervised tokens straight from the final hidden states. ``distillation_loss`` above is the
# definition (and the tests' reference); this is its memory-lean evaluation.
#
# Why from hidden states: at a real vocabulary (151,936 for Qwen3) a 4,096-token step's logits
# are 2.5 GB in float32, and the plain loss keeps several tensors of that size alive (the
# logits, the selected rows, both log-softmaxes, their products and the gradient). Here only
# one chunk of [chunk, V] logits exists at a time: the forward computes each chunk's loss and
# its gradient at once, and keeps just the gradients of the hidden states [N, d] and of the
# output head [V, d] for backward. Positions without a supervised target never reach the head.

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in float32): 27 tokens at V = 151,936


@dataclass(frozen=True)
class DenseTeacher:
    """Teacher logits or log-probabilities [N, V] of the supervised rows (the exact cache)."""

    logits: torch.Tensor

    def __len__(self) -> int:
        return self.logits.shape[0]


@dataclass(frozen=True)
class HeadTeacher:
    """A live teacher's final hidden states [N, d_t] and output head [V, d_t]: its logits are
    formed one chunk at a time, like the student's."""

    hidden: torch.Tensor
    weight: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]


@dataclass(frozen=True)
class TopKTeacher:
    """The teacher's k most likely tokens per row (``indices`` [N, k]) and log-probabilities
    [N, k + 1] of those tokens plus, in the last column, of everything else (the tail): the
    teacher distribution over k + 1 buckets, so the loss is still a divergence between two
    proper distributions (the student's is bucketed the same way)."""

    indices: torch.Tensor
    logprobs: torch.Tensor

    def __len__(self) -> int:
        return self.indices.shape[0]


Teacher = DenseTeacher | HeadTeacher | TopKTeacher

TAIL_FLOOR = -1e4  # log-mass floor: an empty tail must give 0 * finite, not 0 * -inf


def bucket_student(log_s: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Student log-probabilities [n, V] -> [n, k + 1] over the teacher's top-k buckets."""
    top = log_s.gather(1, indices)
    tail = log_s.scatter(1, indices, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([top, tail.clamp(min=TAIL_FLOOR)], dim=-1)


def _chunk_kd(z: torch.Tensor, teacher: Teacher, sl: slice, kind, temperature, beta) -> torch.Tensor:
    if isinstance(teacher, TopKTeacher):
        log_s = bucket_student(F.log_softmax(z, dim=-1), teacher.indices[sl])
        return token_divergence(log_s, teacher.logprobs[sl].to(z.dtype), kind, 1.0, beta).sum()
    if isinstance(teacher, HeadTeacher):
        t = teacher.hidden[sl].to(z.dtype) @ teacher.weight.to(z.dtype).T
    else:
        t = teacher.logits[sl]
    return token_divergence(z, t, kind, temperature, beta).sum()


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, teacher, alpha, kind, temperature, beta, denom, chunk):
        dtype = _compute_dtype(hidden)
        h, w = hidden.detach().to(dtype), weight.detach().to(dtype)
        grad_h, grad_w = torch.zeros_like(h), torch.zeros_like(w)
        ce_sum = torch.zeros((), dtype=dtype, device=h.device)
        kd_sum = torch.zeros((), dtype=dtype, device=h.device)
        for start in range(0, h.shape[0], chunk):
            sl = slice(start, start + chunk)
            with torch.enable_grad():
                z = (h[sl] @ w.T).requires_grad_()
                ce = F.cross_entropy(z, targets[sl], reduction="sum")
                kd = _chunk_kd(z, teacher, sl, kind, temperature, beta) if teacher is not None else ce * 0
                (gz,) = torch.autograd.grad(((1 - alpha) * ce + alpha * kd) / denom, z)
            grad_h[sl] = gz @ w
            # Not addmm_: torch.profiler counts no FLOPs for the in-place addmm_, and the
            # run's measured FLOPs would miss a third of the output head's backward.
            grad_w += gz.T @ h[sl]
            ce_sum += ce.detach()
            kd_sum += kd.detach()
        ctx.save_for_backward(grad_h.to(hidden.dtype), grad_w.to(weight.dtype))
        ce, kd = ce_sum / denom, kd_sum / denom
        ctx.mark_non_differentiable(ce, kd)
        return (1 - alpha) * ce + alpha * kd, ce, kd

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kd):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_total, grad_w * grad_total, *([None] * 8)


def chunked_distillation_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    teacher: Teacher | None = None,
    alpha: float = 0.5,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    num_supervised: int | None = None,
    chunk_tokens: int | None = None,
) -> LossParts:
    """``distillation_loss`` over already selected supervised rows, computed chunk by chunk.

    hidden: [N, d] final hidden states at the positions whose next token is supervised;
    weight: [V, d] the output head (no bias, no logit scaling: Qwen3's);
    targets: [N] the supervised next tokens; teacher: the teacher's view of the same rows.
    Returns the same LossParts as ``distillation_loss`` on the full logits; gradients flow to
    ``hidden`` and ``weight``. ``chunk_tokens`` defaults to CHUNK_ELEMENTS // V rows.
    """
    _check_mix(kind, temperature, alpha, teacher is not None)
    if isinstance(teacher, TopKTeacher) and temperature != 1.0:
        raise ValueError(
            f"a top-k teacher cache holds log-probabilities at temperature 1, not {temperature!r}: "
            "use teacher_cache_mode=exact or a live teacher (teacher_cache=false) to vary it"
        )
    n = hidden.shape[0]
    if targets.shape != (n,) or (teacher is not None and len(teacher) != n):
        raise ValueError(
            f"hidden has {n} rows, targets {tuple(targets.shape)}, teacher "
            f"{len(teacher) if teacher is not None else None}: all must describe the same rows"
        )
    denom = _denominator(n, num_supervised)
    chunk = chunk_tokens or max(1, CHUNK_ELEMENTS // weight.shape[0])
    total, ce, kd = _ChunkedLoss.apply(hidden, weight, targets, teacher, alpha, kind, temperature,
                                       beta, denom, chunk)
    return LossParts(total=total, ce=ce, kd=kd, n_supervised=n)


def topk_logprobs(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, V] teacher logits -> (indices [N, k], log-probs [N, k + 1] with the tail last)."""
    if not 0 < k < logits.shape[-1]:
        raise ValueError(f"top-k needs 0 < k < vocabulary size {logits.shape[-1]}, got k={k}")
    log_p = F.log_softmax(logits.float(), dim=-1)
    top, idx = log_p.topk(k, dim=-1)
    tail = log_p.scatter(1, idx, float("-inf")).logsumexp(-1, keepdim=True).clamp(min=TAIL_FLOOR)
    return idx, torch.cat([top, tail], dim=-1)
