"""``task=train`` (the default): train, test, track and register, on the configured compute."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from lettucify import compute


def run(cfg: DictConfig) -> Optional[float]:
    """Return the validation accuracy of the selected checkpoint (for sweepers)."""
    return compute.launch(cfg)
