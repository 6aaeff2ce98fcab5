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


def test_two_process_study_run_matches_one_process(tmp_path, tiny_cache):
    """`study run --nproc 2` (torchrun, FSDP2 on gloo, a live sharded teacher) writes a record whose
    curve is the 1-process record's; rank 0 alone writes it, with the world size and launcher."""
    from dataclasses import asdict

    from study.cli import main
    from study.records import is_record_name, read_checked
    from tiny import tiny_config

    cfg = tiny_config(tiny_cache, threads=1, batch_size=4, save_student=False, teacher_cache=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(asdict(cfg)))  # JSON is YAML
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    assert main(["run", "--nproc", "2", "--config", str(config), "--out", str(tmp_path / "two"), "--no-progress"]) == 0
    (one,), (two,) = ([read_checked(p) for p in (tmp_path / name).iterdir() if is_record_name(p.name)]
                      for name in ("one", "two"))
    assert (one["env"]["world_size"], two["env"]["world_size"]) == (1, 2)
    assert two["env"]["launcher"] == "torchrun" and two["env"]["execution"]["world_size"] == 2
    assert one["run_id"] != two["run_id"] and two["config"]["nproc"] == 2
    assert len(one["curve"]) == len(two["curve"]) == one["data"]["steps"] > 1
    assert curves_equal([r["loss"] for r in two["curve"]], [r["loss"] for r in one["curve"]])
    assert two["data"]["tokens_forwarded"] == one["data"]["tokens_forwarded"]
    assert "per process" in two["compute"]["peak_memory_scope"]
    # FLOPs are the whole job's: the profiler's sum over ranks matches the analytic count of every
    # rank's micro-batches (each padded to its own share's longest sequence: never more).
    assert two["compute"]["flops_ratio"] == pytest.approx(1.0, rel=0.02)
    assert two["compute"]["flops_analytic"] <= one["compute"]["flops_analytic"]
    assert two["data"]["tokens_padded"] <= one["data"]["tokens_padded"]
    # Memory is per process: each rank holds half the shards and half of every batch.
    assert two["compute"]["peak_memory_bytes"] < one["compute"]["peak_memory_bytes"]
