"""The one page (index.html): self-contained, and rendered by a real headless browser.

The browser test uses Debian's ``chromium``; when it is missing it is installed with apt-get if
the tests run as root with apt available (as in CI), and the test is skipped otherwise.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_runs import celeba_grid, cityscapes_values, config, dense_metrics, write_run
from PIL import Image

from roaming import grid, report
from roaming.report.runs import SYNTHETIC_NOTE

DEFAULTS = {
    "tr": {"sharing": 0.5},
    "mr": {"sharing": 0.5, "update_interval": 0.1, "strategy": "random", "update_ratio": 1.0},
}
# Offline-safe flags: no network services, no first-run or sync, a fresh profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """index.html of two datasets: a synthetic CelebA grid and a CityScapes one without MR."""
    root = tmp_path_factory.mktemp("page")
    celeba = celeba_grid(root / "runs" / "celeba")
    report.write_report(
        celeba,
        root / "reports" / "celeba",
        preset="demo",
        data_source="synthetic",
        defaults=DEFAULTS,
    )
    dense = []
    stl = cityscapes_values({}, 0.2, 0.1)
    for task, name in enumerate(grid.task_names("cityscapes")[:2]):
        cfg = config("stl", 0, "cityscapes", task=task)
        dense.append(
            write_run(
                root / "runs" / "cityscapes",
                f"stl/{name}_s0",
                cfg,
                dense_metrics("cityscapes", name, stl),
            )
        )
    for method in ("mtl", "gradnorm"):
        dense.append(
            write_run(
                root / "runs" / "cityscapes", f"{method}/s0", config(method, 0, "cityscapes"), stl
            )
        )
    report.write_report(
        dense, root / "reports" / "cityscapes", preset="demo", data_source="synthetic"
    )
    # given in the wrong order: the page follows the paper's (CelebA first)
    dirs = [root / "reports" / "cityscapes", root / "reports" / "celeba"]
    return report.write_index(dirs, root / "reports" / grid.INDEX_FILE, preset="demo")


def test_page_is_self_contained_and_in_the_papers_order(page: Path) -> None:
    text = page.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    images = re.findall(r'<img src="([^"]+)"', text)
    # CelebA: 4 Figure 1 panels, curves, masks; CityScapes (no TR/MR): curves only
    assert len(images) == 7
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.index('id="celeba"') < text.index('id="cityscapes"')
    assert text.count(SYNTHETIC_NOTE) >= 3  # the page and each dataset
    assert "Figure 1: metric vs sharing ratio p, MR vs TR: not drawn; needs TR or MR runs" in text
    assert "Δm is empty for seed 0: no STL run of seg_object" in text
    assert "not measured (missing:" in text and "holds" in text
    assert "<table>" in text and "MR p=0.5 Δ=0.1 random r=1" in text


def _chromium() -> str:
    """The chromium binary; installed with apt-get when missing and allowed, else skip."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed; installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"apt-get install chromium failed:\n{result.stdout}\n{result.stderr}")
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def test_page_renders_in_a_headless_browser(page: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "page.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    command = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={screenshot}",
        "--window-size=1200,3000",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert screenshot.exists(), f"no screenshot:\n{result.stdout}\n{result.stderr}"
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape == (3000, 1200, 3)
    assert pixels.std() > 20  # not a blank page
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    # the warning box's border (#b30000) near the top: the CSS applied
    top = slice(0, 400)
    assert ((red[top] > 150) & (green[top] < 40) & (blue[top] < 40)).sum() > 500
    # matplotlib's first colour (tab:blue, #1f77b4) in the first figure: the images decoded
    near_blue = (abs(red - 31) < 25) & (abs(green - 119) < 25) & (abs(blue - 180) < 25)
    assert near_blue.sum() > 200
