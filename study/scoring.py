"""The paper's answer rule, in one place: how a generation is scored against a gold answer.

The paper scores with lighteval 0.10.0 (``math_pass@1:64_samples``), whose extraction and
comparison come from latex2sympy2_extended 1.0.6. ``math-verify`` 0.5.2 (pinned: it depends on
exactly that latex2sympy2_extended) with lighteval's extraction configs reproduces it:

- candidates are tried by priority, lower first: "final answer is X ... I hope" (0), "final
  answer ... is X" (50), ``\\boxed{}`` (55), "answer:" X (100), "answer" X (200), any LaTeX
  or plain number or expression (300); within a priority the rightmost match first; the first
  that parses wins; nothing parsed is wrong;
- the boxed candidate is the last brace-balanced ``\\boxed{...}``; a last box cut off by the
  token limit (no closing brace) is skipped, so the previous closed box counts; an empty or
  unparseable last box does not fall back to an earlier box but to priorities 100-300, which
  ends at the rightmost plain number of the whole text; with no box at all the rightmost
  number counts (chance credit on a corpus of small integers: ``fallback_share`` reports it);
- two boxes separated only by "and", "or" or "," form a set;
- comparison is sympy equality with a 5 s parse and a 3 s compare timeout (a timeout is
  wrong); ``<think>...</think>`` is not stripped and a generation cut at the limit is scored
  as it is.
Known difference (measured in the fidelity issue): an equation prediction such as
``\\boxed{3=3}`` is parsed as an equation by math-verify and compared by its right side.

    from study.scoring import correct
    correct(r"so \\boxed{5}. Wait, recheck: \\boxed{7}", "7")    # True: the last box

``last_boxed`` and ``first_boxed`` (study/data/synthetic.py) stay as diagnostics.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

log = logging.getLogger("study.scoring")
logging.getLogger("math_verify").setLevel(logging.ERROR)  # it logs every timeout and parse miss

SCORER = "paper: lighteval 0.10.0 math extraction (math-verify {mv}, latex2sympy2_extended {l2s})"
PARSE_TIMEOUT = 5  # seconds, lighteval's
COMPARE_TIMEOUT = 3
PRED_CONFIG = (ExprExtractionConfig(), LatexExtractionConfig(boxed_match_priority=55))
GOLD_CONFIG = (ExprExtractionConfig(), LatexExtractionConfig())
_CLOSED_BOX = re.compile(r"\\boxed\{[^{}]*\}")


def scorer_name() -> str:
    """The scorer and the versions that define it, for the record."""
    return SCORER.format(mv=importlib.metadata.version("math-verify"),
                         l2s=importlib.metadata.version("latex2sympy2_extended"))


@functools.lru_cache(maxsize=4096)
def _gold(answer: str):
    return parse(answer, extraction_config=list(GOLD_CONFIG), parsing_timeout=PARSE_TIMEOUT)


def extract(generation: str) -> str | None:
    """The answer the paper's rule reads from ``generation`` (math-verify's string form of its
    extraction), or None when it finds none. For showing generations; ``correct`` scores."""
    pred = parse(generation, extraction_config=list(PRED_CONFIG), parsing_timeout=PARSE_TIMEOUT)
    return str(pred[-1]) if pred else None


def correct(generation: str, gold: str) -> bool:
    """The paper's rule: is ``generation``'s extracted answer equal to ``gold``?"""
    target = _gold(str(gold))
    if not target:
        raise ValueError(f"gold answer {gold!r} does not parse; it cannot score anything")
    pred = parse(generation, extraction_config=list(PRED_CONFIG), parsing_timeout=PARSE_TIMEOUT)
    return bool(pred) and bool(verify(target, pred, timeout_seconds=COMPARE_TIMEOUT))


def scored_by_fallback(generation: str) -> bool:
    """True when the paper's rule can only read a number outside any closed box: no closed
    ``\\boxed{}`` at all (on small-integer answers such a read can be right by chance)."""
    return _CLOSED_BOX.search(generation) is None


_LAST_CLOSED_BOX = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_LETTER = re.compile(r"^\(?([A-D])\)?\.?$")


def boxed_choice(generation: str) -> str | None:
    """The choice letter in the last closed ``\\boxed{}`` (``B``, ``(B)``, ``\\text{B}``), or None
    when there is no closed box or it holds no single letter A-D: multiple-choice answers are
    never read from plain text, where any capital letter could give chance credit."""
    boxes = _LAST_CLOSED_BOX.findall(generation)
    if not boxes:
        return None
    inner = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", boxes[-1]).replace("$", "").strip()
    m = _LETTER.match(inner)
    return m.group(1) if m else None


def correct_choice(generation: str, letter: str) -> bool:
    """GPQA's rule here: the letter of the last closed ``\\boxed{}`` equals the target letter."""
    return boxed_choice(generation) == letter.strip().upper()


def score(generation: str, gold: str, kind: str = "math") -> bool:
    """One sample by its benchmark's rule: ``math`` (the paper's) or ``choice`` (the boxed letter)."""
    return correct_choice(generation, gold) if kind == "choice" else correct(generation, gold)
