"""Synthetic LRM-style reasoning corpus: the embedded default of the study.

Each example is a fully parenthesised chain of modular operations, e.g. ``((3+4)*2)-5 mod 10``.
Its trace has the shape the paper describes for real long-CoT traces (PAPER.md, "Where the
answer appears"): the CoT restates the problem, explores (a variable number of planning or
abandoned steps: "Maybe 2-5 first? No, the brackets come first."), derives the answer step by
step, states it in ``\\boxed{}``, then runs a variable number of verification passes ("Wait,
let me double-check.") that recompute and restate it; the answer section A is a one-line
summary with the final ``\\boxed{}``. With the counts of ``configs/spread.yaml`` (0-3
exploratory steps, 1-3 verification passes) the first answer spreads over most of the CoT
with its mean near the middle, as the paper reports for real traces (``study corpus-stats``
prints the distribution; ``figures/first_answer_position``); the defaults (no exploration,
two passes) are the corpus of the committed study.

The ``late`` layout puts the reflection passes *before* the derivation (planning passes that
name the operations without computing them), so the answer appears only at the end of the
CoT: a corpus on which truncation should stop working.

Splits hold disjoint problems: problems are drawn without replacement from one seeded stream
and dealt out test first, then validation, then train, so growing the training set never
changes the test set.

    python -c "from study.data.synthetic import CorpusConfig, make_splits; \\
               print(make_splits(CorpusConfig())['train'][0].completion)"
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass

from .hub import SOURCES as HUB_SOURCES

OPS = ("+", "-", "*")
LAYOUTS = ("early", "late")
VERIFY_CUES = ("Wait, let me double-check.", "Let me verify.", "Check again.")
PLAN_CUES = ("Hmm, let me plan.", "Let me think.", "First, the order.")
EXPLORE_KINDS = ("plan", "wrong_start", "restart")  # wrong_start and restart need two operations
OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class CorpusConfig:
    """The run's corpus (``corpus.*``): ``source`` synthetic (this module's generator, the
    default) or one of the paper's five hub corpora (study/data/hub.py, read by
    study/data/corpus.py). The synthetic knobs' defaults are the corpus of the committed study
    (the first answer at about 0.40 of the CoT); ``configs/spread.yaml`` spreads it over most
    of the CoT with its mean near the middle (results/LOG.md has both distributions, measured
    by ``study corpus-stats``). Knobs that do not apply to the source must stay at their defaults
    (``SYNTHETIC_ONLY``, ``HUB_ONLY``) and are left out of every hash (``identity``), so a
    synthetic corpus hashes exactly as before the hub sources existed."""

    source: str = "synthetic"  # synthetic | openthoughts | bespoke_stratos | sky_t1 | synthetic1 | nemotron
    min_ops: int = 2  # difficulty: operations per problem, inclusive range
    max_ops: int = 3
    min_verify: int = 2  # reflection passes after (early) or before (late) the derivation
    max_verify: int = 2
    # Exploration before the derivation (both layouts): planning or abandoned steps that do
    # not state the answer. With max_explore 0 no count is drawn, so a corpus without
    # exploration is the same corpus as before the knob existed.
    min_explore: int = 0
    max_explore: int = 0
    layout: str = "early"  # "early": answer near the middle of the CoT; "late": at its end
    modulus: int = 10  # single-digit arithmetic: one token per number
    train_examples: int = 3200
    val_examples: int = 100
    test_examples: int = 200
    seed: int = 1234  # the corpus seed, separate from the run seed so runs share one corpus
    # --- hub sources only (study/data/hub.py; paper: train 40,000 / val 1,000 for OpenThoughts,
    # 8,000 / 1,000 for Bespoke-Stratos and Sky-T1: set train_examples and val_examples)
    path: str = ""  # "" = the source's hub id; or a local folder (or one data file) laid out as on the hub
    revision: str = ""  # hub revision to download ("" = default branch; the resolved commit is recorded)
    max_tokens: int = 4096  # examples of at least this many tokens after rendering are dropped (paper: < 4k)
    split_seed: int = 42  # numpy permutation of the kept rows, first val_examples to validation (paper)
    min_score: float | None = None  # synthetic1 only: drop rows scored below it (None: keep all, as the paper)
    max_rows: int = 0  # read only the first N rows (0: all); an extension for the multi-million-row sets

    def __post_init__(self):
        # Messages start with the field's name (config.py prefixes the path: corpus.min_ops).
        # The same type check as every other config (config.py imports this module, so late).
        from ..config import check_types

        check_types(self)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {self.source!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(CorpusConfig)}
        foreign = HUB_ONLY if self.source == "synthetic" else SYNTHETIC_ONLY
        for name in foreign:
            if getattr(self, name) != defaults[name]:
                where = "the hub sources" if self.source == "synthetic" else "source synthetic"
                raise ValueError(f"{name} only applies to {where}, not to source {self.source!r} (got "
                                 f"{getattr(self, name)!r}): leave it at its default {defaults[name]!r}")
        if self.source != "synthetic":
            self.hub_config()  # the hub module validates its fields
            return
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"min_ops and max_ops need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if not 0 <= self.min_verify <= self.max_verify:
            raise ValueError(
                f"min_verify and max_verify need 0 <= min_verify <= max_verify, got {self.min_verify}, {self.max_verify}"
            )
        if not 0 <= self.min_explore <= self.max_explore:
            raise ValueError(f"min_explore and max_explore need 0 <= min_explore <= max_explore, "
                             f"got {self.min_explore}, {self.max_explore}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if not 2 <= self.modulus <= 10:
            raise ValueError(f"modulus must be in [2, 10] (single digits), got {self.modulus}")
        if self.train_examples < 1:
            raise ValueError(f"train_examples must be an integer >= 1, got {self.train_examples}")
        for name in ("val_examples", "test_examples", "seed"):  # random.Random(-s) is random.Random(s)
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)}")
        distinct = sum(
            self.modulus ** (n + 1) * len(OPS) ** n for n in range(self.min_ops, self.max_ops + 1)
        )
        wanted = self.train_examples + self.val_examples + self.test_examples
        if wanted > distinct:
            raise ValueError(
                f"train_examples + val_examples + test_examples: the corpus asks for {wanted} distinct "
                f"problems but only {distinct} exist with {self.min_ops}-{self.max_ops} operations mod "
                f"{self.modulus}; lower train_examples or raise max_ops"
            )

    def hub_config(self):
        """The ``hub.HubCorpusConfig`` of a hub source."""
        from .hub import HubCorpusConfig

        if self.source == "synthetic":
            raise ValueError("corpus.source is synthetic: it has no hub configuration")
        return HubCorpusConfig(**{name: getattr(self, name) for name in HUB_FIELDS})

    def identity(self) -> dict:
        """The fields that apply to the source, for hashes: a synthetic corpus gives exactly the
        dict it gave before ``source`` and the hub fields existed."""
        names = [f.name for f in dataclasses.fields(self)]
        keep = [n for n in names if n not in HUB_ONLY + ("source",)] if self.source == "synthetic" else HUB_FIELDS
        if self.source == "synthetic" and not self.max_explore:
            # No exploration is the corpus from before the knob: it hashes as it did then.
            keep = [n for n in keep if n not in ("min_explore", "max_explore")]
        return {n: getattr(self, n) for n in keep}


# Knobs of one kind of source only; they must stay at their defaults for the other.
SYNTHETIC_ONLY = ("min_ops", "max_ops", "min_verify", "max_verify", "min_explore", "max_explore", "layout",
                  "modulus", "test_examples", "seed")
HUB_ONLY = ("path", "revision", "max_tokens", "split_seed", "min_score", "max_rows")
HUB_FIELDS = ("source", "path", "revision", "max_tokens", "train_examples", "val_examples", "split_seed",
              "min_score", "max_rows")  # hub.HubCorpusConfig's fields
SOURCES = ("synthetic", *HUB_SOURCES)


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]
    modulus: int

    @property
    def expression(self) -> str:
        expr = str(self.operands[0])
        for i, (op, b) in enumerate(zip(self.ops, self.operands[1:])):
            # Parenthesise every intermediate result except the last, as in ((3+4)*2)-5.
            expr = f"{expr}{op}{b}" if i == 0 else f"({expr}){op}{b}"
        return expr

    def steps(self) -> list[tuple[int, str, int, int]]:
        """(a, op, b, result) for each operation, left to right."""
        out, acc = [], self.operands[0]
        for op, b in zip(self.ops, self.operands[1:]):
            res = {"+": acc + b, "-": acc - b, "*": acc * b}[op] % self.modulus
            out.append((acc, op, b, res))
            acc = res
        return out

    @property
    def answer(self) -> int:
        return self.steps()[-1][3]


@dataclass(frozen=True)
class Example:
    """One trace. ``cot`` is the text between <think> and </think>; the tokenizer module
    renders prompt + <think> + cot + </think> + answer_text + eos."""

    id: str
    question: str
    cot: str
    answer_text: str
    answer: str

    @property
    def completion(self) -> str:
        return f"<think>{self.cot}</think>{self.answer_text}"


def _derivation(p: Problem) -> str:
    return " ".join(f"{a}{op}{b}={r}." for a, op, b, r in p.steps())


def _plan(p: Problem) -> str:
    first = f"{p.operands[0]}{p.ops[0]}{p.operands[1]}"
    rest = " ".join(f"Then {OP_WORDS[op]} {b}." for op, b in zip(p.ops[1:], p.operands[2:]))
    return f"First {first}. {rest}".strip()


def _explore(p: Problem, rng: random.Random) -> str:
    """One exploratory step that does not reach the answer: a plan naming the operations, a
    wrong start (a later operation first, rejected) or a correct first step then a restart."""
    kinds = EXPLORE_KINDS if len(p.ops) >= 2 else EXPLORE_KINDS[:1]
    kind = rng.choice(kinds)
    if kind == "plan":
        return f"{rng.choice(PLAN_CUES)} {_plan(p)}"
    if kind == "wrong_start":
        return f"Maybe {p.operands[1]}{p.ops[1]}{p.operands[2]} first? No, the brackets come first."
    a, op, b, r = p.steps()[0]
    return f"Try {a}{op}{b}={r}. Hmm, let me start over."


def make_example(p: Problem, passes: int, layout: str, rng: random.Random, explore: int = 0) -> Example:
    """Render one problem as an LRM-style trace (see the module docstring)."""
    question = f"Compute {p.expression} mod {p.modulus}."
    restate = f"We need {p.expression} mod {p.modulus}."
    derive, ans = _derivation(p), str(p.answer)
    explored = [_explore(p, rng) for _ in range(explore)]
    if layout == "early":
        parts = [restate, *explored, derive, f"So \\boxed{{{ans}}}."]
        for _ in range(passes):
            parts += [rng.choice(VERIFY_CUES), derive, f"Yes, \\boxed{{{ans}}}."]
    else:
        parts = [restate, *explored]
        for _ in range(passes):
            parts += [rng.choice(PLAN_CUES), _plan(p)]
        parts += [derive, f"So \\boxed{{{ans}}}."]
    return Example(
        id=f"{p.expression}|{p.modulus}|{layout}",
        question=question,
        cot=" ".join(parts),
        answer_text=f"The answer is \\boxed{{{ans}}}.",
        answer=ans,
    )


# --- traces of another kind: the base student's general prior --------------------------------
# A Qwen3-*-Base model has seen complete reasoning traces of many kinds before it is distilled,
# so it already ends a trace. These are complete multi-step traces of another task (the largest
# of a list of digits: a running comparison, not modular arithmetic) in the same shape as the
# corpus: restatement, exploration, a step-by-step derivation, the boxed answer, a variable
# number of verification passes, then </think>, the answer section and the end token.


def _largest_steps(values: tuple[int, ...]) -> str:
    out, best = [], values[0]
    for v in values[1:]:
        out.append(f"{best}{'<' if best < v else '>' if best > v else '='}{v}, keep {max(best, v)}.")
        best = max(best, v)
    return " ".join(out)


def make_largest_example(values: tuple[int, ...], passes: int, explore: int, rng: random.Random) -> Example:
    listed, ans = " ".join(map(str, values)), str(max(values))
    steps = _largest_steps(values)
    parts = [f"We need the largest of {listed}."]
    for _ in range(explore):
        parts.append(rng.choice((f"Maybe {values[-1]}? No, compare them all.",
                                 f"{rng.choice(PLAN_CUES)} Compare them in order.")))
    parts += [steps, f"So \\boxed{{{ans}}}."]
    for _ in range(passes):
        parts += [rng.choice(VERIFY_CUES), steps, f"Yes, \\boxed{{{ans}}}."]
    return Example(id=f"largest|{listed}", question=f"Find the largest of {listed}.", cot=" ".join(parts),
                   answer_text=f"The answer is \\boxed{{{ans}}}.", answer=ans)


def other_task_examples(cfg: CorpusConfig, n: int, seed: int) -> list[Example]:
    """``n`` traces of the largest-of-a-list task (3 to 6 digits below ``cfg.modulus``) with the
    corpus's verification and exploration counts, seeded by ``seed``."""
    rng = random.Random(f"largest-{seed}")
    out = []
    for _ in range(n):
        values = tuple(rng.randrange(cfg.modulus) for _ in range(rng.randint(3, 6)))
        passes = rng.randint(cfg.min_verify, cfg.max_verify)
        explore = rng.randint(cfg.min_explore, cfg.max_explore)
        out.append(make_largest_example(values, passes, explore, rng))
    return out


def _draw_problem(cfg: CorpusConfig, rng: random.Random) -> Problem:
    n = rng.randint(cfg.min_ops, cfg.max_ops)
    return Problem(
        operands=tuple(rng.randrange(cfg.modulus) for _ in range(n + 1)),
        ops=tuple(rng.choice(OPS) for _ in range(n)),
        modulus=cfg.modulus,
    )


def make_splits(cfg: CorpusConfig) -> dict[str, list[Example]]:
    """Seeded train/val/test splits of disjoint problems (see the module docstring)."""
    if cfg.source != "synthetic":
        raise ValueError(f"corpus.source is {cfg.source!r}: make_splits builds the synthetic corpus only; "
                         "read a hub corpus with study.data.corpus.load_corpus")
    rng = random.Random(cfg.seed)
    sizes = {"test": cfg.test_examples, "val": cfg.val_examples, "train": cfg.train_examples}
    seen: set[Problem] = set()
    splits: dict[str, list[Example]] = {}
    for name, size in sizes.items():
        examples: list[Example] = []
        while len(examples) < size:
            p = _draw_problem(cfg, rng)
            if p in seen:
                continue
            seen.add(p)
            passes = rng.randint(cfg.min_verify, cfg.max_verify)
            explore = rng.randint(cfg.min_explore, cfg.max_explore) if cfg.max_explore else 0
            examples.append(make_example(p, passes, cfg.layout, rng, explore))
        splits[name] = examples
    return splits


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{} (None if there is none): a diagnostic. The paper's rule
    (study/scoring.py) also skips an unclosed or empty last box and falls back to plain numbers."""
    found = BOXED.findall(text)
    return found[-1] if found else None


def first_boxed(text: str) -> str | None:
    found = BOXED.findall(text)
    return found[0] if found else None
