"""A sweep's MLflow parent run.

Opened when the sweep starts and kept RUNNING while its jobs run; each job's run is its
child (``mlflow.parentRunId``, from ``$LETTUCIFY_PARENT_RUN_ID``). Its params are the
sweep's overrides; at the end it gets the best job's metrics, the summary files and
FINISHED (FAILED when a job failed). ``sweep.json`` in the sweep folder names it, so a
resumed sweep continues the same parent run.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from lettucify.config import REPO_ROOT
from lettucify.tracking.run import (
    MAX_PARAM_VALUE,
    experiment_id,
    git_state,
    mask_override,
    process_tags,
    run_name,
)
from lettucify.tracking.secrets import Masker
from lettucify.tracking.store import setting, use_tracking_uri

log = logging.getLogger(__name__)

SWEEP_RECORD = "sweep.json"
SWEEP_DIR_TAG = "lettucify.sweep_dir"


class SweepRun:
    def __init__(self, logger_cfg: Any, sweep_dir: Path, overrides: Sequence[str]) -> None:
        self.logger_cfg = logger_cfg
        self.sweep_dir = sweep_dir
        self.overrides = list(overrides)
        self.masker = Masker()
        self.run_id: Optional[str] = None
        self._client: Any = None

    def open(self) -> str:
        import mlflow

        tracking_uri = use_tracking_uri(setting(self.logger_cfg, "tracking_uri"))
        self._client = mlflow.MlflowClient()
        record = self.sweep_dir / SWEEP_RECORD
        earlier = json.loads(record.read_text()).get("mlflow_run_id") if record.is_file() else None
        if earlier and self._exists(earlier):
            self.run_id = earlier
            self._client.update_run(earlier, status="RUNNING")
            log.info("MLflow: continuing the sweep's run %s", earlier)
        else:
            experiment = setting(self.logger_cfg, "experiment_name") or "lettucify"
            name = run_name(f"{experiment} sweep", self.overrides, self.masker)
            tags = {**git_state(REPO_ROOT), **process_tags(), "host": socket.gethostname(),
                    SWEEP_DIR_TAG: str(self.sweep_dir)}
            run = self._client.create_run(experiment_id(self._client, tracking_uri, experiment), run_name=name,
                                          tags=tags)
            self.run_id = run.info.run_id
            for override in self.overrides:
                key, _, value = mask_override(override, self.masker).partition("=")
                self._client.log_param(self.run_id, key.lstrip("+~"), value[:MAX_PARAM_VALUE])
            log.info("MLflow: the sweep's run %s; each job's run is its child", self.run_id)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"mlflow_run_id": self.run_id}) + "\n")
        return self.run_id

    def close(self, metrics: Mapping[str, float], tags: Mapping[str, str], files: Sequence[Path],
              failed: bool) -> None:
        """The best job's metrics, the summary's tags and files, and the run's end."""
        assert self.run_id is not None
        for key, value in metrics.items():
            self._client.log_metric(self.run_id, key, value)
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, self.masker.text(value))
        for path in files:
            self._client.log_artifact(self.run_id, str(path))
        self._client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
            return True
        except MlflowException:
            return False
