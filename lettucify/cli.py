"""Entry point of ``python -m lettucify`` and the ``lettucify`` console script.

``lettucify config ...`` reviews configs (lettucify/review); anything else is a Hydra job.
Importing this module imports no torch: ``--help``, ``--cfg`` and ``--info`` answer at
once; the task imports what it needs when it runs.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from lettucify import tasks
from lettucify.config import REPO_ROOT  # importing it registers the schema
from lettucify.errors import LettucifyError
from lettucify.sweep import job
from lettucify.validation import composition_error

log = logging.getLogger("lettucify")

# Hydra prints its composition errors (an unknown key, no such option) over several lines
# with a stack-trace hint; under HYDRA_FULL_ERROR=1 it raises them, for ``main`` to say in
# one line. Set by ``main`` unless the user set it, and unset while the task runs, so that
# the processes the task starts (servers, ranks) report their own errors alike.
FULL_ERROR = "HYDRA_FULL_ERROR"


@contextmanager
def without_full_error() -> Iterator[None]:
    saved = os.environ.pop(FULL_ERROR, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[FULL_ERROR] = saved


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="config")
def run_job(cfg: DictConfig) -> Optional[float]:
    """Run the task; return ``optimized_metric`` of its metrics, what a sweeper optimises."""
    with without_full_error():
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
    if os.environ.get(FULL_ERROR) == "1":  # the user's: Hydra's whole trace
        run_job()
        return
    os.environ[FULL_ERROR] = "1"
    try:
        run_job()
    except LettucifyError as err:  # a launcher's, or a sweep point's that the sweeper raised
        print(err, file=sys.stderr)
        sys.exit(2)
    except CompactHydraException as err:
        print(composition_error(err, sys.argv[1:]), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
