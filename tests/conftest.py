"""Shared fixtures. The image generator itself is ``tests/helpers.make_image_folder``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A small learnable ImageFolder tree: 3 classes, 8 train and 4 test JPEGs each."""
    return make_image_folder(tmp_path / "images")
