"""One job of a sweep: its objective, and its ``result.json`` for the summary.

A job that fails in a sweep is recorded as failed, with its one-line error, and
returns NaN (Optuna marks the trial failed): the other jobs still run and the summary
is still written; the sweep then exits non-zero (``callback``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
COMPLETED, FAILED = "completed", "failed"


@dataclass
class JobResult:
    """What ``result.json`` holds: one row of the sweep's summary."""

    num: int
    overrides: List[str]
    status: str
    objective: str
    value: Optional[float] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    duration_s: Optional[float] = None

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{RESULT_FILE}.tmp"
        partial.write_text(json.dumps(asdict(self), indent=2, allow_nan=False) + "\n")
        os.replace(partial, folder / RESULT_FILE)

    @classmethod
    def read(cls, folder: Path) -> Optional["JobResult"]:
        try:
            return cls(**json.loads((folder / RESULT_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def in_sweep() -> bool:
    """Whether this job is one of a multirun's: a launcher numbered it (hydra.job.num), which
    Hydra leaves unset in a single run (where hydra.mode may be unset too: Hydra's test runners)."""
    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN or OmegaConf.select(hydra, "job.num", default=None) is not None


def objective(cfg: DictConfig, metrics: Optional[Mapping[str, float]]) -> float:
    """``optimized_metric`` of what the task returned; a one-line error when it is not there."""
    name = cfg.optimized_metric
    if metrics and name in metrics:
        return float(metrics[name])
    logged = ", ".join(sorted(metrics)) if metrics else "none"
    raise LettucifyError(f"optimized_metric={name} is not a metric task={getattr(cfg.task, 'value', cfg.task)} "
                         f"returned (it returned: {logged})")


def run_in_sweep(cfg: DictConfig, task: Callable[[DictConfig], Optional[Mapping[str, float]]]) -> float:
    """Run the task as a sweep's job: record its result; a failure is a row, not the sweep's end."""
    hydra = HydraConfig.get()
    result = JobResult(num=hydra.job.num, overrides=list(hydra.overrides.task), status=FAILED,
                       objective=cfg.optimized_metric)
    started = time.monotonic()
    folder = Path(hydra.runtime.output_dir)
    try:
        metrics = task(cfg)
        result.metrics = {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(v)}
        value = objective(cfg, metrics)
        result.value = value if math.isfinite(value) else None
        result.status = COMPLETED
        return value
    except LettucifyError as err:
        log.error("%s", err)
        result.error = str(err)
    except Exception as err:  # a bug, not the user's: its traceback goes to the job's log
        log.exception("job #%d failed", result.num)
        result.error = f"{type(err).__name__}: {err}".splitlines()[0]
    except BaseException as err:  # Ctrl-C or a stop signal ends the sweep, recorded first
        result.error = f"stopped ({type(err).__name__})"
        raise
    finally:
        result.duration_s = round(time.monotonic() - started, 3)
        result.write(folder)
    return math.nan
