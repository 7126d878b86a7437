"""Honest accuracy on the real food16 photos: the default config, one fixed seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import FOOD16


@pytest.mark.slow
@pytest.mark.skipif(not (FOOD16 / "train").is_dir(), reason="needs LETTUCIFY_DATA_DIR with food16")
def test_default_config_reaches_50_percent_on_food16(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "seed=0", "logger=none", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 16 classes: chance is 6.25%.
    assert metrics["top1"] >= 0.50, {k: v for k, v in metrics.items() if k != "per_class"}
