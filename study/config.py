"""Run configuration: one dataclass per concept, defaults from the paper where it has one.

A ``RunConfig`` is everything that determines a run; ``run_id`` hashes its semantic fields, so
the same config always names the same record. YAML files hold nested mappings with the same
field names; ``--set key=value`` overrides use dotted paths (``corpus.layout=late``).

    from study.config import load_config
    cfg = load_config("configs/quick.yaml", ["lsp=0.5"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.synthetic import CorpusConfig
from .losses import LOSSES
from .sections import CONDITIONS, WINDOWS


@dataclass(frozen=True)
class TokenizerConfig:
    """The embedded default's BPE, trained once on a fixed mix of every corpus variant so that
    the teacher, the base student and every student share one vocabulary."""

    vocab_size: int = 192
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """A Qwen3 causal LM built from a config (``pretrained`` empty) or loaded from the hub
    (``pretrained: Qwen/Qwen3-4B-Base``), so one code path serves both worlds."""

    pretrained: str = ""
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 16
    intermediate_size: int = 192
    max_position_embeddings: int = 512

    def __post_init__(self):
        if not self.pretrained and self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


@dataclass(frozen=True)
class PretrainConfig:
    """Plain next-token training (on CoT + A) of a cached model: the teacher or the base
    student. Its corpus is the run's corpus with ``train_examples`` problems (the splits deal
    test and validation problems first, so the run's test split is never trained on) and,
    for the base student, one operation per problem."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train_examples: int = 20000
    one_op: bool = False  # base student: one-operation problems only (the one-step facts)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    eval_examples: int = 100  # problems scored after training (teacher: the run's test split)


def default_teacher() -> PretrainConfig:
    # 4 layers, hidden 128 (~0.8M parameters), trained on full traces of the run's corpus.
    return PretrainConfig(
        model=ModelConfig(hidden_size=128, num_hidden_layers=4, head_dim=32, intermediate_size=384),
        train_examples=20000, steps=2000, batch_size=32, lr=2e-3, eval_examples=200,
    )


def default_base() -> PretrainConfig:
    # The shared "base" student: all 300 one-operation problems (mod 10) in the same trace
    # shape teach the notation and every one-step fact, not the multi-step long-CoT skill,
    # as a Qwen3-*-Base model knows arithmetic but has not learnt long reasoning traces.
    # Its knowledge check is in-sample by design: it must know the facts, not infer them.
    return PretrainConfig(model=ModelConfig(), train_examples=300, one_op=True, steps=1500,
                          batch_size=32, lr=4e-3)


@dataclass(frozen=True)
class RunConfig:
    # --- what the paper varies -------------------------------------------------------------
    condition: str = "P+CoT+A"  # supervision allocation (RQ1); the paper's default is all sections
    lsp: float = 1.0  # lead-span proportion (RQ2): keep max(1, int(len * lsp)) tokens
    window: str = "left"  # which span of length lsp*len is kept; "left" is the lead span
    cut_after_think: bool = False  # drop A (everything after </think>) before truncation
    random_mask: float = 0.0  # fraction of supervised tokens dropped at random (control)
    # --- loss (paper: 0.5 CE + 0.5 forward KL, temperature 1) --------------------------------
    alpha: float = 0.5
    loss: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5  # JSD mixture weight, used by loss=jsd only
    # --- optimisation (paper: AdamW, wd 0.05, one-cycle with 10% warm-up, clip 1.0, 2 epochs)
    lr: float = 4e-3  # paper 4e-6 for 4B models; tiny students need a larger step
    weight_decay: float = 0.05
    warmup: float = 0.1
    grad_clip: float = 1.0
    # Examples per optimiser step (not tokens), as in the paper. The paper's 16 would need 4
    # epochs here; 8 examples x 3 epochs clears the fidelity floor in less time (LOG.md).
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimiser step; batch_size must divide by it
    epochs: int = 3  # paper: 2 (of 17k traces); this corpus is 3,200
    seed: int = 42
    # --- data and models ---------------------------------------------------------------------
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: PretrainConfig = field(default_factory=default_teacher)
    base: PretrainConfig = field(default_factory=default_base)
    init: str = "base"  # student initialisation: "base" (cached base student) or "scratch"
    # --- teacher outputs (study/teacher_cache.py) -------------------------------------------
    teacher_cache: bool = True  # one cached teacher pass per example instead of one per step
    teacher_cache_mode: str = "auto"  # exact (full distributions) | topk | auto (exact if V <= 4096)
    teacher_cache_topk: int = 64  # k of the top-k mode (plus one bucket for the tail mass)
    # --- evaluation --------------------------------------------------------------------------
    eval_examples: int = 200  # test problems scored through lm-eval (<= corpus.test_examples)
    max_gen_toks: int = 256
    eval_batch_size: int = 50
    # --- measurement -------------------------------------------------------------------------
    attn_implementation: str = "eager"  # eager: the profiler sees the attention matmuls
    profile_steps: int = 3  # optimiser steps measured under torch.profiler for FLOPs
    # --- infrastructure (not part of the run id) -----------------------------------------------
    device: str = "auto"  # auto: cuda if available, else cpu
    cache_dir: str = "cache"  # tokenizer, teacher, base student (keyed by config hash)

    def __post_init__(self):
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; valid: {', '.join(CONDITIONS)}")
        if not 0 < self.lsp <= 1:
            raise ValueError(f"lsp must be in (0, 1], got {self.lsp}")
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; valid: {', '.join(WINDOWS)}")
        if not 0 <= self.random_mask < 1:
            raise ValueError(f"random_mask must be in [0, 1), got {self.random_mask}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.init not in ("base", "scratch"):
            raise ValueError(f"unknown init {self.init!r}; valid: base, scratch")
        if self.teacher_cache_mode not in ("auto", "exact", "topk"):
            raise ValueError(f"unknown teacher_cache_mode {self.teacher_cache_mode!r}; valid: auto, exact, topk")
        if self.teacher_cache_topk < 1:
            raise ValueError(f"teacher_cache_topk must be >= 1, got {self.teacher_cache_topk}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum}"
            )
        if self.eval_examples > self.corpus.test_examples:
            raise ValueError(
                f"eval_examples {self.eval_examples} exceeds corpus.test_examples "
                f"{self.corpus.test_examples}"
            )
        if self.attn_implementation not in ("eager", "sdpa", "flash_attention_2"):
            raise ValueError("attn_implementation must be eager, sdpa or flash_attention_2")


NON_SEMANTIC = ("device", "cache_dir")


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a (nested) dataclass or mapping."""
    data = asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def run_id(cfg: RunConfig) -> str:
    semantic = {k: v for k, v in asdict(cfg).items() if k not in NON_SEMANTIC}
    return config_hash(semantic)


# --- building configs from YAML and overrides ---------------------------------------------------


def _build(cls, data: dict, where: str):
    """Instantiate dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys{' under ' + where.rstrip('.') if where else ''}: {', '.join(fields)}"
        )
    kwargs = {}
    defaults = cls() if cls is RunConfig else None
    for name, value in data.items():
        sub = _dataclass_type(cls, name)
        if sub is not None:
            base = asdict(getattr(defaults, name)) if defaults is not None else {}
            kwargs[name] = _build(sub, _merge(base, value, where + name + "."), where + name + ".")
        else:
            kwargs[name] = _check_type(cls, name, value, where)
    return cls(**kwargs)


def _check_type(cls, name: str, value: Any, where: str) -> Any:
    """YAML gives str/int/float/bool: accept exactly the field's type (an int for a float)."""
    expected = typing.get_type_hints(cls)[name]
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads 8e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ValueError(f"config key {where}{name} must be {expected.__name__}, got {value!r}")
    return value


_NESTED = {
    "corpus": CorpusConfig,
    "tokenizer": TokenizerConfig,
    "teacher": PretrainConfig,
    "base": PretrainConfig,
    "model": ModelConfig,
}


def _dataclass_type(cls, name: str):
    return _NESTED.get(name) if name in {f.name for f in dataclasses.fields(cls)} else None


def _merge(base: dict, override: Any, where: str) -> dict:
    if not isinstance(override, dict):
        raise ValueError(f"{where.rstrip('.')} must be a mapping, got {override!r}")
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v, where + k + ".") if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML: 0.5, true, left, [1, 2])."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. lsp=0.5)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def config_from_dict(data: dict, overrides: list[str] = ()) -> RunConfig:
    data = _merge({}, data or {}, "")
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {part} is not a mapping")
        node[path[-1]] = value
    return _build(RunConfig, data, "")


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply ``key=value`` overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    return config_from_dict(data or {}, overrides)
