"""The training core: AdamW + one-cycle schedule over batches that count examples.

``train_loop`` serves both pretraining (no teacher, alpha = 0: plain next-token training of
the teacher and the base student) and distillation (a frozen teacher, (1 - alpha) CE + alpha
KD). Per batch the maths is in ``loss_step``; the loop reads top to bottom.

Batches count examples, as in the paper: truncation changes the tokens per step, never the
number of optimiser steps, so lsp = 0.5 and lsp = 1.0 take the same steps.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .data.pipeline import TrainItem, collate
from .distributed import SINGLE, World
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
    # The paper's set-up takes torch's defaults for these (authors' code: a plain
    # AdamW(model.parameters()) and OneCycleLR(max_lr, total_steps, pct_start)): see RunConfig.
    cycle_momentum: bool = True
    lr_div_factor: float = 25.0
    lr_final_div_factor: float = 1e4
    decay_norms_and_embeddings: bool = True
    # Head rows the losses read: the tokenizer's tokens. A pretrained head padded past them
    # (Qwen3: 151,936 rows for 151,669 tokens) has rows no token has: none of them gets
    # probability mass, in the student or the teacher. 0: the whole head.
    vocab: int = 0


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads (0: as they are), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"device={name} was asked for but {why} (torch {torch.__version__}); "
                         "use device=cpu or device=auto, or install a CUDA build of torch")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


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


def micro_batch_shapes(items: list[TrainItem], indices: list[int], grad_accum: int) -> list[tuple[int, int]]:
    """The (batch, width) of each micro-batch ``micro_batches`` would collate, without collating."""
    size = len(indices) // grad_accum
    return [(size, max(len(items[j].ids) for j in indices[k : k + size])) for k in range(0, len(indices), size)]


def supervised_targets(batch: dict) -> int:
    """Targets the loss sees: labels shifted by one, so position 0 never counts."""
    return int((batch["labels"][:, 1:] != -100).sum())


def output_head(model, vocab: int = 0) -> torch.Tensor:
    """The [V, d] output projection, its first ``vocab`` rows (0: all). The chunked loss forms
    logits as hidden @ head.T, which is the model's own output only without a bias or logit
    scaling (true of Qwen3). Slicing the rows is the softmax over real tokens only: padded
    slots get no probability and no gradient."""
    head = model.get_output_embeddings()
    scaled = any(getattr(model.config, a, None) for a in ("final_logit_softcapping", "logit_scale"))
    if getattr(head, "bias", None) is not None or scaled:
        raise NotImplementedError(
            f"{type(model).__name__} has an output bias or logit scaling, which the chunked loss "
            "does not apply; use a model whose head is a plain projection (e.g. Qwen3)")
    return head.weight[:vocab] if vocab else head.weight


def hidden_rows(model, batch, mask) -> torch.Tensor:
    """Final hidden states [N, d] at the positions whose next token is supervised."""
    out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.last_hidden_state[:, :-1][mask]


def teacher_rows(teacher, batch, mask, vocab: int = 0) -> Teacher | None:
    """The teacher's view of the supervised rows: cached in the batch, or a live forward."""
    if "teacher_logprobs" in batch:
        return DenseTeacher(batch["teacher_logprobs"][:, :-1][mask])
    if "teacher_topk_indices" in batch:
        return TopKTeacher(batch["teacher_topk_indices"][:, :-1][mask].long(),
                           batch["teacher_topk_logprobs"][:, :-1][mask])
    if teacher is None:
        return None
    with torch.no_grad():
        return HeadTeacher(hidden_rows(teacher, batch, mask), output_head(teacher, vocab))


class Distiller(torch.nn.Module):
    """The student and its live teacher (None: cached rows or no teacher) in one module whose
    forward is the loss of one micro-batch. One module, so that a sharded run
    (study/distributed.py) makes it the FSDP root: the root's parameters (embeddings, final
    norms, output heads) are gathered around the whole loss, which reads the heads directly."""

    def __init__(self, student, teacher=None):
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, batch: dict, s: LoopSettings, num_supervised: float | None, teacher_only: bool = False):
        mask = batch["labels"][:, 1:] != IGNORE_INDEX  # position t predicts the label at t + 1
        if teacher_only:  # the live teacher's share of the step (its FLOPs are measured apart)
            with torch.no_grad():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["labels"].device.type == "cuda"):
                    rows = teacher_rows(self.teacher, batch, mask, s.vocab)
                return rows.hidden @ rows.weight.T
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["labels"].device.type == "cuda"):
            target = teacher_rows(self.teacher, batch, mask, s.vocab)
            hidden = hidden_rows(self.student, batch, mask)
        return chunked_distillation_loss(
            hidden, output_head(self.student, s.vocab), batch["labels"][:, 1:][mask], target, alpha=s.alpha,
            kind=s.loss, temperature=s.temperature, beta=s.beta, num_supervised=num_supervised,
        )

    def teacher_logits(self, batch: dict, s: LoopSettings) -> torch.Tensor:
        """The live teacher's logits on the supervised rows: its body, then its head (through
        ``forward``, so that a sharded Distiller gathers the teacher's parameters)."""
        from torch.distributed.fsdp import FSDPModule

        logits = self(batch, s, None, teacher_only=True)
        if isinstance(self, FSDPModule):
            # FSDP2 keeps the root's parameters gathered after its forward until a backward
            # reshards them; with no backward here, reshard now, or the student's parameters
            # would be the gathered copies when the optimiser takes them.
            self.reshard()
        return logits


def distiller(model, teacher=None) -> Distiller:
    """``model`` itself if it is a Distiller (a sharded run builds and shards one once), else
    the student ``model`` and its ``teacher`` in one."""
    return model if isinstance(model, Distiller) else Distiller(model, teacher)


def loss_step(model, teacher, batch, s: LoopSettings, num_supervised: float | None, device) -> LossParts:
    """Forward (teacher under no_grad, unless its rows are cached in the batch), loss,
    backward for one micro-batch. Only supervised positions reach the output heads.
    ``model``: the student, or a (sharded) Distiller holding student and teacher."""
    batch = {k: v.to(device) for k, v in batch.items()}
    parts = distiller(model, teacher)(batch, s, num_supervised)
    parts.total.backward()
    return parts


def check_schedule(s: LoopSettings) -> None:
    """torch's OneCycleLR divides by (warm-up steps - 1): a warm-up of exactly one step fails."""
    if s.warmup * max(s.steps, 2) == 1.0:
        raise ValueError(f"warmup={s.warmup} of {s.steps} steps is exactly one warm-up step, which torch's "
                         "OneCycleLR cannot schedule (it divides by zero); choose another warmup or step count")


def make_optimizer(model, s: LoopSettings):
    """AdamW and a one-cycle schedule, as in the paper's code. With torch's defaults (the
    paper's) the lr rises from lr / 25 to lr over the warm-up and falls to lr / 25e4, and
    ``cycle_momentum`` moves AdamW's beta1 between 0.95 and 0.85 against the lr."""
    check_schedule(s)
    model = distiller(model).student
    if s.decay_norms_and_embeddings:
        groups = [{"params": list(model.parameters())}]
    else:  # decay the 2-D projection weights only (the common practice the paper does not follow)
        emb = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        decay = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in emb]
        rest = [p for p in model.parameters() if p.ndim < 2 or id(p) in emb]
        groups = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s.lr, total_steps=max(s.steps, 2), pct_start=s.warmup, anneal_strategy="cos",
        cycle_momentum=s.cycle_momentum, div_factor=s.lr_div_factor, final_div_factor=s.lr_final_div_factor,
    )
    return opt, sched


def train_step(model, teacher, items: list[TrainItem], indices: list[int], pad_id: int, s: LoopSettings,
               opt, sched, device, world: World = SINGLE) -> dict:
    """One optimiser step over the examples ``indices``, exactly as training runs it: collate
    the micro-batches, forward and backward each (the loss of every micro-batch is normalised
    by the supervised targets of the whole step), clip, step, clear the gradients. Returns
    the step's losses and the tokens it forwarded (padding excluded) and computed.

    On several processes (``world``) each rank runs its share of ``indices``; the normaliser
    is the step's supervised targets over all ranks and the gradients are summed over ranks
    (study/distributed.py), so the step is the single-process one; losses and token counts
    are the whole step's, on every rank."""
    batches = micro_batches(items, world.share(indices), s.grad_accum, pad_id)
    n_sup = world.sum([sum(supervised_targets(b) for b in batches)])[0]  # normaliser of the whole step
    ce = kd = total = 0.0
    tokens = padded = 0
    for b in batches:
        parts = loss_step(model, teacher, b, s, n_sup, device)
        ce, kd, total = ce + parts.ce.item(), kd + parts.kd.item(), total + parts.total.item()
        tokens += int(b["attention_mask"].sum())
        padded += b["input_ids"].numel()
    torch.nn.utils.clip_grad_norm_(distiller(model).student.parameters(), s.grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    total, ce, kd, tokens, padded = world.sum([total, ce, kd, tokens, padded])
    return {"loss": total, "ce": ce, "kd": kd, "tokens": int(tokens), "tokens_padded": int(padded)}


def train_loop(model, items: list[TrainItem], pad_id: int, s: LoopSettings, device, teacher=None,
               desc: str = "train", progress: bool = True, world: World = SINGLE) -> dict:
    """Train ``model`` for ``s.steps`` optimiser steps. Returns the loss curve, the wall time of
    the loop and the tokens it forwarded (padding excluded) and computed (padding included).
    ``model``: the student, or a sharded Distiller (``world``: its processes)."""
    torch.manual_seed(s.seed)
    schedule = batch_schedule(len(items), s.batch_size, s.steps, s.seed)
    opt, sched = make_optimizer(model, s)
    distiller(model).student.train()
    curve, tokens, padded = [], 0, 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step, indices in enumerate(tqdm(schedule, desc=desc, disable=not progress or not world.main, leave=False)):
        out = train_step(model, teacher, items, indices, pad_id, s, opt, sched, device, world)
        tokens, padded = tokens + out["tokens"], padded + out["tokens_padded"]
        curve.append({"step": step + 1, "loss": out["loss"], "ce": out["ce"], "kd": out["kd"]})
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"curve": curve, "seconds": time.perf_counter() - start, "tokens": tokens, "tokens_padded": padded}
