"""Option domains (core/methods/options.py) and Method.resolve refusing values outside them: the
texts by hand, both sides of every bound, and every registered option (tests/option_cases.py)."""
from __future__ import annotations


import pytest

from core.methods import METHODS
from core.methods.options import Option, as_option
from tests.option_cases import Case, options_of, own_cases


@pytest.mark.parametrize("option, allowed", [
    (Option("l2", choices=("l1", "l2", "linf")), "one of l1, l2, linf"),
    (Option(1.0, choices=(1.0, 0.5, 0.25)), "one of 1, 0.5, 0.25"),
    (Option(8, ge=1), "a whole number >= 1"),
    (Option(0.7, gt=0, le=1), "a number in (0, 1]"),
    (Option(0.35, gt=0, lt=1), "a number in (0, 1)"),
    (Option(0.5, ge=0, lt=1), "a number in [0, 1)"),
    (Option(-2.0, lt=0), "a number < 0"),
    (Option(3, le=5), "a whole number <= 5"),
    (Option(3.0), "any number"),
    (Option(3), "any whole number"),
    (Option("x"), "any text"),
    (Option([1.0, 0.1], gt=0), "a comma-separated list of numbers, each > 0 (at least one)"),
    (Option([1.0]), "a comma-separated list of numbers (at least one)"),
])
def test_allowed_text(option, allowed):
    assert option.allowed() == allowed


@pytest.mark.parametrize("option, inside, outside", [
    (Option(8, ge=1), [1, 2, 10**9], [0, -1]),
    (Option(0.7, gt=0, le=1), [1e-300, 0.5, 1.0], [0.0, -1e-300, 1.0000001, 2.0]),
    (Option(0.35, gt=0, lt=1), [0.999], [0.0, 1.0]),
    (Option(0.5, ge=0, lt=1), [0.0], [1.0, -0.1]),
    (Option("l2", choices=("l1", "l2")), ["l1", "l2"], ["L1", "l3", ""]),
    (Option(1.0, choices=(1.0, 0.5)), [1.0, 0.5], [0.25, 2.0]),
    (Option([1.0], gt=0), [[1.0], [0.1, 3.0]], [[], [1.0, 0.0], [-1.0]]),
    (Option(3.0), [-1e9, 0.0, 1e9], []),
])
def test_both_sides_of_every_bound(option, inside, outside):
    assert all(option.problem(v) is None for v in inside), [v for v in inside if option.problem(v)]
    assert all(option.problem(v) == option.allowed() for v in outside), [v for v in outside if not option.problem(v)]


def test_conversion_and_its_refusals():
    assert Option(8, ge=1).convert("3") == 3 and isinstance(Option(8).convert("3.0"), int)
    assert Option([1.0]).convert(" 1, 0.1 ,") == [1.0, 0.1] and Option([1.0]).convert("") == []
    assert Option(0.5).convert("1e-3") == 0.001
    for option, value in ((Option(8), "1.5"), (Option(1.0), "nan"), (Option(1.0), "inf"), (Option(1.0), True),
                          (Option([1.0]), "1, x"), (Option(1.0), "x"), (Option(1.0), None)):
        with pytest.raises((TypeError, ValueError)):
            option.convert(value)


def test_a_default_outside_its_own_domain_is_refused_at_declaration():
    with pytest.raises(ValueError, match="default 0 is outside its own domain: a whole number >= 1"):
        Option(0, ge=1)
    with pytest.raises(ValueError, match="default 'l3' is outside its own domain: one of l1, l2"):
        Option("l3", choices=("l1", "l2"))
    with pytest.raises(TypeError):
        Option((1, 2))
    assert as_option(3.0) == Option(3.0) and as_option(Option(2, ge=1)) == Option(2, ge=1)


def test_number_input_bounds():
    assert Option(0.7, gt=0, le=1).bounds() == (5e-324, 1.0)  # the smallest float > 0
    assert Option(8, gt=0).bounds() == (1, None) and Option(3, lt=5).bounds() == (None, 4)
    assert Option(3, gt=0.5, lt=4.5).bounds() == (1, 4)
    low, high = Option(0.5, gt=0, lt=1).bounds()
    assert 0 < low < 1e-300 and high < 1 and 1 - high < 1e-15
    assert Option(1.0, ge=0).bounds() == (0.0, None) and Option(1.0).bounds() == (None, None)
    assert isinstance(Option(1.0, ge=0).bounds()[0], float) and isinstance(Option(2, ge=1).bounds()[0], int)


@pytest.mark.parametrize("method, params, line", [
    ("pgd", {"norm": "l3"}, "pgd parameter norm='l3' is not allowed: one of l1, l2, linf"),
    ("ba_lora", {"rank": "-1"}, "ba_lora parameter rank=-1 is not allowed: a whole number >= 1"),
    ("pgd", {"q": "1.5"}, "pgd parameter q=1.5 is not allowed: a number in (0, 1]"),
    ("dfr", {"c_grid": "1, -0.1"}, "dfr parameter c_grid=1, -0.1 is not allowed: a comma-separated list of "
                                   "numbers, each > 0 (at least one)"),
    ("dfr", {"c_grid": ""}, "dfr parameter c_grid= is not allowed: a comma-separated list of numbers, each > 0 "
                            "(at least one)"),
    ("jtt", {"seed": -1}, "jtt parameter seed=-1 is not allowed: a whole number >= 0"),
    ("erm", {"lr": 0}, "erm parameter lr=0.0 is not allowed: a number > 0"),
    ("groupdro", {"eta": "big"}, "groupdro parameter eta='big' is not a number"),
])
def test_resolve_refuses_in_one_line(method, params, line):
    with pytest.raises(ValueError) as info:
        METHODS[method].resolve(params)
    assert str(info.value) == line


def test_values_inside_are_converted_and_completed():
    assert METHODS["pgd"].resolve({"q": "1", "biased_width": "0.5", "norm": "linf"}) == {
        "q": 1.0, "norm": "linf", "grad_scope": "fc", "mode": "resample", "init": "biased", "biased_width": 0.5}
    assert METHODS["d3m"].resolve({"beta": 0, "k": None}) == {"beta": 0.0, "k": None}


@pytest.mark.parametrize("case", own_cases(), ids=lambda c: c.id)
def test_every_registered_method_refuses_before_its_body_runs(case: Case):
    """Method.run refuses the value before the method's body sees the (absent) context."""
    with pytest.raises(ValueError) as info:
        METHODS[case.method].run(None, {case.name: case.text})
    assert str(info.value).startswith(f"{case.method} parameter {case.name}=")
    assert "is not allowed: " in str(info.value) and "\n" not in str(info.value)


def test_every_bound_of_every_registered_option_is_where_it_is_declared():
    """Each inclusive bound itself and just inside each strict one are accepted, a strict bound
    itself refused (the generated cases cover the outside)."""
    checked = 0
    for method in METHODS:
        for name, option in options_of(method).items():
            as_given = (lambda v: [v]) if option.kind is list else (lambda v: v)
            tiny = 1 if option.kind is int else 1e-9
            for inclusive, strict, inward in ((option.ge, option.gt, 1), (option.le, option.lt, -1)):
                if inclusive is not None:
                    METHODS[method].check(name, as_given(inclusive))
                if strict is not None:
                    METHODS[method].check(name, as_given(strict + inward * tiny))
                    with pytest.raises(ValueError, match=f"{method} parameter {name}=.* is not allowed"):
                        METHODS[method].check(name, as_given(strict))
                checked += inclusive is not None or strict is not None
    assert checked >= len(METHODS)  # the common seed / lr / weight_decay bounds at least
