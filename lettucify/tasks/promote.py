"""``task=promote``: move ``registry.promote_to`` to the version that ``registry.alias`` points at.

    python -m lettucify task=promote            # candidate -> champion
"""

from __future__ import annotations

from omegaconf import DictConfig


def run(cfg: DictConfig) -> None:
    from lettucify.tracking.registry import promote

    promote(cfg.registry.name, cfg.registry.alias, cfg.registry.promote_to, cfg.logger.tracking_uri)
