"""What names a run: its canonical config, where it executes and the weights it starts from.

A run id is a hash of everything that changes a run's results and of nothing else:

- the semantic config, canonical: values typed by the config (``lsp=1`` is ``lsp=1.0``) and
  fields that cannot change the run left out (``INERT`` and the conditional cases in
  ``semantic_config``: ``beta`` outside JSD, ``window`` at lsp 1.0, top-k settings of a cache
  that stores exact distributions anyway, the artefacts' own evaluation settings, the benchmark
  settings of a run that scores no benchmark);
- the execution: device type, compute dtype and the torch thread count (reduction order, so
  the numbers, change with each of them: results/LOG.md);
- the SHA-256 of the teacher's and the base student's weights, so two records with one id
  started from the same tensors, wherever those were trained.

Inert fields stay in the record's ``config``; they are only left out of the hash.

    from study.identity import run_id, config_key
    config_key(cfg)                    # config + execution: equal for cells that are one run
    run_id(cfg, {"teacher": sha, "base": sha})
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import torch

from .config import NON_SEMANTIC, RunConfig, config_hash
from .models import tokenizer_fields

# Where and how a run is executed or stored (the part of the execution that does change the
# numbers is in ``execution``), and what is measured about it: profiled steps run on a
# snapshot of the student that is restored before training (study/run.py).
INERT = NON_SEMANTIC
# The artefacts' own evaluation settings: they change the artefact's reported accuracy,
# never its weights or a run's results.
ARTEFACT_EVAL = ("eval_examples", "eval_max_gen_toks", "eval_batch_size")
# The paper's benchmarks and how they are sampled: inert when ``benchmarks`` is empty (nothing
# reads them), so adding them left every earlier run id as it was.
BENCHMARK_KEYS = ("benchmarks", "benchmark_dir", "samples", "eval_temperature", "eval_top_p", "eval_backend")
# How the synthetic test split is decoded: hashed unless greedy with one generation, the only
# decoding before the keys applied to it, so every earlier run id holds.
DECODING_KEYS = ("samples", "eval_temperature", "eval_top_p")
# The thread count every artefact was trained with before it was pinned (PretrainConfig.threads).
DEFAULT_ARTEFACT_THREADS = 2
# Added tokens of the embedded tokenizer beyond its BPE vocabulary (<think>, </think>).
ADDED_TOKENS = 2


def resolved_cache_mode(cfg: RunConfig) -> str:
    """``teacher_cache_mode`` with ``auto`` resolved where the config alone decides it: the
    embedded tokenizer has at most ``vocab_size + ADDED_TOKENS`` tokens (its BPE may stop
    short of ``vocab_size``), so up to the exact-mode limit ``auto`` is ``exact``; otherwise
    (a hub tokenizer, a larger request) it stays ``auto`` and the top-k settings stay hashed."""
    from .teacher_cache import EXACT_MAX_VOCAB

    if cfg.teacher_cache_mode == "auto" and not cfg.teacher.model.pretrained \
            and cfg.tokenizer.vocab_size + ADDED_TOKENS <= EXACT_MAX_VOCAB:
        return "exact"
    return cfg.teacher_cache_mode


def artefact_config(p) -> dict:
    """A teacher's or base student's pretraining config without its evaluation settings."""
    d = {k: v for k, v in asdict(p).items() if k not in ARTEFACT_EVAL}
    # Material added after the artefact format was fixed: absent at its neutral value, so the
    # artefacts built without it keep their keys (and released hashes their meaning).
    for key in ("other_task_traces", "passes"):
        if not d.get(key):
            d.pop(key, None)
    # The pinned thread count came later too; every earlier artefact was built with 2 threads
    # (its meta's ``built.threads``), so 2 is the neutral value and keeps their keys and ids.
    if d.get("threads") == DEFAULT_ARTEFACT_THREADS:
        d.pop("threads", None)
    d["model"] = model_identity(p.model)
    return d


def model_identity(m) -> dict:
    """A ModelConfig as hashed: without ``revision`` when it is empty (the field came after the
    artefact format, so every earlier key holds); a pretrained model is its id and revision
    only (the architecture fields are not read: the checkpoint has its own)."""
    if m.pretrained:
        return {"pretrained": m.pretrained, "revision": m.revision}
    d = asdict(m)
    d.pop("revision")
    return d


def role_identity(p) -> dict:
    """A teacher's or base student's share of the run id: its pretraining config, or for a
    pretrained model (nothing is pretrained) only which checkpoint it is."""
    if p.model.pretrained:
        return {"model": model_identity(p.model)}
    return artefact_config(p)


def benchmark_data(cfg: RunConfig) -> str | dict[str, str]:
    """What ``benchmark_dir`` stands for in the id: the SHA-256 of each benchmark file it holds,
    not its path. The path names where the data sits, the content is what is scored: the same
    files in another folder (another machine) are one run, and a file edited in place is a new
    one. "" (the hub) stays "": the hub's default branch, whose commit is recorded per evaluation."""
    from .benchmarks import check_files, file_sha256, local_file

    if not cfg.benchmark_dir:
        return ""
    check_files(cfg.benchmarks, cfg.benchmark_dir)
    return {name: file_sha256(local_file(name, cfg.benchmark_dir)) for name in cfg.benchmarks}


def semantic_config(cfg: RunConfig) -> dict:
    """The fields of ``cfg`` that can change the run's results, canonical."""
    d = asdict(cfg)
    for key in INERT:
        d.pop(key)
    if cfg.loss != "jsd":
        d.pop("beta")  # the JSD mixture weight; no other divergence reads it
    if cfg.lsp == 1.0:
        d.pop("window")  # every window of the whole sequence is the whole sequence
    if cfg.lsp == 1.0 or not cfg.keep_answer:
        # The whole sequence keeps its ending; keep_answer false is the run from before the
        # field existed, and hashes as it did then.
        d.pop("keep_answer")
    if not cfg.teacher_cache:
        d.pop("teacher_cache_mode"), d.pop("teacher_cache_topk")
    else:
        d["teacher_cache_mode"] = resolved_cache_mode(cfg)
        if d["teacher_cache_mode"] == "exact":
            d.pop("teacher_cache_topk")
    if not cfg.benchmarks:
        for key in BENCHMARK_KEYS:
            if cfg.greedy or key not in DECODING_KEYS:
                d.pop(key)
    else:
        d["benchmark_dir"] = benchmark_data(cfg)
    if cfg.eval_temperature == 0:
        d.pop("eval_top_p", None)  # greedy decoding never reads it
    d["corpus"] = cfg.corpus.identity()  # the fields of its source (a synthetic corpus hashes as before)
    d["tokenizer"] = tokenizer_fields(cfg.tokenizer)  # its first mix of texts hashes as before
    # A pretrained teacher or base is its checkpoint (its pretraining settings are inert).
    d["teacher"] = role_identity(cfg.teacher)
    # A scratch student only takes the base's architecture; the base's training is inert.
    d["base"] = role_identity(cfg.base) if cfg.init == "base" else {"model": model_identity(cfg.base.model)}
    return d


def resolved_threads(cfg: RunConfig) -> int:
    return cfg.threads or torch.get_num_threads()


def execution(cfg: RunConfig) -> dict:
    """Where the run computes: device type, compute dtype, torch threads and, on several
    processes, their number (absent for one, so single-process ids are as they were)."""
    from .train import pick_device

    device = pick_device(cfg.device).type
    out = {"device": device, "dtype": "bfloat16" if device == "cuda" else "float32",
           "threads": resolved_threads(cfg)}
    if cfg.nproc > 1:  # the shares and the reduction over ranks change the summation order
        out["world_size"] = cfg.nproc
    return out


def config_key(cfg: RunConfig) -> str:
    """Hash of the canonical config and its execution: configs with equal keys are one run
    (given the same artefacts), so a grid keeps such cells once."""
    return config_hash({"config": semantic_config(cfg), "execution": execution(cfg)})


def run_id(cfg: RunConfig, weights: dict[str, str | None]) -> str:
    """The run's id: its config key and the weight hashes of its teacher and base student
    (``weights["base"]`` is None for a scratch student)."""
    if not weights.get("teacher") or (cfg.init == "base" and not weights.get("base")):
        raise ValueError(f"a run id needs the weight hashes of its teacher and base student, got {weights}")
    return config_hash({"config": semantic_config(cfg), "execution": execution(cfg),
                        "weights": {"teacher": weights["teacher"],
                                    "base": weights.get("base") if cfg.init == "base" else None}})


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's tensors (names, dtypes, shapes and bytes, in name order): equal
    for equal weights however they were saved or loaded."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)  # 1-D: a 0-dim tensor has no byte view
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()
