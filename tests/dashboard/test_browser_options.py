"""The Debias page's method settings in a real browser (Playwright + Debian's Chromium), on a
copy of the tiny analysis: PGD's choices are a select box listing exactly the declared choices,
a number typed past its bound is refused by the input, and DFR's C grid typed with a value outside its
domain shows the one-line refusal with Retrain disabled. Screenshots:
test-artifacts/screenshots/options-*.png."""
from __future__ import annotations

import re

import pytest

from tests.dashboard.browser import go, served, settle, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def server(page, tmp_path, tiny, tiny_copy):
    with served(tmp_path, tiny.data_root, tiny_copy.workdir) as url:
        yield url


def open_settings(page, method_label: str, expander: str) -> None:
    page.get_by_text(re.compile(rf"^{re.escape(method_label)}")).first.click()
    settle(page)
    page.get_by_text(expander).click()
    settle(page)


def test_settings_offer_only_allowed_values_in_a_browser(page, server):
    page.goto(server)
    settle(page)
    go(page, "Debias")
    open_settings(page, "PGD", "PGD (per-sample gradient debiasing) settings (defaults preset)")
    norm = page.get_by_role("combobox", name="norm", exact=True)
    assert norm.input_value() == "l2"
    norm.click()  # the select box opens its list
    options = page.get_by_role("option").all_inner_texts()
    assert options == ["l1", "l2", "linf"], options
    page.get_by_role("option", name="linf").click()
    settle(page)
    assert norm.input_value() == "linf"
    q = page.get_by_role("spinbutton", name="q")
    q.fill("1.5")
    q.press("Enter")
    settle(page)
    page.get_by_text(re.compile(r"Number is outside the allowed range\. Please enter a value between "
                                r"5e-324 and 1\.")).wait_for(timeout=30_000)  # (0, 1]: not taken
    shot(page, "options-pgd")

    open_settings(page, "DFR", "DFR (last-layer retraining) settings (defaults preset)")
    grid = page.get_by_role("textbox", name="c_grid")
    grid.fill("1, -0.1")
    grid.press("Enter")
    settle(page)
    page.get_by_text("dfr parameter c_grid=1, -0.1 is not allowed: a comma-separated list of numbers, "
                     "each > 0 (at least one)").wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Retrain").is_disabled()
    shot(page, "options-dfr-refused")
