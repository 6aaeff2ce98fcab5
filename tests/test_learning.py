"""Can the training step learn at all? A tiny Qwen3 is trained with ``train_loop`` on an easy
corpus (count upwards modulo a small vocabulary from a random start) and must then predict the
next token of held-out sequences far better than it could before training.

The held-out loss is computed here, from the model's full logits with the shift written out
(the logits at position t score the token at t + 1), not through ``study.train`` or
``study.losses``: a training step that is consistently misaligned (e.g. each position trained
on its own token, which teacher forcing makes trivially learnable as the identity) looks fine
through its own loss, but not through this one. Zero learning rate, a detached loss or a
normaliser that zeroes the gradient leave the loss near its untrained value.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from study.data.pipeline import TrainItem, collate
from study.models import build_model
from study.train import LoopSettings, train_loop
from tiny import TINY_MODEL

VOCAB = 24
PAD, FIRST = 0, 2  # tokens 2..23 form the cycle; 0 pads, 1 is never used
CYCLE = VOCAB - FIRST
CPU = torch.device("cpu")


class _Vocab:
    """What ``build_model`` reads from a tokenizer."""

    pad_token_id = PAD
    eos_token_id = 1

    def __len__(self) -> int:
        return VOCAB


def counting_items(n: int, seed: int) -> list[TrainItem]:
    """Sequences FIRST + (start + t) % CYCLE of 10..20 tokens; the first 1..3 tokens are an
    unsupervised prompt, so supervised counts differ from sequence to sequence."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        start, length, prompt = rng.randrange(CYCLE), rng.randint(10, 20), rng.randint(1, 3)
        ids = [FIRST + (start + t) % CYCLE for t in range(length)]
        labels = [-100] * prompt + ids[prompt:]
        items.append(TrainItem(f"count-{seed}-{i}", ids, labels, {"P": 0, "CoT": length - prompt, "A": 0}, length))
    return items


def heldout_next_token_loss(model, items: list[TrainItem]) -> float:
    """Mean cross-entropy of the token at t + 1 given the logits at t, over the supervised
    targets, from ``model(...).logits`` (the reference, independent of the training code)."""
    batch = collate(items, PAD)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, targets = logits[:, :-1].double(), batch["labels"][:, 1:]
    mask = targets != -100
    log_p = logits[mask].log_softmax(-1)
    return float(-log_p.gather(1, targets[mask][:, None]).mean())


def fresh_model(seed: int):
    torch.manual_seed(seed)
    return build_model(TINY_MODEL, _Vocab())


TRAIN = counting_items(64, seed=1)
HELDOUT = counting_items(32, seed=2)
SETTINGS = LoopSettings(steps=40, batch_size=8, lr=2e-2, seed=0)
# Trained, the next token is certain (loss -> 0; ~0.03 after these 40 steps); untrained it is ~ln 24 = 3.18; a model that
# learnt the identity puts almost no mass on the next token (loss above ln 24).
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def trained_teacher():
    model = fresh_model(0)
    before = heldout_next_token_loss(model, HELDOUT)
    out = train_loop(model, TRAIN, PAD, SETTINGS, CPU, progress=False)
    return model, before, heldout_next_token_loss(model, HELDOUT), out["curve"]


def test_cross_entropy_training_learns_the_next_token(trained_teacher):
    _, before, after, curve = trained_teacher
    assert before == pytest.approx(math.log(VOCAB), rel=0.1)  # an untrained model is near uniform
    assert after < THRESHOLD and after < 0.2 * before, (before, after)
    assert curve[-1]["loss"] < 0.2 * curve[0]["loss"]  # and the training loss agrees


def test_distillation_alone_transfers_the_teacher(trained_teacher):
    """alpha = 1: no label reaches the student, only the teacher's distributions (live teacher)."""
    teacher, _, teacher_loss, _ = trained_teacher
    student = fresh_model(1)
    before = heldout_next_token_loss(student, HELDOUT)
    s = LoopSettings(steps=40, batch_size=8, lr=2e-2, seed=0, alpha=1.0)
    curve = train_loop(student, TRAIN, PAD, s, CPU, teacher=teacher.eval(), progress=False)["curve"]
    after = heldout_next_token_loss(student, HELDOUT)
    assert all(p["ce"] > 0 for p in curve) and curve[-1]["loss"] < 0.2 * curve[0]["loss"]
    assert after < THRESHOLD + teacher_loss and after < 0.2 * before, (before, after, teacher_loss)
