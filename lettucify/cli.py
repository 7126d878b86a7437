"""Entry point of ``python -m lettucify`` and the ``lettucify`` console script.

``lettucify config ...`` reviews configs (lettucify/review); anything else is a Hydra job.
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
def run_job(cfg: DictConfig) -> Optional[float]:
    """Run the task; return ``optimized_metric`` of its metrics, what a sweeper optimises."""
    if job.in_sweep():
        return job.run_in_sweep(cfg, tasks.run)
    try:
        metrics = tasks.run(cfg)
    except LettucifyError as err:
        log.error("%s", err)
        sys.exit(2)
    return metrics.get(cfg.optimized_metric) if metrics else None


def main() -> None:
    if sys.argv[1:2] == ["config"]:
        from lettucify.review.command import main as review

        sys.exit(review(sys.argv[2:]))
    run_job()


if __name__ == "__main__":
    main()
