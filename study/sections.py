"""Sequence sections, truncation and supervision masks.

A training sequence is split into three sections: the prompt P (everything
before ``<think>``), the chain of thought CoT (``<think>`` through ``</think>``
inclusive) and the answer A (everything after ``</think>``). This module labels
each token with its section, truncates sequences the way the paper does (keep a
fraction ``lsp`` of the tokens, optionally after cutting the answer), builds the
per-token supervision mask for each of the paper's six allocation conditions,
and renders a sequence so that a wrong mask is visible at a glance.

Everything here is a pure function over Python lists of token ids; the caller
turns a mask into labels with ``[i if m else -100 for i, m in zip(ids, mask)]``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence


class Section(enum.IntEnum):
    # Values follow sequence order, so valid labels are non-decreasing.
    PROMPT = 0
    COT = 1
    ANSWER = 2


SECTION_NAMES: dict[Section, str] = {Section.PROMPT: "P", Section.COT: "CoT", Section.ANSWER: "A"}

# The paper's six supervision-allocation conditions, in the paper's order.
CONDITIONS: dict[str, frozenset[Section]] = {
    "A": frozenset({Section.ANSWER}),
    "P+A": frozenset({Section.PROMPT, Section.ANSWER}),
    "CoT": frozenset({Section.COT}),
    "CoT+A": frozenset({Section.COT, Section.ANSWER}),
    "P+CoT": frozenset({Section.PROMPT, Section.COT}),
    "P+CoT+A": frozenset({Section.PROMPT, Section.COT, Section.ANSWER}),
}

WINDOWS = ("left", "middle", "right")

_TAG_FIX = (
    "every training sequence needs exactly one <think> ... </think> span; "
    "check the chat template / the dataset's think tags"
)


class SectionError(ValueError):
    """A sequence does not have the prompt / <think> ... </think> / answer shape."""


def locate_sections(
    ids: Sequence[int], think_id: int, end_think_id: int, example: str = "<unnamed>"
) -> list[Section]:
    """Label every token: PROMPT before <think>, COT from <think> to </think>
    inclusive, ANSWER after </think>.

    Raises SectionError when either tag is missing or repeated, or when
    </think> comes before <think>.
    """
    n_think = sum(1 for t in ids if t == think_id)
    n_end = sum(1 for t in ids if t == end_think_id)
    if n_think != 1 or n_end != 1:
        raise SectionError(
            f"example {example}: found {n_think} <think> token(s) (id {think_id}) and "
            f"{n_end} </think> token(s) (id {end_think_id}); {_TAG_FIX}"
        )
    seq = list(ids)
    start, end = seq.index(think_id), seq.index(end_think_id)
    if end < start:
        raise SectionError(
            f"example {example}: </think> (position {end}) comes before <think> "
            f"(position {start}); {_TAG_FIX}"
        )
    return [
        Section.PROMPT if i < start else Section.COT if i <= end else Section.ANSWER
        for i in range(len(ids))
    ]


def truncate(
    ids: Sequence[int],
    sections: Sequence[Section],
    lsp: float = 1.0,
    window: str = "left",
    cut_after_think: bool = False,
    keep_answer: bool = False,
) -> tuple[list[int], list[Section]]:
    """Keep ``max(1, int(len * lsp))`` tokens (see ``kept_positions``); labels are cut the
    same way."""
    if len(ids) != len(sections):
        raise ValueError(f"{len(ids)} token ids but {len(sections)} section labels; they must match")
    kept = kept_positions(sections, lsp, window, cut_after_think, keep_answer)
    return [ids[i] for i in kept], [sections[i] for i in kept]


def kept_positions(
    sections: Sequence[Section],
    lsp: float = 1.0,
    window: str = "left",
    cut_after_think: bool = False,
    keep_answer: bool = False,
) -> list[int]:
    """Positions (in the full sequence, ascending) of the ``max(1, int(len * lsp))`` tokens
    a run keeps.

    If ``cut_after_think``, the answer is dropped first (the </think> token stays) and
    ``len`` is the length of what remains. ``window`` picks a contiguous span: 'left' is
    the prefix (the paper's lead span), 'middle' is centred (extra token goes to the right),
    'right' is the suffix.

    ``keep_answer`` (our extension, left window only) spends the same budget on a lead span
    that keeps the trace's ending: the first ``keep - len(ending)`` tokens, then the ending
    (``</think>`` and the answer section, the end token included), so the student sees how a
    trace ends. An ending longer than the budget is itself cut to the budget.
    """
    if not 0 < lsp <= 1:
        raise ValueError(f"lsp={lsp!r} is outside the valid range (0, 1]")
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; valid windows: {', '.join(WINDOWS)}")
    if not sections:
        raise ValueError("cannot truncate an empty sequence")
    if keep_answer and (window != "left" or cut_after_think):
        raise ValueError("keep_answer keeps the ending of a lead span: it needs window 'left' and "
                         "cut_after_think false")
    # Labels are non-decreasing, so the non-answer tokens form a prefix.
    before_answer = sum(1 for s in sections if s != Section.ANSWER)
    length = before_answer if cut_after_think else len(sections)
    keep = max(1, int(length * lsp))  # the paper's rule, deliberately not rounded
    if keep_answer:
        if Section.COT not in sections:
            raise ValueError("keep_answer needs a </think> token to keep; this sequence has no CoT section")
        ending = before_answer - 1  # </think> is the last CoT token
        lead = max(0, keep - (length - ending))
        return list(range(lead)) + list(range(ending, length))[: keep - lead]
    start = {"left": 0, "middle": (length - keep) // 2, "right": length - keep}[window]
    return list(range(start, start + keep))


def supervision_mask(sections: Sequence[Section], condition: str) -> list[bool]:
    """True where the token's section is supervised under ``condition``."""
    if condition not in CONDITIONS:
        raise ValueError(
            f"unknown condition {condition!r}; valid conditions: {', '.join(CONDITIONS)}"
        )
    chosen = CONDITIONS[condition]
    return [s in chosen for s in sections]


def random_mask(mask: Sequence[bool], fraction: float, rng: random.Random) -> list[bool]:
    """Unsupervise exactly ``round(fraction * n_supervised)`` supervised
    positions, chosen uniformly at random with ``rng``."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction={fraction!r} is outside the valid range [0, 1]")
    supervised = [i for i, m in enumerate(mask) if m]
    dropped = set(rng.sample(supervised, round(fraction * len(supervised))))
    return [bool(m) and i not in dropped for i, m in enumerate(mask)]


def supervised_by_section(sections: Sequence[Section], mask: Sequence[bool]) -> dict[str, int]:
    """Number of supervised tokens in each section, keyed 'P', 'CoT', 'A'."""
    counts = {name: 0 for name in SECTION_NAMES.values()}
    for s, m in zip(sections, mask, strict=True):
        counts[SECTION_NAMES[s]] += bool(m)
    return counts


# ANSI colours per section; supervised tokens are additionally bold + underlined.
_COLORS = {Section.PROMPT: "\033[34m", Section.COT: "\033[33m", Section.ANSWER: "\033[32m"}
_SUPERVISED = "\033[1;4m"
_RESET = "\033[0m"


def render(
    tokens: Sequence[str], sections: Sequence[Section], mask: Sequence[bool], color: bool = False
) -> str:
    """One line per run of same-section tokens, headed '[P] ', '[CoT] ' or
    '[A] ', then a summary line 'supervised: P a/b, CoT c/d, A e/f'.

    Supervised tokens are shown as «tok» (or bold-underlined with
    ``color=True``); newlines inside tokens are shown as '⏎' so each segment
    stays on one line.
    """
    if not len(tokens) == len(sections) == len(mask):
        raise ValueError(
            f"tokens ({len(tokens)}), sections ({len(sections)}) and mask ({len(mask)}) "
            "must have the same length"
        )
    lines: list[str] = []
    previous: Section | None = None
    for tok, section, supervised in zip(tokens, sections, mask):
        if section != previous:
            header = f"[{SECTION_NAMES[section]}] "
            lines.append(f"{_COLORS[section]}{header}{_RESET}" if color else header)
            previous = section
        text = tok.replace("\n", "⏎")
        if color:
            style = _COLORS[section] + (_SUPERVISED if supervised else "")
            text = f"{style}{text}{_RESET}"
        elif supervised:
            text = f"«{text}»"
        lines[-1] += text

    supervised_counts = supervised_by_section(sections, mask)
    totals = {name: 0 for name in SECTION_NAMES.values()}
    for s in sections:
        totals[SECTION_NAMES[s]] += 1
    lines.append(
        "supervised: "
        + ", ".join(f"{name} {supervised_counts[name]}/{totals[name]}" for name in totals)
    )
    return "\n".join(lines)
