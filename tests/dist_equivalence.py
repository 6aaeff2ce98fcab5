"""The two sides of the multi-process equivalence test (tests/test_distributed.py).

Run by torchrun on every rank (``python -m torch.distributed.run --nproc-per-node 2
tests/dist_equivalence.py OUT``): a tiny Qwen3 student and live teacher, identical on every rank
(seeded), sharded with study.distributed; rank 0 writes to OUT the world size, the first step's
full gradients and a few optimiser steps of the loss curve, once as study trains and once under
per-rank mean normalisation (the negative control). The test computes the single-process side
with the same functions and compares.
"""

import random
import sys

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from study.data.pipeline import TrainItem
from study.train import LoopSettings, loss_step, micro_batches, supervised_targets, train_loop

VOCAB = 64
SETTINGS = LoopSettings(steps=3, batch_size=4, lr=1e-2, warmup=0.0, seed=7, alpha=0.5)


def model(seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=0, attn_implementation="eager")
    return Qwen3ForCausalLM(config)


def items(n: int = 8) -> list[TrainItem]:
    """Sequences of unequal lengths (6 ... 40 tokens), the first third of each unsupervised."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        length = rng.randint(6, 40)
        ids = [rng.randrange(1, VOCAB) for _ in range(length)]
        labels = [-100 if t < length // 3 else tok for t, tok in enumerate(ids)]
        out.append(TrainItem(f"seq{i}", ids, labels, {"P": 0, "CoT": sum(x != -100 for x in labels), "A": 0}, length))
    return out


def models():
    return model(1), model(2).eval()  # student, teacher


def first_step_grads(student, teacher, world=None) -> dict[str, torch.Tensor]:
    """Gradients of the student after the first step's backward (before any update), whole."""
    from study.distributed import SINGLE

    world = world or SINGLE
    data = items()
    step = student
    if world.size > 1:
        from study.distributed import shard

        step = shard(student, teacher, world, torch.device("cpu"))
        teacher = None
    indices = list(range(SETTINGS.batch_size))
    batches = micro_batches(data, world.share(indices), 1, 0)
    n_sup = world.sum([sum(supervised_targets(b) for b in batches)])[0]
    for b in batches:
        loss_step(step, teacher, b, SETTINGS, n_sup, torch.device("cpu"))
    return {name: (p.grad.full_tensor() if world.size > 1 else p.grad).detach().clone()
            for name, p in student.named_parameters()}


def curve(student, teacher, world=None) -> list[float]:
    from study.distributed import SINGLE, shard

    world = world or SINGLE
    model_ = student
    if world.size > 1:
        model_, teacher = shard(student, teacher, world, torch.device("cpu")), None
    out = train_loop(model_, items(), 0, SETTINGS, torch.device("cpu"), teacher=teacher, progress=False, world=world)
    return [row["loss"] for row in out["curve"]]


def per_rank_mean_curve(student, teacher, world) -> tuple[list[float], dict]:
    """The negative control: every rank normalises by its own supervised count and the ranks'
    gradients are averaged (what a plain data-parallel mean loss does). Returns its curve and
    its first-step gradients."""
    from study.distributed import shard
    from study.train import make_optimizer, batch_schedule

    step = shard(student, teacher, world, torch.device("cpu"))
    for module in step.modules():
        if hasattr(module, "set_gradient_divide_factor"):
            module.set_gradient_divide_factor(float(world.size))  # average over ranks
    opt, sched = make_optimizer(step, SETTINGS)
    data, losses, grads = items(), [], None
    torch.manual_seed(SETTINGS.seed)
    for indices in batch_schedule(len(data), SETTINGS.batch_size, SETTINGS.steps, SETTINGS.seed):
        (b,) = micro_batches(data, world.share(indices), 1, 0)
        parts = loss_step(step, None, b, SETTINGS, supervised_targets(b), torch.device("cpu"))
        if grads is None:
            grads = {n: p.grad.full_tensor().clone() for n, p in student.named_parameters()}
        torch.nn.utils.clip_grad_norm_(student.parameters(), SETTINGS.grad_clip)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        losses.append(world.sum([parts.total.item()])[0] / world.size)
    return losses, grads


def main(out: str) -> None:
    from study.distributed import launched_world, start, stop

    world = launched_world()
    start(world, torch.device("cpu"))
    result = {"world_size": world.size, "launcher": world.launcher,
              "grads": first_step_grads(*models(), world), "curve": curve(*models(), world)}
    result["control_curve"], result["control_grads"] = per_rank_mean_curve(*models(), world)
    if world.main:
        torch.save(result, out)
    stop(world)


if __name__ == "__main__":
    main(sys.argv[1])
