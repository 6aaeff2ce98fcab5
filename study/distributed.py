"""One run on several processes: data-parallel, sharded training with PyTorch's FSDP2.

    torchrun --nproc-per-node 4 -m study run --config CONFIG --out results/runs
    study run --nproc 4 --config CONFIG --out results/runs        # launches torchrun for you

Every rank builds the same student (and live teacher), then ``shard`` puts both into one
``Distiller`` and shards it: ``fully_shard`` on every decoder layer of the student and of the
teacher, then on the Distiller as the root (embeddings, final norms, output heads), so the
heads are whole exactly while the loss reads them. Each optimiser step is the single-process
one: the global batch of ``batch_size`` examples is split into equal contiguous shares
(``World.share``), the loss is normalised by the supervised targets of the whole step over all
ranks (an all-reduce of the count) and the gradients are summed over ranks (FSDP2's divide
factor 1), so the sum over ranks of every rank's gradient is the single-process gradient.

Process group: gloo on CPU, nccl on GPU (one device per rank, ``cuda:LOCAL_RANK``); on GPU the
sharded modules compute in bf16 with fp32 gradient reduction (an FSDP2 MixedPrecisionPolicy).
Accelerate is not used: it cannot run FSDP on CPU and prepares a single model under FSDP2, so
not a frozen teacher beside it (../shared/SCALE.md).

The ranks learn who they are from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): the
launcher's contract, not a switch of ours.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank ``rank`` of ``size`` (1: a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launcher: str = "single process"

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates and writes the record."""
        return self.rank == 0

    def share(self, indices: list[int]) -> list[int]:
        """This rank's contiguous share of a global batch."""
        if self.size == 1:
            return indices
        if len(indices) % self.size:
            raise ValueError(f"a batch of {len(indices)} examples does not split evenly over {self.size} processes")
        k = len(indices) // self.size
        return indices[self.rank * k : (self.rank + 1) * k]

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over all ranks (float64), the same on every rank."""
        return self._reduce(values, torch.distributed.ReduceOp.SUM if self.size > 1 else None)

    def max(self, values: list[float]) -> list[float]:
        return self._reduce(values, torch.distributed.ReduceOp.MAX if self.size > 1 else None)

    def _reduce(self, values, op):
        if self.size == 1:
            return list(values)
        device = torch.device("cuda", self.local_rank) if torch.distributed.get_backend() == "nccl" else "cpu"
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t, op=op)
        return t.tolist()

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def rank0_first(self):
        """Rank 0 runs the block first (building what a cache lacks), the others after it.
        If rank 0 fails, torchrun ends the waiting ranks."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


SINGLE = World()


def launched_world() -> World:
    """The World torchrun (or ``study run --nproc``) started this process in; SINGLE when it
    runs alone (no WORLD_SIZE in the environment, or 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "torch.distributed environment"
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")), launcher)


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, nccl on GPU); returns this rank's device."""
    if world.size == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop(world: World) -> None:
    if world.size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def layers(model) -> list[torch.nn.Module]:
    """The decoder layers of a Hugging Face causal LM (Qwen3: model.model.layers)."""
    return list(model.base_model.layers)


def shard(student, teacher, world: World, device: torch.device):
    """The student and its live teacher (or None) in one Distiller, sharded over ``world``:
    every decoder layer, then the root. Gradients are summed over ranks, not averaged (the
    loss is normalised by the global supervised count)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from .train import Distiller

    if teacher is not None:
        teacher.eval().requires_grad_(False)
    mesh = init_device_mesh(device.type, (world.size,))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda"
          else MixedPrecisionPolicy())
    sharded = []
    for model in (student, teacher) if teacher is not None else (student,):
        for layer in layers(model):
            sharded.append(fully_shard(layer, mesh=mesh, mp_policy=mp))
    root = fully_shard(Distiller(student, teacher), mesh=mesh, mp_policy=mp)
    for module in sharded + [root]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return root


def full_state_dict(model, world: World) -> dict | None:
    """The whole (unsharded) state dict of a sharded model on rank 0 (on CPU), None elsewhere.
    A collective: every rank calls it."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, t in model.state_dict().items():
        full = t.full_tensor() if isinstance(t, DTensor) else t
        if world.main:
            out[name] = full.detach().to("cpu", copy=True)
    return out if world.main else None


def run_under_torchrun(cfg, out_dir, name: str, where: list[str] = ("--standalone",)) -> dict:
    """Train ``cfg`` on ``cfg.nproc`` processes (``torchrun <where> ... -m study run``; ``where``:
    a multi-node rendezvous, study/slurm.py) and return the record rank 0 wrote. The config
    goes to ``<out>/.configs/<name>.json`` for the ranks to read."""
    import json
    from dataclasses import asdict

    from . import records

    config = Path(out_dir) / ".configs" / f"{name}.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    records.atomic_write_text(config, json.dumps(asdict(cfg)))  # JSON is YAML
    nodes = next((int(w.split("=")[1]) for w in where if w.startswith("--nnodes=")), 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={cfg.nproc // nodes}",
           "-m", "study", "run", "--config", str(config), "--out", str(out_dir), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_ranks_env())
    if done.returncode:
        raise RuntimeError(f"torchrun exited with status {done.returncode}: {done.stderr[-2000:].strip()}")
    # Rank 0's record: the newest of this config (its id names weights only the ranks loaded).
    wanted = json.loads(json.dumps(asdict(cfg)))
    for path in sorted((p for p in Path(out_dir).iterdir() if records.is_record_name(p.name)),
                       key=lambda p: p.stat().st_mtime_ns, reverse=True):
        rec = records.read(path)
        if rec.get("config") == wanted:
            return rec
    raise RuntimeError(f"torchrun finished but wrote no record of this config into {out_dir}")


def _ranks_env() -> dict:
    """The environment of the ranks: they import the study package this process runs."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}


def launch(cfg, argv: list[str]) -> int:
    """Run ``python -m study <argv>`` on ``cfg.nproc`` processes of this machine under torchrun;
    returns torchrun's exit status. The ranks get the launcher's thread count explicitly
    (torchrun would give each one thread), so this process and the ranks name the run alike."""
    from .identity import resolved_threads

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.nproc}",
           "-m", "study", *argv]
    if not cfg.threads:
        cmd += ["--set", f"threads={resolved_threads(cfg)}"]
    return subprocess.call(cmd, env=_ranks_env())
