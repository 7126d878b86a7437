"""Hydra entry point of ``python -m lettucify`` and the ``lettucify`` console script.

Importing this module imports no torch: ``--help``, ``--cfg`` and ``--info`` answer at
once; the task imports what it needs when it runs.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from lettucify import tasks
from lettucify.config import REPO_ROOT  # importing it registers the schema
from lettucify.errors import LettucifyError
from lettucify.sweep import job

log = logging.getLogger("lettucify")


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """Run the task; return ``optimized_metric`` of its metrics, what a sweeper optimises."""
    if job.in_sweep():
        return job.run_in_sweep(cfg, tasks.run)
    try:
        metrics = tasks.run(cfg)
    except LettucifyError as err:
        log.error("%s", err)
        sys.exit(2)
    return metrics.get(cfg.optimized_metric) if metrics else None


if __name__ == "__main__":
    main()
