"""The training core: AdamW + one-cycle schedule over batches that count examples.

``train_loop`` serves both pretraining (no teacher, alpha = 0: plain next-token training of
the teacher and the base student) and distillation (a frozen teacher, (1 - alpha) CE + alpha
KD). Per batch the maths is in ``loss_step``; the loop reads top to bottom.

Batches count examples, as in the paper: truncation changes the tokens per step, never the
number of optimiser steps, so lsp = 0.5 and lsp = 1.0 take the same steps.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .data.pipeline import TrainItem, collate
from .losses import IGNORE_INDEX, DenseTeacher, HeadTeacher, LossParts, Teacher, TopKTeacher, chunked_distillation_loss


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch_size: int
    lr: float
    grad_accum: int = 1
    weight_decay: float = 0.05
    warmup: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    alpha: float = 0.0
    loss: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_schedule(n_items: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Item indices of every optimiser step: seeded shuffles, epoch after epoch, dropping the
    last incomplete batch of each epoch so every step has exactly ``batch_size`` examples."""
    if n_items < batch_size:
        raise ValueError(f"{n_items} training examples cannot fill one batch of {batch_size}")
    rng = random.Random(f"batches-{seed}")
    schedule: list[list[int]] = []
    while len(schedule) < steps:
        order = list(range(n_items))
        rng.shuffle(order)
        schedule += [order[i : i + batch_size] for i in range(0, n_items - batch_size + 1, batch_size)]
    return schedule[:steps]


def micro_batches(items: list[TrainItem], indices: list[int], grad_accum: int, pad_id: int):
    size = len(indices) // grad_accum
    return [collate([items[j] for j in indices[k : k + size]], pad_id) for k in range(0, len(indices), size)]


def supervised_targets(batch: dict) -> int:
    """Targets the loss sees: labels shifted by one, so position 0 never counts."""
    return int((batch["labels"][:, 1:] != -100).sum())


def output_head(model) -> torch.Tensor:
    """The [V, d] output projection. The chunked loss forms logits as hidden @ head.T, which
    is the model's own output only without a bias or logit scaling (true of Qwen3)."""
    head = model.get_output_embeddings()
    scaled = any(getattr(model.config, a, None) for a in ("final_logit_softcapping", "logit_scale"))
    if getattr(head, "bias", None) is not None or scaled:
        raise NotImplementedError(
            f"{type(model).__name__} has an output bias or logit scaling, which the chunked loss "
            "does not apply; use a model whose head is a plain projection (e.g. Qwen3)")
    return head.weight


def hidden_rows(model, batch, mask) -> torch.Tensor:
    """Final hidden states [N, d] at the positions whose next token is supervised."""
    out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.last_hidden_state[:, :-1][mask]


def teacher_rows(teacher, batch, mask) -> Teacher | None:
    """The teacher's view of the supervised rows: cached in the batch, or a live forward."""
    if "teacher_logprobs" in batch:
        return DenseTeacher(batch["teacher_logprobs"][:, :-1][mask])
    if "teacher_topk_indices" in batch:
        return TopKTeacher(batch["teacher_topk_indices"][:, :-1][mask].long(),
                           batch["teacher_topk_logprobs"][:, :-1][mask])
    if teacher is None:
        return None
    with torch.no_grad():
        return HeadTeacher(hidden_rows(teacher, batch, mask), output_head(teacher))


def loss_step(model, teacher, batch, s: LoopSettings, num_supervised: int, device) -> LossParts:
    """Forward (teacher under no_grad, unless its rows are cached in the batch), loss,
    backward for one micro-batch. Only supervised positions reach the output heads."""
    batch = {k: v.to(device) for k, v in batch.items()}
    mask = batch["labels"][:, 1:] != IGNORE_INDEX  # position t predicts the label at t + 1
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        target = teacher_rows(teacher, batch, mask)
        hidden = hidden_rows(model, batch, mask)
    parts = chunked_distillation_loss(
        hidden, output_head(model), batch["labels"][:, 1:][mask], target, alpha=s.alpha, kind=s.loss,
        temperature=s.temperature, beta=s.beta, num_supervised=num_supervised,
    )
    parts.total.backward()
    return parts


def make_optimizer(model, s: LoopSettings):
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s.lr, total_steps=max(s.steps, 2), pct_start=s.warmup, anneal_strategy="cos"
    )
    return opt, sched


def train_loop(model, items: list[TrainItem], pad_id: int, s: LoopSettings, device, teacher=None,
               desc: str = "train", progress: bool = True) -> dict:
    """Train ``model`` for ``s.steps`` optimiser steps. Returns the loss curve, the wall time of
    the loop and the tokens it forwarded (padding excluded) and computed (padding included)."""
    torch.manual_seed(s.seed)
    schedule = batch_schedule(len(items), s.batch_size, s.steps, s.seed)
    opt, sched = make_optimizer(model, s)
    model.train()
    curve, tokens, padded = [], 0, 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step, indices in enumerate(tqdm(schedule, desc=desc, disable=not progress, leave=False)):
        batches = micro_batches(items, indices, s.grad_accum, pad_id)
        n_sup = sum(supervised_targets(b) for b in batches)  # normaliser of the whole step
        ce = kd = total = 0.0
        for b in batches:
            parts = loss_step(model, teacher, b, s, n_sup, device)
            ce, kd, total = ce + parts.ce.item(), kd + parts.kd.item(), total + parts.total.item()
            tokens += int(b["attention_mask"].sum())
            padded += b["input_ids"].numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "loss": total, "ce": ce, "kd": kd})
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"curve": curve, "seconds": time.perf_counter() - start, "tokens": tokens, "tokens_padded": padded}
