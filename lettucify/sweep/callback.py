"""The Hydra callback that makes a multirun one sweep with an answer (conf/config.yaml).

On the sweep's start: the MLflow parent run (when tracking is on), which each job's run
joins as a child. On its end: the summary (``lettucify.sweep.summary``) in the sweep
folder and on the parent run, then exit status 1, with one line, when a job failed.
Hydra runs this in the process that sweeps; a single run does nothing here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: Any = None

    def __getstate__(self) -> dict:
        # Hydra's context, callbacks included, is shipped to each job by the Azure ML launcher:
        # the sweep's run (its client, the secrets its masker knows) stays in this process.
        return {"parent": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from lettucify.tracking.run import PARENT_RUN_ENV

        if not OmegaConf.select(config, "logger.enabled", default=False):
            return
        from lettucify.tracking.sweep import SweepRun

        self.parent = SweepRun(config.logger, Path(config.hydra.sweep.dir), list(config.hydra.overrides.task))
        os.environ[PARENT_RUN_ENV] = self.parent.open()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lettucify.sweep.summary import MARKDOWN_FILE, command_line, write_summary
        from lettucify.tracking.run import PARENT_RUN_ENV

        sweep_dir = Path(config.hydra.sweep.dir)
        summary, files = write_summary(sweep_dir, config.optimized_metric,
                                       maximize=config.optimized_direction == "maximize")
        best = summary.best
        if best is not None:
            log.info("sweep: best is job %d, %s = %.4g: %s", best.num, summary.objective, best.value,
                     command_line(best.overrides))
        log.info("sweep: summary in %s", sweep_dir / MARKDOWN_FILE)
        if self.parent is not None:
            os.environ.pop(PARENT_RUN_ENV, None)
            # The best job's metrics under their own names, so that runs compare in MLflow's UI.
            tags = {"best_command": command_line(best.overrides), "best_job": str(best.num)} if best else {}
            self.parent.close(best.metrics if best else {}, tags, files, failed=bool(summary.failed))
            self.parent = None
        if summary.failed:
            first = summary.failed[0]
            # Hydra turns a callback's exception into a warning: the exit status is set here.
            log.error("sweep: %d of %d jobs failed (job %d: %s); the others' results are in %s",
                      len(summary.failed), len(summary.rows), first.num, first.error, sweep_dir / MARKDOWN_FILE)
            sys.exit(1)
