"""Tests for study.sections: section labels, truncation, masks and rendering."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from study.sections import (
    CONDITIONS,
    SECTION_NAMES,
    WINDOWS,
    Section,
    SectionError,
    kept_positions,
    locate_sections,
    random_mask,
    render,
    supervised_by_section,
    supervision_mask,
    truncate,
)

T, E = 1000, 1001  # <think>, </think>
P, C, A = Section.PROMPT, Section.COT, Section.ANSWER

EXAMPLE_IDS = [1, 2, T, 3, 4, E, 5, 6]
EXAMPLE_SECTIONS = [P, P, C, C, C, C, A, A]

plain_tokens = st.lists(st.integers(0, 999), max_size=12)


@st.composite
def sequences(draw: st.DrawFn) -> list[int]:
    """prompt + <think> + cot + </think> + answer; any part may be empty."""
    return draw(plain_tokens) + [T] + draw(plain_tokens) + [E] + draw(plain_tokens)


lsps = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)


# --- locate_sections ---------------------------------------------------------


def test_literal_example_labels() -> None:
    assert locate_sections(EXAMPLE_IDS, T, E) == EXAMPLE_SECTIONS


def test_literal_example_masks_for_all_conditions() -> None:
    expected = {
        "A": [0, 0, 0, 0, 0, 0, 1, 1],
        "P+A": [1, 1, 0, 0, 0, 0, 1, 1],
        "CoT": [0, 0, 1, 1, 1, 1, 0, 0],
        "CoT+A": [0, 0, 1, 1, 1, 1, 1, 1],
        "P+CoT": [1, 1, 1, 1, 1, 1, 0, 0],
        "P+CoT+A": [1, 1, 1, 1, 1, 1, 1, 1],
    }
    assert list(CONDITIONS) == list(expected)  # the paper's order
    for condition, bits in expected.items():
        assert supervision_mask(EXAMPLE_SECTIONS, condition) == [bool(b) for b in bits]


def test_empty_parts() -> None:
    assert locate_sections([T, E], T, E) == [C, C]


@settings(max_examples=200)
@given(sequences())
def test_sections_partition_sequence(ids: list[int]) -> None:
    sections = locate_sections(ids, T, E)
    assert len(sections) == len(ids)
    assert sections == sorted(sections)  # P <= CoT <= A
    cot = [i for i, s in enumerate(sections) if s == C]
    assert cot == list(range(cot[0], cot[-1] + 1))
    assert ids[cot[0]] == T and ids[cot[-1]] == E
    assert all(t not in (T, E) for t, s in zip(ids, sections) if s != C)


@pytest.mark.parametrize(
    "ids",
    [
        [1, 2, 3, E, 4],  # no <think>
        [1, T, 3, 4],  # no </think>
        [1, E, 3, T, 4],  # reversed
        [T, 1, T, E, 2],  # two <think>
        [T, 1, E, 2, E],  # two </think>
        [],
    ],
)
def test_malformed_sequences_raise(ids: list[int]) -> None:
    with pytest.raises(SectionError, match="example-42") as info:
        locate_sections(ids, T, E, example="example-42")
    assert "<think>" in str(info.value) and "chat template" in str(info.value)


def test_section_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        locate_sections([1, 2], T, E)


# --- truncate ----------------------------------------------------------------


def test_truncate_literal_windows() -> None:
    # len 8, lsp 0.5 -> keep 4; middle starts at (8 - 4) // 2 = 2.
    assert truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, "left") == ([1, 2, T, 3], [P, P, C, C])
    assert truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, "middle") == ([T, 3, 4, E], [C, C, C, C])
    assert truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, "right") == ([4, E, 5, 6], [C, C, A, A])


def test_truncate_uses_int_not_round() -> None:
    ids = list(range(10))
    sections = [P] * 10
    assert len(truncate(ids, sections, 0.29)[0]) == 2  # int(2.9), not round
    assert len(truncate(ids, sections, 0.01)[0]) == 1  # never empty


def test_cut_after_think_literal() -> None:
    assert truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, cut_after_think=True) == (
        [1, 2, T, 3, 4, E],
        [P, P, C, C, C, C],
    )
    # lsp applies to the cut length: int(6 * 0.5) = 3.
    assert truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, "right", cut_after_think=True) == (
        [3, 4, E],
        [C, C, C],
    )


@settings(max_examples=200)
@given(sequences(), lsps)
def test_left_window_keeps_prefix(ids: list[int], lsp: float) -> None:
    sections = locate_sections(ids, T, E)
    kept_ids, kept_sections = truncate(ids, sections, lsp, "left")
    assert kept_ids == ids[: len(kept_ids)]
    assert kept_sections == sections[: len(kept_sections)]


@settings(max_examples=100)
@given(sequences(), st.sampled_from(WINDOWS))
def test_lsp_one_is_identity(ids: list[int], window: str) -> None:
    sections = locate_sections(ids, T, E)
    assert truncate(ids, sections, 1.0, window) == (ids, sections)
    # with the answer cut, lsp 1 keeps exactly the prefix through </think>
    n = ids.index(E) + 1
    assert truncate(ids, sections, 1.0, window, cut_after_think=True) == (ids[:n], sections[:n])


# A 10-token sequence P P P <think> c c </think> a a a; every id is distinct, so a kept span
# is read off its ids, and each id has one section.
TEN_IDS = [1, 2, 3, T, 4, 5, E, 6, 7, 8]
TEN_SECTIONS = [P, P, P, C, C, C, C, A, A, A]
SECTION_OF = dict(zip(TEN_IDS, TEN_SECTIONS))


@pytest.mark.parametrize(
    "lsp, cut, left, middle, right",
    [
        # 10 tokens: lsp 0.5 keeps 5; the middle drops 2 on the left, 3 on the right.
        (0.5, False, [1, 2, 3, T, 4], [3, T, 4, 5, E], [5, E, 6, 7, 8]),
        # int(3.5) = 3; the middle drops 3 left, 4 right (the extra token goes to the right).
        (0.35, False, [1, 2, 3], [T, 4, 5], [6, 7, 8]),
        # int(9.9) = 9; the one dropped token is on the right for the middle window.
        (0.99, False, [1, 2, 3, T, 4, 5, E, 6, 7], [1, 2, 3, T, 4, 5, E, 6, 7], [2, 3, T, 4, 5, E, 6, 7, 8]),
        # int(0.5) = 0 -> never empty: one token; the middle drops 4 left, 5 right.
        (0.05, False, [1], [4], [8]),
        # cut after </think>: 7 tokens remain; int(3.5) = 3.
        (0.5, True, [1, 2, 3], [3, T, 4], [4, 5, E]),
        # cut: int(2.1) = 2; the middle drops 2 left, 3 right.
        (0.3, True, [1, 2], [3, T], [5, E]),
        (1.0, True, [1, 2, 3, T, 4, 5, E], [1, 2, 3, T, 4, 5, E], [1, 2, 3, T, 4, 5, E]),
    ],
)
def test_truncate_literal_ten_tokens(lsp: float, cut: bool, left: list, middle: list, right: list) -> None:
    for window, expected in (("left", left), ("middle", middle), ("right", right)):
        kept_ids, kept_sections = truncate(TEN_IDS, TEN_SECTIONS, lsp, window, cut)
        assert kept_ids == expected, window
        assert kept_sections == [SECTION_OF[i] for i in expected], window


@st.composite
def distinct_sequences(draw: st.DrawFn) -> list[int]:
    """Like ``sequences`` but with distinct ids, so a kept span's position is read off its ids."""
    n_p, n_c, n_a = (draw(st.integers(0, 12)) for _ in range(3))
    return list(range(n_p)) + [T] + list(range(100, 100 + n_c)) + [E] + list(range(200, 200 + n_a))


@settings(max_examples=200)
@given(distinct_sequences(), lsps, st.sampled_from(WINDOWS), st.booleans())
def test_kept_span_length_and_position(ids: list[int], lsp: float, window: str, cut: bool) -> None:
    sections = locate_sections(ids, T, E)
    base_ids = ids[: ids.index(E) + 1] if cut else ids
    length = len(base_ids)

    kept_ids, kept_sections = truncate(ids, sections, lsp, window, cut)
    assert len(kept_ids) == len(kept_sections) == max(1, int(length * lsp))  # the paper's rule
    # A contiguous span of the (cut) sequence, with its own labels.
    first = base_ids.index(kept_ids[0])
    assert kept_ids == base_ids[first : first + len(kept_ids)]
    assert kept_sections == sections[first : first + len(kept_ids)]
    dropped_left, dropped_right = first, length - first - len(kept_ids)
    if window == "left":
        assert dropped_left == 0
    elif window == "right":
        assert dropped_right == 0
    else:  # centred: the sides differ by at most one token, the extra one dropped on the right
        assert dropped_right - dropped_left in (0, 1)


@settings(max_examples=200)
@given(sequences())
def test_cut_after_think_removes_exactly_the_answer(ids: list[int]) -> None:
    sections = locate_sections(ids, T, E)
    kept_ids, kept_sections = truncate(ids, sections, cut_after_think=True)
    assert kept_ids[-1] == E
    assert A not in kept_sections
    assert len(ids) - len(kept_ids) == sections.count(A)
    assert kept_ids == ids[: len(kept_ids)]


@pytest.mark.parametrize("lsp", [0.0, 1.5, -0.1, float("nan")])
def test_bad_lsp(lsp: float) -> None:
    with pytest.raises(ValueError, match=re.escape("(0, 1]")):
        truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, lsp)


def test_bad_window_lists_windows() -> None:
    with pytest.raises(ValueError) as info:
        truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, "center")
    assert all(w in str(info.value) for w in WINDOWS)


def test_truncate_empty_and_mismatched() -> None:
    with pytest.raises(ValueError):
        truncate([], [])
    with pytest.raises(ValueError):
        truncate([1, 2], [P])


# --- keep_answer: a lead span that keeps its ending ---------------------------------------


@pytest.mark.parametrize(
    "lsp, expected",
    [
        # 10 tokens, ending </think> a a a (4 tokens). lsp 0.5 keeps 5: 1 lead token + the ending.
        (0.5, [1, E, 6, 7, 8]),
        # int(7.0) = 7: 3 lead tokens + the ending.
        (0.7, [1, 2, 3, E, 6, 7, 8]),
        # int(9.9) = 9: the lead span stops one token before </think>.
        (0.99, [1, 2, 3, T, 4, E, 6, 7, 8]),
        # int(3.5) = 3: the ending itself is cut to the budget (</think> first).
        (0.35, [E, 6, 7]),
        (0.05, [E]),
        (1.0, TEN_IDS),
    ],
)
def test_keep_answer_literal_ten_tokens(lsp: float, expected: list) -> None:
    kept_ids, kept_sections = truncate(TEN_IDS, TEN_SECTIONS, lsp, keep_answer=True)
    assert kept_ids == expected
    assert kept_sections == [SECTION_OF[i] for i in expected]
    assert kept_positions(TEN_SECTIONS, lsp, keep_answer=True) == [TEN_IDS.index(i) for i in expected]


@settings(max_examples=200)
@given(distinct_sequences(), lsps)
def test_keep_answer_same_budget_lead_span_then_ending(ids: list[int], lsp: float) -> None:
    sections = locate_sections(ids, T, E)
    kept_ids, kept_sections = truncate(ids, sections, lsp, keep_answer=True)
    plain, _ = truncate(ids, sections, lsp)
    assert len(kept_ids) == len(plain) == max(1, int(len(ids) * lsp))  # the same budget
    ending = ids[ids.index(E):]
    if len(kept_ids) >= len(ending):  # a lead span, then the whole ending
        lead = len(kept_ids) - len(ending)
        assert kept_ids == ids[:lead] + ending
        assert lead <= ids.index(E)  # the lead span never reaches </think> twice
    else:
        assert kept_ids == ending[: len(kept_ids)]
    assert kept_sections == [sections[ids.index(i)] for i in kept_ids]


def test_keep_answer_needs_a_left_window_without_the_cut() -> None:
    for kwargs in ({"window": "right"}, {"window": "middle"}, {"cut_after_think": True}):
        with pytest.raises(ValueError, match="keep_answer keeps the ending of a lead span"):
            truncate(EXAMPLE_IDS, EXAMPLE_SECTIONS, 0.5, keep_answer=True, **kwargs)


@settings(max_examples=100)
@given(distinct_sequences(), lsps, st.sampled_from(WINDOWS), st.booleans())
def test_kept_positions_index_what_truncate_keeps(ids: list[int], lsp: float, window: str, cut: bool) -> None:
    sections = locate_sections(ids, T, E)
    kept = kept_positions(sections, lsp, window, cut)
    assert kept == sorted(set(kept))
    assert truncate(ids, sections, lsp, window, cut) == ([ids[i] for i in kept], [sections[i] for i in kept])


# --- masks -------------------------------------------------------------------


def _single(sections: list[Section], section: Section) -> list[bool]:
    return [s == section for s in sections]


def test_condition_table() -> None:
    assert CONDITIONS["A"] == {A}
    assert CONDITIONS["CoT"] == {C}
    assert CONDITIONS["P+CoT+A"] == {P, C, A}
    assert all(isinstance(v, frozenset) for v in CONDITIONS.values())
    assert supervision_mask(EXAMPLE_SECTIONS, "A") == _single(EXAMPLE_SECTIONS, A)
    assert supervision_mask(EXAMPLE_SECTIONS, "CoT") == _single(EXAMPLE_SECTIONS, C)
    assert SECTION_NAMES == {P: "P", C: "CoT", A: "A"}


@pytest.mark.parametrize(
    "sections, expected",
    [
        (  # the 10-token sequence: P P P C C C C A A A
            TEN_SECTIONS,
            {
                "A": [0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
                "P+A": [1, 1, 1, 0, 0, 0, 0, 1, 1, 1],
                "CoT": [0, 0, 0, 1, 1, 1, 1, 0, 0, 0],
                "CoT+A": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
                "P+CoT": [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                "P+CoT+A": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            },
        ),
        (  # no prompt and no answer: <think> c </think>
            [C, C, C],
            {
                "A": [0, 0, 0],
                "P+A": [0, 0, 0],
                "CoT": [1, 1, 1],
                "CoT+A": [1, 1, 1],
                "P+CoT": [1, 1, 1],
                "P+CoT+A": [1, 1, 1],
            },
        ),
        (  # a one-token prompt and a two-token answer around an empty thought: P C C A A
            [P, C, C, A, A],
            {
                "A": [0, 0, 0, 1, 1],
                "P+A": [1, 0, 0, 1, 1],
                "CoT": [0, 1, 1, 0, 0],
                "CoT+A": [0, 1, 1, 1, 1],
                "P+CoT": [1, 1, 1, 0, 0],
                "P+CoT+A": [1, 1, 1, 1, 1],
            },
        ),
    ],
    ids=["ten-tokens", "cot-only", "empty-thought"],
)
def test_condition_masks_literal(sections: list[Section], expected: dict[str, list[int]]) -> None:
    assert sorted(expected) == sorted(CONDITIONS)  # all six conditions, none more
    for condition, bits in expected.items():
        assert supervision_mask(sections, condition) == [bool(b) for b in bits], condition


def test_unknown_condition_lists_conditions() -> None:
    with pytest.raises(ValueError) as info:
        supervision_mask(EXAMPLE_SECTIONS, "Q")
    assert all(name in str(info.value) for name in CONDITIONS)


masks = st.lists(st.booleans(), max_size=60)
fractions = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=200)
@given(masks, fractions, st.integers(0, 2**32))
def test_random_mask_drops_exact_subset(mask: list[bool], fraction: float, seed: int) -> None:
    out = random_mask(mask, fraction, random.Random(seed))
    assert len(out) == len(mask)
    assert all(m for o, m in zip(out, mask) if o)  # subset
    assert sum(mask) - sum(out) == round(fraction * sum(mask))
    assert out == random_mask(mask, fraction, random.Random(seed))  # deterministic


@given(masks, st.integers(0, 2**32))
def test_random_mask_extremes(mask: list[bool], seed: int) -> None:
    same = random_mask(mask, 0.0, random.Random(seed))
    assert same == mask and same is not mask
    assert random_mask(mask, 1.0, random.Random(seed)) == [False] * len(mask)


def test_random_mask_depends_on_seed() -> None:
    mask = [True] * 40
    outs = {tuple(random_mask(mask, 0.5, random.Random(seed))) for seed in range(5)}
    assert len(outs) > 1


@pytest.mark.parametrize("fraction", [-0.1, 1.1])
def test_random_mask_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=re.escape("[0, 1]")):
        random_mask([True], fraction, random.Random(0))


def test_supervised_by_section_literal() -> None:
    mask = supervision_mask(EXAMPLE_SECTIONS, "CoT+A")
    assert supervised_by_section(EXAMPLE_SECTIONS, mask) == {"P": 0, "CoT": 4, "A": 2}
    assert supervised_by_section([], []) == {"P": 0, "CoT": 0, "A": 0}


@settings(max_examples=200)
@given(sequences(), st.sampled_from(sorted(CONDITIONS)), fractions, st.integers(0, 100))
def test_supervised_by_section_sums(ids: list[int], condition: str, fraction: float, seed: int) -> None:
    sections = locate_sections(ids, T, E)
    mask = random_mask(supervision_mask(sections, condition), fraction, random.Random(seed))
    counts = supervised_by_section(sections, mask)
    assert set(counts) == {"P", "CoT", "A"}
    assert sum(counts.values()) == sum(mask)
    for name in ("P", "CoT", "A"):  # a section the condition's name leaves out counts nothing
        if name not in condition.split("+"):
            assert counts[name] == 0


# --- render ------------------------------------------------------------------


def test_render_literal() -> None:
    tokens = ["Q", "?", "<think>", "hm", "\n", "</think>", "4", "."]
    mask = supervision_mask(EXAMPLE_SECTIONS, "CoT+A")
    out = render(tokens, EXAMPLE_SECTIONS, mask)
    assert out == (
        "[P] Q?\n"
        "[CoT] «<think>»«hm»«⏎»«</think>»\n"
        "[A] «4»«.»\n"
        "supervised: P 0/2, CoT 4/4, A 2/2"
    )


@settings(max_examples=100)
@given(sequences(), st.sampled_from(sorted(CONDITIONS)), fractions, st.integers(0, 100))
def test_render_marks_exactly_supervised(ids: list[int], condition: str, fraction: float, seed: int) -> None:
    sections = locate_sections(ids, T, E)
    mask = random_mask(supervision_mask(sections, condition), fraction, random.Random(seed))
    tokens = [f"t{i}\n" for i in ids]  # newline inside every token
    out = render(tokens, sections, mask)

    body, summary = out.rsplit("\n", 1)
    headers = [line.split(" ", 1)[0] for line in body.split("\n")]
    expected_headers = [f"[{SECTION_NAMES[s]}]" for s in sorted(set(sections))]
    assert headers == expected_headers  # one line per section, in order; ⏎ keeps lines whole
    assert re.findall(r"«([^»]*)»", body) == [t.replace("\n", "⏎") for t, m in zip(tokens, mask) if m]

    counts = supervised_by_section(sections, mask)
    assert summary == "supervised: " + ", ".join(
        f"{name} {counts[name]}/{sum(SECTION_NAMES[s] == name for s in sections)}"
        for name in ("P", "CoT", "A")
    )


def test_render_color() -> None:
    mask = supervision_mask(EXAMPLE_SECTIONS, "A")
    tokens = [str(i) for i in EXAMPLE_IDS]
    out = render(tokens, EXAMPLE_SECTIONS, mask, color=True)
    assert "\x1b[" in out
    assert "«" not in out
    assert out.endswith("supervised: P 0/2, CoT 0/4, A 2/2")
    # supervised tokens are styled differently from unsupervised ones
    assert "\x1b[1;4m" in out
    plain = render(tokens, EXAMPLE_SECTIONS, [False] * 8, color=True)
    assert "\x1b[1;4m" not in plain


def test_render_length_mismatch() -> None:
    with pytest.raises(ValueError):
        render(["a"], [P, P], [True, True])
