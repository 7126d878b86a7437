"""``data.cv_folds``: where a cross-validation job keeps its folds and what it reports of them.

A job with K folds trains K times, fold k validating on the k-th part of the training
photos and training on the others (checkpoints in ``folds/<k>/checkpoints``), then once
more on every training photo: the final model, tested, saved and registered like any
run's. A fold's metrics are named ``fold<k>/<name>`` (its epochs at step=epoch, as the
final model's are without the prefix); a fold's result is its last epoch, because the
final model, which trains without validation, is its last epoch too. The job's
``val_acc`` and ``val_loss`` are the folds' mean, with their sample standard deviation
in ``val_acc_std`` and ``val_loss_std``.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

from lettucify import distributed
from lettucify.evaluate.report import scalars
from lettucify.tracking import Tracker

log = logging.getLogger(__name__)

# What the job averages over its folds.
AVERAGED = ("val_acc", "val_loss")


def checkpoint_dir(run_dir: Path, fold: int) -> Path:
    return run_dir / "folds" / str(fold) / "checkpoints"


def fold_metrics(fold: int, record: Mapping[str, Any]) -> Dict[str, float]:
    """An epoch record's numbers (not its epoch number) as fold ``fold``'s: ``fold<k>/<name>``."""
    return scalars({key: value for key, value in record.items() if key != "epoch"}, prefix=f"fold{fold}/")


def epoch_logger(tracker: Tracker, fold: int) -> Callable[[Mapping[str, Any]], None]:
    """What fit calls after each epoch of fold ``fold``."""
    return lambda record: tracker.log_epoch(fold_metrics(fold, record), step=record["epoch"])


def summary(histories: Sequence[List[Mapping[str, Any]]]) -> Dict[str, float]:
    """The folds' results (each fold's last epoch, ``fold<k>/...``), their mean val_acc and
    val_loss and the sample standard deviations (``val_acc_std``, ``val_loss_std``)."""
    last = [history[-1] for history in histories]
    result: Dict[str, float] = {}
    for fold, record in enumerate(last, 1):
        result.update(fold_metrics(fold, record))
    for key in AVERAGED:
        values = [record[key] for record in last]
        result[key] = statistics.fmean(values)
        result[f"{key}_std"] = statistics.stdev(values)
    return result


def report(histories: Sequence[List[Mapping[str, Any]]], tracker: Tracker) -> Dict[str, float]:
    """``summary`` of the folds, logged (the mean and std; the folds' own are their epochs')."""
    result = summary(histories)
    averaged = {name: result[name] for key in AVERAGED for name in (key, f"{key}_std")}
    tracker.log_metrics(averaged, prefix="")
    if distributed.is_main():
        log.info(
            "cross-validation over %d folds: %s", len(histories),
            ", ".join(f"{key} {result[key]:.4f} +/- {result[f'{key}_std']:.4f}" for key in AVERAGED),
        )
    return result
