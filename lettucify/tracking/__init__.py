"""Experiment tracking (MLflow runs) and the model registry.

Importing this package imports neither mlflow nor torch: ``open_tracker`` imports
mlflow when tracking is enabled, and the registry functions (``register_model``,
``promote``, ``load_registered``) load ``lettucify.tracking.registry`` on first use.

    with open_tracker(cfg.logger, cfg, run_dir) as tracker:
        tracker.set_tags({"dataset_fingerprint": dataset_fingerprint(root, samples)})
        tracker.log_epoch(record, step=record["epoch"])
        tracker.log_metrics({"top1": 0.91})            # -> test_top1
        tracker.log_artifacts([run_dir / "metrics.json"])
        register_model(model, classes, preprocess, images, cfg.registry, test_acc, run_id=tracker.run_id)
"""

from __future__ import annotations

from typing import Any

from lettucify.tracking.run import (
    MlflowTracker,
    NullTracker,
    Tracker,
    dataset_fingerprint,
    end_orphaned_runs,
    git_state,
    open_tracker,
)
from lettucify.tracking.secrets import MASK, Masker, is_secret_key
from lettucify.tracking.store import default_tracking_uri, resolve_tracking_uri

_REGISTRY = ("register_model", "registered_versions", "promote", "load_registered", "ExportedModel", "pip_requirements")

__all__ = [
    "MASK",
    "Masker",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "dataset_fingerprint",
    "default_tracking_uri",
    "end_orphaned_runs",
    "git_state",
    "is_secret_key",
    "open_tracker",
    "resolve_tracking_uri",
    *_REGISTRY,
]


def __getattr__(name: str) -> Any:
    if name in _REGISTRY:
        from lettucify.tracking import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
