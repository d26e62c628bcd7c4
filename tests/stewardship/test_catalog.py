"""``cellstrata catalog`` on the example run, rendered by a real headless Chromium (Debian's
``chromium``): the page loads from disk, a screenshot is taken, and the DOM holds every plate
and level. Chromium missing skips the test on a lab's machine and fails it in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from cellstrata.cli import main as cellstrata_main

pytestmark = pytest.mark.workflow

LEVELS = (
    "raw",
    "manifest",
    "qc",
    "illumination",
    "corrected",
    "masks",
    "crops",
    "features",
    "profiles",
)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "Debian's chromium is not installed (make test installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _headless(browser: str, tmp_path, *args: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # the test machine runs as root
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def test_catalog_renders_in_headless_chromium(example_run, tmp_path):
    browser = _chromium()
    config = yaml.safe_load((example_run / "test_config.yaml").read_text())
    config["retention"]["levels"]["masks"] = [{"keep": "90d"}, {"archive": "archive"}]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    page = tmp_path / "catalog.html"
    code = cellstrata_main(
        [
            "catalog",
            "--config",
            str(configfile),
            "--workspace",
            str(example_run),
            "--out",
            str(page),
        ]
    )
    assert code == 0
    text = page.read_text()
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text
    dom = _headless(browser, tmp_path, "--dump-dom", page.as_uri())
    for level in LEVELS:
        cell = re.search(rf'<td data-plate="SYN01" data-level="{level}" data-state="([^"]+)"', dom)
        assert cell is not None, level
        assert cell[1] == ("deleted" if level == "corrected" else "present"), level
    assert "deleted, remakeable" in dom and "reproducible from rule correct" in dom
    lifecycle = dom[dom.index('id="lifecycle"') :]
    assert "masks" in lifecycle and "archive" in lifecycle.split("</table>")[0]
    assert "lineage of results/profiles/" in dom and "ingest" in dom
    shot = tmp_path / "catalog.png"
    _headless(browser, tmp_path, "--window-size=1400,1000", f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
