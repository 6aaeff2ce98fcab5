"""The paper's answer rule on literal strings: every case the fidelity issue lists."""

import pytest

from study.data.synthetic import first_boxed, last_boxed
from study.scoring import correct, scored_by_fallback, scorer_name

CASES = [
    # (what, generation, gold, the paper's rule)
    ("the last closed box counts", r"so \boxed{5}. Wait, recheck: \boxed{7}", "7", True),
    ("not the first box", r"so \boxed{7}. Wait, recheck: \boxed{5}", "7", False),
    ("a last box cut off at the limit: the previous closed box", r"so \boxed{7}. Wait, \boxed{5", "7", True),
    ("an empty last box: no earlier box, the rightmost number", r"so \boxed{7}. then 3 and \boxed{}", "3", True),
    ("an empty last box never falls back to an earlier box", r"so \boxed{7}. then 3 and \boxed{}", "7", False),
    ("an unparseable last box: the rightmost number", r"\boxed{7} so 4 \boxed{\%\%}", "4", True),
    ("no box at all: the rightmost plain number", "the sum is 4 then 9", "9", True),
    ("no box at all: not an earlier number", "the sum is 4 then 9", "4", False),
    ("nothing to extract is wrong", "no digits here", "4", False),
    ("'final answer is X ... I hope' comes first", r"Therefore, the final answer is: $\boxed{6}$. I hope it is correct. 8",
     "6", True),
    ("'final answer ... is X' before a later box", r"the final answer to this is 2. \boxed{5}", "2", True),
    ("a box before 'answer:'", r"\boxed{5} answer: 3", "5", True),
    ("'answer:' X before a plain number", "answer: 3 then text 5", "3", True),
    ("two boxes joined by 'and' are a set", r"\boxed{2} and \boxed{3}", "2", False),
    ("boxes separated by more than 'and' are not a set", r"\boxed{2}. Wait, so \boxed{3}", "3", True),
    ("<think> is not stripped", r"<think> \boxed{4} </think> answer 5", "4", True),
    ("sympy equality, not string equality", r"\boxed{\frac{1}{2}}", "0.5", True),
    ("an equation prediction is compared by its value (the known difference)", r"\boxed{3=3}", "3", True),
]


@pytest.mark.parametrize("what, generation, gold, expected", CASES, ids=[c[0] for c in CASES])
def test_the_papers_rule(what, generation, gold, expected):
    assert correct(generation, gold) is expected


def test_it_differs_from_both_box_diagnostics():
    """Where the diagnostics and the paper's rule part: an empty last box, no box at all."""
    empty_last = r"so \boxed{7}. then 3 and \boxed{}"
    assert last_boxed(empty_last) == "" and first_boxed(empty_last) == "7"  # the diagnostics read a box
    assert not correct(empty_last, "7") and correct(empty_last, "3")
    no_box = "the sum is 4 then 9"
    assert last_boxed(no_box) is None and correct(no_box, "9")


def test_fallback_is_flagged():
    assert scored_by_fallback("the sum is 4 then 9")
    assert scored_by_fallback(r"so \boxed{7")  # unclosed
    assert not scored_by_fallback(r"so \boxed{7}")


def test_a_gold_answer_that_does_not_parse_is_an_error():
    with pytest.raises(ValueError, match="does not parse"):
        correct(r"\boxed{1}", "")


def test_the_scorer_names_its_versions():
    name = scorer_name()
    assert "math-verify 0.5.2" in name and "latex2sympy2_extended 1.0.6" in name
