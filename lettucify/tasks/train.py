"""``task=train`` (the default): train, test, track and register, on the configured compute."""

from __future__ import annotations

from typing import Dict, Optional

from omegaconf import DictConfig

from lettucify import compute


def run(cfg: DictConfig) -> Optional[Dict[str, float]]:
    """Return the run's metrics: the selected epoch's, the test evaluation's, train_time_s."""
    return compute.launch(cfg)
