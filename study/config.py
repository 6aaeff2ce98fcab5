"""Run configuration: one dataclass per concept, defaults from the paper where it has one.

A ``RunConfig`` is everything that determines a run (with the weights of its teacher and base
student and where it executes: ``study.identity.run_id`` hashes the three). Values are
validated and canonicalised on construction, so ``lsp=1`` and ``lsp=1.0`` are one config. YAML
files hold nested mappings with the same field names; ``--set key=value`` overrides use dotted
paths (``corpus.layout=late``).

    from study.config import load_config
    cfg = load_config("configs/quick.yaml", ["lsp=0.5"])
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .benchmarks import BACKENDS, BENCHMARKS
from .data.synthetic import CorpusConfig
from .losses import LOSSES
from .sections import CONDITIONS, WINDOWS

# --- validation ---------------------------------------------------------------------------------
# Every config validates itself in ``__post_init__``: first the type of every field (from its
# annotation), then its range. Messages start with the field's name, so ``_build`` can prefix
# the nested path (``teacher.steps must be ...``), and say what is valid.

MAX_SEED = 2**32 - 1  # numpy's limit; lm-eval seeds numpy with the run seed
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               tuple: "a list of names"}


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_name(expected) -> str:
    if dataclasses.is_dataclass(expected):
        return f"a {expected.__name__} (a mapping of its keys)"
    return _TYPE_NAMES.get(expected, getattr(expected, "__name__", str(expected)))


def check_types(obj) -> None:
    """Check every field of dataclass ``obj`` against its annotation, canonically: an int given
    for a float field becomes that float (so ``RunConfig(lsp=1) == RunConfig(lsp=1.0)`` and
    both hash alike); a list given for a tuple field becomes that tuple (YAML has lists, and a
    frozen config holds no mutable value); a bool is never an int or a float; a float must be finite."""
    for f in dataclasses.fields(obj):
        expected, value = _hints(type(obj))[f.name], getattr(obj, f.name)
        if isinstance(expected, types.UnionType):  # ``float | None``: None, or the other type
            if value is None:
                continue
            expected = next(t for t in typing.get_args(expected) if t is not type(None))
        if expected is tuple and isinstance(value, list):
            value = tuple(value)
            object.__setattr__(obj, f.name, value)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(obj, f.name, value)  # frozen dataclass
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ValueError(f"{f.name} must be {_type_name(expected)}, got {value!r} ({type(value).__name__})")
        if expected is float and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")


def _at_least(obj, name: str, low: int | float) -> None:
    value = getattr(obj, name)
    if value < low:
        kind = "an integer" if isinstance(value, int) else "a number"
        raise ValueError(f"{name} must be {kind} >= {low}, got {value}")


def _positive(obj, name: str) -> None:
    value = getattr(obj, name)
    if not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value}")


def _interval(obj, name: str, low: float, high: float, closed: str, why: str = "") -> None:
    """``closed`` is one of "[]", "(]", "[)", "()": which ends belong to the interval."""
    value = getattr(obj, name)
    ok_low = value >= low if closed[0] == "[" else value > low
    ok_high = value <= high if closed[1] == "]" else value < high
    if not (ok_low and ok_high):
        raise ValueError(f"{name} must be in {closed[0]}{low:g}, {high:g}{closed[1]}{why}, got {value}")


def _one_of(obj, name: str, options) -> None:
    value = getattr(obj, name)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _context_fits(obj, name: str, model, where: str) -> None:
    """A generation of ``name`` tokens must leave room for the prompt in the model's context."""
    value = getattr(obj, name)
    if getattr(model, "pretrained", "") == "" and value >= model.max_position_embeddings:
        raise ValueError(f"{name} {value} must be below {where}.max_position_embeddings "
                         f"{model.max_position_embeddings} (the context holds the prompt and the generation)")


def pretrain_corpus(run_corpus: CorpusConfig, p: PretrainConfig) -> CorpusConfig:
    """The corpus a teacher or base student (``p``) is pretrained on, given the run's: its
    ``train_examples`` problems and, for the base student, one operation per problem. Only the
    synthetic corpus has one: a hub corpus needs pretrained models. ``p.passes`` (> 0) fixes
    the verification passes of its traces (the other task's too: they take this corpus's)."""
    if run_corpus.source != "synthetic":
        raise ValueError(f"corpus.source {run_corpus.source!r}: teacher and base student are not pretrained on a "
                         "hub corpus; they come from teacher.model.pretrained and base.model.pretrained")
    if p.passes:
        run_corpus = dataclasses.replace(run_corpus, min_verify=p.passes, max_verify=p.passes)
    if p.one_op:
        return dataclasses.replace(run_corpus, min_ops=1, max_ops=1, train_examples=p.train_examples,
                                   val_examples=0, test_examples=0)
    return dataclasses.replace(run_corpus, train_examples=p.train_examples)


def _check_pretrain_corpus(corpus, p, role: str) -> None:
    """The corpus ``role`` (teacher or base student) is pretrained on must exist."""
    try:
        pretrain_corpus(corpus, p)
    except ValueError as e:
        raise ValueError(f"{role}.train_examples {p.train_examples}: its pretraining corpus is impossible: {e}") from None


def _seed(obj, name: str = "seed") -> None:
    value = getattr(obj, name)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**32 - 1], got {value}")


@dataclass(frozen=True)
class TokenizerConfig:
    """The embedded default's BPE, trained once on a fixed mix of every corpus variant so that
    the teacher, the base student and every student share one vocabulary."""

    vocab_size: int = 192
    seed: int = 0
    # Which mix of corpus variants it is trained on (models.tokenizer_texts): 1, the committed
    # study's; 2 adds exploration steps and 0-3 verification passes (configs/spread.yaml, with
    # vocab_size 256: at 192 "Wait, let me double-check." is spelt letter by letter).
    texts: int = 1

    def __post_init__(self):
        check_types(self)
        if self.vocab_size < 100:
            raise ValueError(f"vocab_size must be an integer >= 100 (the 96-character alphabet and 4 special "
                             f"tokens), got {self.vocab_size}")
        _seed(self)
        if self.texts not in (1, 2):
            raise ValueError(f"texts must be 1 or 2 (the mixes of models.tokenizer_texts), got {self.texts}")


@dataclass(frozen=True)
class ModelConfig:
    """A Qwen3 causal LM built from a config (``pretrained`` empty) or loaded from the hub
    (``pretrained: Qwen/Qwen3-4B-Base``), so one code path serves both worlds."""

    pretrained: str = ""  # a hub id (Qwen/Qwen3-8B) or a local folder; "" = built from the fields below
    revision: str = ""  # the hub revision of ``pretrained`` (branch, tag or commit); "" = the default branch
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 16
    intermediate_size: int = 192
    max_position_embeddings: int = 512

    def __post_init__(self):
        check_types(self)
        if self.revision and not self.pretrained:
            raise ValueError(f"revision {self.revision!r} only applies to a pretrained model; set pretrained "
                             "(a hub id) or leave revision empty")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size"):
            _at_least(self, name, 1)
        _at_least(self, "max_position_embeddings", 2)
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim must be an even integer >= 2 (rotary embeddings turn pairs), got {self.head_dim}")
        if not self.pretrained and self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")


@dataclass(frozen=True)
class PretrainConfig:
    """Plain next-token training (on CoT + A) of a cached model: the teacher or the base
    student. Its corpus is the run's corpus with ``train_examples`` problems (the splits deal
    test and validation problems first, so the run's test split is never trained on) and,
    for the base student, one operation per problem."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train_examples: int = 20000
    one_op: bool = False  # base student: one-operation problems only (the one-step facts)
    # Complete traces of another task mixed in (synthetic.other_task_examples): a general prior
    # for how a trace ends, as a Qwen3-*-Base model has, that does not teach the target skill.
    other_task_traces: int = 0
    # Verification passes of every trace it is pretrained on (its problems and the other task's);
    # 0: the run corpus's counts (min_verify to max_verify). A base model's own traces verify
    # less than an LRM teacher's: 1 gives it the prior "a trace ends once a check confirms the
    # answer" (results/LOG.md, 2026-12-03).
    passes: int = 0
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    # Torch threads it trains with, pinned whatever the machine has: the order of a reduction,
    # so the last bits of every step and in the end the weights, change with the thread count
    # (and with nothing else: results/LOG.md, 2026-12-02). 2: what the released artefacts were
    # built with (artefacts/), so `study pretrain --force` on a CPU like this one rebuilds them
    # bit for bit, on any number of cores.
    threads: int = 2
    # How the artefact itself is scored (its reported accuracy): part of the artefact's
    # evaluation, never of its weights, so changing them re-scores without retraining.
    eval_examples: int = 100  # problems scored (teacher: the run's test split)
    eval_max_gen_toks: int = 256
    eval_batch_size: int = 50

    def __post_init__(self):
        check_types(self)
        for name in ("train_examples", "steps", "batch_size", "eval_examples", "eval_max_gen_toks",
                     "eval_batch_size"):
            _at_least(self, name, 1)
        _at_least(self, "other_task_traces", 0)
        _at_least(self, "passes", 0)
        _at_least(self, "threads", 1)
        if self.batch_size > self.train_examples:
            raise ValueError(f"batch_size {self.batch_size} exceeds train_examples {self.train_examples}: "
                             "one batch needs that many examples; lower batch_size or raise train_examples")
        _positive(self, "lr")
        _at_least(self, "weight_decay", 0.0)
        _seed(self)
        _context_fits(self, "eval_max_gen_toks", self.model, "model")


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
    # Our extension: a lead span of the same budget that keeps the ending (</think>, the answer
    # and the end token), so the student sees how a trace ends (sections.kept_positions).
    keep_answer: bool = False
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
    # The paper's code uses torch's defaults for these (AdamW(model.parameters()) and
    # OneCycleLR(max_lr, total_steps, pct_start), results/LOG.md): the lr starts at
    # lr / lr_div_factor and ends at lr / (lr_div_factor * lr_final_div_factor), the one-cycle
    # schedule moves AdamW's beta1 between 0.95 and 0.85, and weight decay also hits the
    # norms and the (tied) embeddings.
    cycle_momentum: bool = True
    lr_div_factor: float = 25.0
    lr_final_div_factor: float = 1e4
    decay_norms_and_embeddings: bool = True
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
    max_gen_toks: int = 256  # new tokens per generation (paper 32,768 on its benchmarks)
    eval_batch_size: int = 50
    # The paper's benchmarks (study/benchmarks.py), scored after the synthetic test split; empty:
    # the synthetic split only, and benchmark_dir and eval_backend are unused.
    benchmarks: tuple = ()  # names: aime24, aime25 (the paper's), math500, gpqa_diamond
    benchmark_dir: str = ""  # folder with one <name>.jsonl per benchmark in the hub schema; "" = the hub
    # Decoding of every evaluation (the synthetic test split and the benchmarks). The embedded
    # default decodes greedily, one generation per problem; the paper samples 64 per problem at
    # temperature 0.6, top_p 0.95 (configs/paper/*.yaml set those) and pass@1 is averaged over them.
    samples: int = 1  # generations per problem
    eval_temperature: float = 0.0  # 0 = greedy; `temperature` above is the KD loss's
    eval_top_p: float = 0.95  # the paper's; read only when sampling
    eval_backend: str = "hf"  # hf (in-memory model) | vllm (the paper's; needs the vllm package)
    # --- measurement -------------------------------------------------------------------------
    attn_implementation: str = "eager"  # eager: the profiler sees the attention matmuls
    profile_steps: int = 3  # optimiser steps measured under torch.profiler for FLOPs
    # --- infrastructure (not part of the run id) -----------------------------------------------
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int = 0  # torch threads; 0: torch's default (the cores). Part of the run id
    save_student: bool = True  # save the distilled student beside the record (<run_id>.student/)
    cache_dir: str = "cache"  # tokenizer, teacher, base student (keyed by config hash)
    # Processes (GPUs) that train the run together: FSDP2 under torchrun (study/distributed.py).
    # The optimiser steps are the single-process ones; the count is part of the execution.
    nproc: int = 1
    # Recompute each student layer's activations in backward instead of keeping them: less
    # memory, more compute, the same gradients.
    activation_checkpointing: bool = False

    def __post_init__(self):
        check_types(self)
        # --- what the paper varies, the loss, the optimiser
        _one_of(self, "condition", CONDITIONS)
        _interval(self, "lsp", 0, 1, "(]")
        _one_of(self, "window", WINDOWS)
        if self.keep_answer and (self.window != "left" or self.cut_after_think):
            raise ValueError(f"keep_answer keeps the ending of a lead span: it needs window left and "
                             f"cut_after_think false, got window {self.window!r}, cut_after_think "
                             f"{str(self.cut_after_think).lower()}")
        _interval(self, "random_mask", 0, 1, "[)")
        _interval(self, "alpha", 0, 1, "[]")
        _one_of(self, "loss", LOSSES)
        _positive(self, "temperature")
        _interval(self, "beta", 0, 1, "()", " (the JSD mixture weight)")
        _positive(self, "lr")
        _at_least(self, "weight_decay", 0.0)
        _interval(self, "warmup", 0, 1, "[)", " (the fraction of steps spent warming up)")
        _positive(self, "grad_clip")
        for name in ("lr_div_factor", "lr_final_div_factor"):
            _positive(self, name)
        for name in ("batch_size", "grad_accum", "epochs"):
            _at_least(self, name, 1)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum} "
                             "(the micro-batches split one batch evenly)")
        if self.batch_size > self.corpus.train_examples:
            raise ValueError(f"batch_size {self.batch_size} exceeds corpus.train_examples "
                             f"{self.corpus.train_examples}: one batch needs that many examples")
        _seed(self)
        # --- data and models
        _one_of(self, "init", ("base", "scratch"))
        self._check_pretrained()
        if self.corpus.source == "synthetic":
            for role in ("teacher", "base") if self.init == "base" else ("teacher",):
                _check_pretrain_corpus(self.corpus, getattr(self, role), role)
        else:
            self._check_hub_corpus()
        _one_of(self, "teacher_cache_mode", ("auto", "exact", "topk"))
        _at_least(self, "teacher_cache_topk", 1)
        # --- evaluation and measurement
        for name in ("eval_examples", "max_gen_toks", "eval_batch_size", "profile_steps"):
            _at_least(self, name, 1)
        if self.corpus.source == "synthetic" and self.eval_examples > self.corpus.test_examples:
            raise ValueError(f"eval_examples {self.eval_examples} exceeds corpus.test_examples "
                             f"{self.corpus.test_examples}; lower eval_examples or raise corpus.test_examples")
        _context_fits(self, "max_gen_toks", self.base.model, "base.model")  # the student's architecture
        self._check_benchmarks()
        _one_of(self, "attn_implementation", ("eager", "sdpa", "flash_attention_2"))
        # --- infrastructure
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {self.device!r}")
        _at_least(self, "threads", 0)  # 0: torch's default
        _at_least(self, "nproc", 1)
        if self.batch_size % (self.nproc * self.grad_accum):
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of nproc {self.nproc} x grad_accum "
                             f"{self.grad_accum}: every process takes an equal share of every batch")
        if not self.cache_dir:
            raise ValueError("cache_dir must be a folder name, got an empty string")

    def _check_pretrained(self):
        """Pretrained models (teacher.model.pretrained, base.model.pretrained) come as a pair, on a
        hub corpus, with the student starting from its pretrained base: the student's tokenizer
        renders the corpus and must be the teacher's, and nothing is pretrained here."""
        teacher, base = bool(self.teacher.model.pretrained), bool(self.base.model.pretrained)
        if not (teacher or base):
            return
        if teacher != base:
            set_, unset = ("teacher", "base") if teacher else ("base", "teacher")
            raise ValueError(f"{set_}.model.pretrained is set but {unset}.model.pretrained is not: a pretrained "
                             "teacher distils into a pretrained student (one tokenizer); set both or neither")
        if self.corpus.source == "synthetic":
            raise ValueError("teacher.model.pretrained and base.model.pretrained need a hub corpus (corpus.source, "
                             "e.g. bespoke_stratos); the synthetic corpus trains its own teacher and base student")
        if self.init != "base":
            raise ValueError(f"init {self.init!r} with base.model.pretrained: the student starts from the pretrained "
                             "base; use init base")

    def _check_hub_corpus(self):
        """A hub corpus is rendered with the student's chat template and has no synthetic test
        split: it needs a pretrained teacher and student and the paper's benchmarks."""
        source = self.corpus.source
        if not (self.teacher.model.pretrained and self.base.model.pretrained):
            raise ValueError(f"corpus.source {source!r} needs a pretrained teacher and student (their tokenizer "
                             "renders the corpus): set teacher.model.pretrained and base.model.pretrained "
                             "(e.g. Qwen/Qwen3-8B and Qwen/Qwen3-1.7B-Base, or local folders)")
        if not self.benchmarks:
            raise ValueError(f"corpus.source {source!r} has no synthetic test split to score: name the paper's "
                             f"benchmarks, e.g. --set benchmarks=[aime24] --set benchmark_dir=DIR "
                             f"(from {', '.join(BENCHMARKS)})")

    def _check_benchmarks(self):
        valid = ", ".join(BENCHMARKS)
        for name in self.benchmarks:
            if name not in BENCHMARKS:
                raise ValueError(f"benchmarks: unknown benchmark {name!r}; valid: {valid}")
        if len(set(self.benchmarks)) < len(self.benchmarks):
            raise ValueError(f"benchmarks lists a benchmark twice: {list(self.benchmarks)}")
        if self.benchmark_dir and not self.benchmarks:
            raise ValueError(f"benchmark_dir {self.benchmark_dir!r} is set but benchmarks is empty; "
                             f"name the benchmarks to score (from {valid})")
        _at_least(self, "samples", 1)
        _at_least(self, "eval_temperature", 0.0)
        _interval(self, "eval_top_p", 0, 1, "(]")
        _one_of(self, "eval_backend", BACKENDS)
        if self.samples > 1 and self.eval_temperature == 0:
            raise ValueError(f"samples {self.samples} with eval_temperature 0: greedy decoding gives one "
                             "generation n times; sample (eval_temperature > 0) or set samples=1")

    @property
    def greedy(self) -> bool:
        """One greedy generation per problem: the embedded default, and every evaluation before
        the decoding keys applied to the synthetic split."""
        return self.samples == 1 and self.eval_temperature == 0


# Fields that never change a run's results (where it runs, what is stored, which steps the
# profiler sees): left out of run ids (study/identity.py) and of the analysis' variants.
# ``nproc`` is part of the execution instead (study/identity.py); activation checkpointing
# recomputes the same activations.
NON_SEMANTIC = ("device", "cache_dir", "threads", "save_student", "profile_steps", "nproc", "activation_checkpointing")


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a (nested) dataclass or mapping."""
    data = asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]



# --- building configs from YAML and overrides ---------------------------------------------------


def _build(cls, data: dict, where: str):
    """Instantiate dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, fields, n=1)]
        hint = f" (did you mean {', '.join(where + m for m in close)}?)" if close else ""
        raise ValueError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}{hint}; "
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
            kwargs[name] = _from_yaml(cls, name, value)
    try:
        return cls(**kwargs)  # types and ranges: each config's __post_init__
    except ValueError as e:
        if where:  # the messages start with the field's name: give its full path
            raise ValueError(f"{where}{e}") from None
        raise


def _from_yaml(cls, name: str, value: Any) -> Any:
    """YAML 1.1 reads 8e-3 (no dot) as a string; a float field takes it as the number meant.
    Everything else is checked by the config's own ``check_types``."""
    if _hints(cls)[name] is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
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


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{what}{where}".split())


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML: 0.5, true, left, [1, 2])."""
    if not isinstance(text, str):
        raise ValueError(f"an override must be a 'key=value' string, got {text!r}")
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. lsp=0.5)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ValueError(f"override {text!r}: the key before '=' must be a config key, "
                         "dotted for nested ones (e.g. corpus.layout=late)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"override {text!r}: value is not valid YAML ({yaml_problem(e)})") from None
    return path, value


def config_from_dict(data: dict, overrides: list[str] = ()) -> RunConfig:
    if isinstance(overrides, (str, bytes)):
        raise ValueError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}; "
                         f"pass [{overrides!r}]")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("a run config must be a mapping of config keys to values (key: value lines), "
                         f"got a {type(data).__name__}")
    data = _merge({}, data, "")
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
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder; give a run config YAML (see configs/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file; give a run config YAML (see configs/)") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: a run config must be a mapping of config keys to values (key: value lines), "
                         f"got a {type(data).__name__}")
    return config_from_dict(data or {}, overrides)
