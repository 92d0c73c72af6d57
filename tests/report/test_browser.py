"""The report as a reader sees it: rendered by a headless browser, first screen inspected.

Skipped where no Chromium is installed (``apt-get install chromium``); the parsed-HTML checks
of ``tests/evaluation/test_chance.py`` run everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukemia_wbc.report import write_report
from tests.evaluation.test_chance import _result

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
               None)  # fmt: skip
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed")
#: The warning box's border (``.warning`` in the report's style sheet).
WARNING_RED = np.array([187, 0, 0])
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
          "--disable-background-networking", "--disable-component-update"]  # fmt: skip


def _browser(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, *_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def _first_screen(page: Path, tmp: Path) -> np.ndarray:
    """The top 1000 x 800 px of ``page`` as the browser draws it (RGB array)."""
    png = tmp / f"{page.parent.name}.png"
    _browser(page, tmp / "profile", "--window-size=1000,800", f"--screenshot={png}")
    return np.asarray(Image.open(png).convert("RGB"))


def _red_pixels(image: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - WARNING_RED).max(axis=-1) < 30).sum())


def test_the_first_screen_of_a_useless_models_report_shows_the_warning(tmp_path: Path) -> None:
    useless = write_report([_result("ResNet", "majority")], tmp_path / "useless").html
    good = write_report([_result("ResNet", "good")], tmp_path / "good").html
    assert _red_pixels(_first_screen(useless, tmp_path)) > 500  # the box's red border, on top
    assert _red_pixels(_first_screen(good, tmp_path)) == 0  # no warning: no red box


def test_the_rendered_page_reads_warning_then_comparison_with_guessing_rows(
    tmp_path: Path,
) -> None:
    page = write_report([_result("ResNet", "majority")], tmp_path / "r").html
    dom = _browser(page, tmp_path / "profile", "--dump-dom").stdout
    text = " ".join(dom.split())
    assert text.index("ResNet predicts Neutrophil") < text.index("Comparison")
    comparison = text[text.index("Comparison") :]
    assert "majority class" in comparison.lower() and "stratified" in comparison.lower()
