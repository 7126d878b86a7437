"""``compute.backend=azureml``: submit this command line as a command job (lettucify.azure)."""

from __future__ import annotations

from typing import Dict, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def launch(cfg: DictConfig) -> Optional[Dict[str, float]]:
    from lettucify.azure.submit import submit

    return submit(cfg, HydraConfig.get().overrides.task)
