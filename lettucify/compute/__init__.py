"""Compute backends: where training runs. One module each, named by ``compute.backend``.

    local     this process (or each process that a cluster scheduler started)
    torchrun  workers started by PyTorch's elastic launcher, on one node or several
    azureml   a distributed command job on an Azure ML cluster

Each backend module has ``launch(cfg) -> metrics | None``. A new backend is a module here,
a value of ``lettucify.config.Backend`` and its config under ``conf/compute/``.
``lettucify.compute.device`` sets up the device inside whichever process trains.
"""

from __future__ import annotations

import importlib
from typing import Dict, Optional

from omegaconf import DictConfig

from lettucify.config import Backend


def launch(cfg: DictConfig) -> Optional[Dict[str, float]]:
    """Train on the configured backend; return its metrics (None when it does not wait for them)."""
    backend = Backend(cfg.compute.backend)
    return importlib.import_module(f"{__name__}.{backend.value}").launch(cfg)
