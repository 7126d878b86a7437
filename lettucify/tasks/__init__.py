"""Tasks: what ``python -m lettucify task=<name>`` does. One module each, found by name.

Each task module has ``run(cfg) -> metrics | None``: the numbers it logged, by name, of
which ``optimized_metric`` picks the one a sweeper optimises (lettucify.sweep). A new task is a module here and a value of
``lettucify.config.Task``; its settings are a config group of its own.
"""

from __future__ import annotations

import importlib
from typing import Dict, Optional

from omegaconf import DictConfig

from lettucify.config import Task


def run(cfg: DictConfig) -> Optional[Dict[str, float]]:
    task = Task(cfg.task)
    return importlib.import_module(f"{__name__}.{task.value}").run(cfg)
