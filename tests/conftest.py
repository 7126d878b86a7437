"""Shared fixtures. The image generator itself is ``tests/helpers.make_image_folder``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import pytest

from helpers import FOOD16, make_image_folder


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory) -> Path:
    """paths.cache_dir (downloads, the decoded-image cache) under the session's tmp folder,
    for this process and the runs it starts: tests never write to ~/.cache."""
    folder = tmp_path_factory.mktemp("lettucify-cache")
    previous = os.environ.get("LETTUCIFY_CACHE_DIR")
    os.environ["LETTUCIFY_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["LETTUCIFY_CACHE_DIR"]
    else:
        os.environ["LETTUCIFY_CACHE_DIR"] = previous


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A small learnable ImageFolder tree: 3 classes, 8 train and 4 test JPEGs each."""
    return make_image_folder(tmp_path / "images")


# Module-scoped, not session: Playwright's sync API keeps an asyncio loop running in the
# main thread while it is open, and asyncio.run in later tests would refuse to start.
@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright (tests/browser.py); skipped, saying why,
    where there is none, unless $LETTUCIFY_REQUIRE_BROWSER=1 (CI)."""
    from browser import FLAGS, CHROMIUM, REQUIRED, missing

    problem = missing()
    if problem:
        if REQUIRED:
            pytest.fail(f"{problem} ($LETTUCIFY_REQUIRE_BROWSER=1)")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def food16_model(tmp_path_factory) -> Tuple[Path, str]:
    """``(root, tracking URI)``: a cnn16 trained on the food16 photos once per session and
    registered as ``serving.MODEL`` version 1 (@candidate); its run folder is ``root/train``.
    Skipped without the photos ($LETTUCIFY_DATA_DIR)."""
    if not (FOOD16 / "train").is_dir():
        pytest.skip("needs the food16 photos in $LETTUCIFY_DATA_DIR")
    from serving import train

    root = tmp_path_factory.mktemp("food16-model")
    uri = f"sqlite:///{root}/mlflow.db"
    train(root, FOOD16, uri, "data=food16", "data.root=null", "trainer.epochs=6", "optimizer.lr=3e-3",
          "data.batch_size=16", "trainer.mixup_alpha=0", "trainer.cutmix_alpha=0")
    return root, uri
