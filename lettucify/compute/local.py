"""``compute.backend=local``: train in this process."""

from __future__ import annotations

from typing import Dict, Optional

from omegaconf import DictConfig


def launch(cfg: DictConfig) -> Optional[Dict[str, float]]:
    from lettucify.train.pipeline import train

    return train(cfg)
