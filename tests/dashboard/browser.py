"""Helpers of the browser tests (tests/dashboard/test_browser*.py): the app served on a dataset
folder and work directory, and the moves every test makes in the page. The server and the
browser themselves come from benchmarks.browser (shared with benchmarks.pages); the `page`
fixture is in fixtures.py."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from benchmarks.browser import IDLE, VIEWPORT, serve
from core.config import PROJECT_ROOT

SHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"


@contextmanager
def served(tmp_path: Path, data_root: Path, workdir: Path, **env: str) -> Iterator[str]:
    """The app's URL, on a dataset folder and work directory (through the env defaults, plus
    `env`); a study started in the app runs on its own local Ray (D3M_RAY_ADDRESS unset)."""
    env = {"D3M_DATA": str(data_root), "D3M_WORKDIR": str(workdir), "D3M_RAY_ADDRESS": None, **env}
    with serve(env, log=tmp_path / "server.log") as app:
        yield app.url


def settle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(500)


def shot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main container, so the viewport is
    grown to the content's height for the screenshot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate('document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


def go(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    settle(page)
