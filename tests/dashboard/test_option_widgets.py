"""The Debias page's settings are built from the declared domains (AppTest): for every method and
option, a choice is a select box offering exactly the choices, a bounded number a number input
with those bounds, a list of numbers text refused as typed (Retrain disabled); none of the
generated outside values (tests/option_cases.py) can be chosen. A study file with a value
outside its domain shows its one-line error on the Ablations page, with no Start button."""
from __future__ import annotations

import math

import pytest

from core.methods import METHODS
from core.methods.options import Option
from tests.dashboard.fixtures import open_app
from tests.option_cases import outside

WITH_OPTIONS = [name for name, m in METHODS.items() if m.options]


def check_number_input(box, option: Option) -> None:
    """The input's limits are the declared bounds: an inclusive one itself, a strict one the
    next whole number (int) or the next float past it; and no outside value is in range."""
    low, high = box.min, box.max
    if option.ge is not None:
        assert low == option.ge
    elif option.gt is not None:
        assert low > option.gt and (low == option.gt + 1 if option.kind is int else low - option.gt < 1e-300)
    else:
        assert low is None or low == -math.inf or low < -1e300
    if option.le is not None:
        assert high == option.le
    elif option.lt is not None:
        assert high < option.lt and (high == option.lt - 1 if option.kind is int else option.lt - high < 1e-12)
    else:
        assert high is None or high > 1e300
    for value in outside(option):
        assert (low is not None and value < low) or (high is not None and value > high), value
    assert box.value == option.default and box.step == (1 if option.kind is int else 0.01)


@pytest.mark.parametrize("method", WITH_OPTIONS)
def test_settings_offer_only_allowed_values(monkeypatch, tiny, tiny_copy, method):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "debias")
    at.radio(key="debias_method").set_value(method).run()
    for name, option in METHODS[method].options.items():
        key = f"option_{method}_{name}"
        if option.choices:
            box = at.selectbox(key=key)
            assert box.options == [str(c) for c in option.choices] and box.value == option.default
            assert not {str(v) for v in outside(option)} & set(box.options)
        elif option.kind in (int, float):
            check_number_input(at.number_input(key=key), option)
        elif option.kind is list:
            check_list_input(at, method, name, option)
        else:
            assert at.text_input(key=key).value == option.default
    assert not at.exception


def check_list_input(at, method: str, name: str, option: Option) -> None:
    """Each outside value typed is refused on the spot with the option's one line, Retrain
    disabled; the default typed back clears it."""
    box = at.text_input(key=f"option_{method}_{name}")
    default = box.value
    assert [float(v) for v in default.split(",")] == option.default
    for value in outside(option):
        box.set_value(", ".join(map(str, value))).run()
        errors = [e.value for e in at.error]
        assert any(e.startswith(f"{method} parameter {name}=") and "is not allowed: " in e for e in errors), errors
        assert at.button(key="debias_start").disabled
    box.set_value(default).run()
    assert not at.error and not at.button(key="debias_start").disabled


def test_ablations_page_refuses_a_study_outside_a_domain(monkeypatch, tiny, tiny_copy, tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "bad.toml").write_text(f'methods = ["pgd"]\n\n[analysis]\ndata = "{tiny.data_root}"\n\n'
                                     '[grid]\n"pgd.norm" = ["l2", "l3"]\n')
    monkeypatch.setenv("D3M_STUDIES", str(folder))
    runs = sorted(p.name for p in (tiny_copy.workdir / "runs").iterdir())
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "ablations")
    assert [e.value for e in at.error] == [f"{folder / 'bad.toml'}:7: pgd.norm: pgd parameter norm='l3' is not "
                                           "allowed: one of l1, l2, linf"]
    assert "start_study" not in [b.key for b in at.button]
    assert sorted(p.name for p in (tiny_copy.workdir / "runs").iterdir()) == runs
