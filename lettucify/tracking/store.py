"""Where the MLflow store is, and MLflow's own console output.

The one place that resolves the tracking and registry URIs: the run tracker, the
registry and the tasks all ask here. Imports no mlflow until a function needs it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from lettucify.config import REPO_ROOT


def setting(node: Any, key: str, default: Any = None) -> Any:
    """``node.key`` for a DictConfig, a mapping or a dataclass; ``default`` when absent.

    The tracking functions take any of the three, so that they are usable outside Hydra.
    """
    if node is None:
        return default
    if isinstance(node, DictConfig):
        return OmegaConf.select(node, key, default=default)
    if isinstance(node, Mapping):
        return node.get(key, default)
    if is_dataclass(node) or hasattr(node, key):
        return getattr(node, key, default)
    return default


def default_tracking_uri() -> str:
    return f"sqlite:///{REPO_ROOT / 'outputs' / 'mlflow.db'}"


def resolve_tracking_uri(uri: Optional[str] = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI`` (set inside Azure ML jobs), else the SQLite default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def registry_uri(tracking_uri: str) -> str:
    """``$MLFLOW_REGISTRY_URI`` when set, else the tracking store itself."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri


def sqlite_path(uri: str) -> Optional[Path]:
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().resolve()


def artifact_location(uri: str, experiment_name: str) -> Optional[str]:
    """For a SQLite store, artifacts go beside the database (MLflow's default is ./mlruns of
    whatever folder the command runs in); a server decides for itself."""
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment_name).strip("._") or "experiment"
    return (db.parent / "mlartifacts" / folder).as_uri()


def use_tracking_uri(uri: Optional[str] = None) -> str:
    """Point this process's MLflow (tracking and registry) at ``resolve_tracking_uri(uri)``."""
    import mlflow

    quiet_mlflow()
    uri = resolve_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    # No set_registry_uri: it would export $MLFLOW_REGISTRY_URI for the rest of the process,
    # and MLflow's registry already follows the tracking URI (or a user's own variable).
    return uri


def client(tracking_uri: Optional[str] = None) -> Any:
    """An ``MlflowClient`` for the store, without touching MLflow's process-wide URIs."""
    import mlflow

    quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=registry_uri(uri))


class _ToLog:
    """A stream that hands what MLflow prints to the ``mlflow`` logger, a line at a time."""

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> None:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in filter(str.strip, lines):
            logging.getLogger("mlflow").info("%s", line.rstrip())

    def flush(self) -> None:
        pass


class _NotMlflowChatter(logging.Filter):
    """On the console: MLflow's warnings and errors, not its INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("mlflow")


def quiet_mlflow() -> None:
    """MLflow's own lines ("Registered model ... already exists", "Created version ...")
    go to the log file only; its artifact progress bars are off. Idempotent.

    MLflow prints them to stderr through its own stream and handler, beside Lettucify's
    lines; here they join the root logger (the run folder's ``lettucify.log``), and the
    console handlers drop them below WARNING.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.utils.logging_utils as mlflow_logging

    if isinstance(mlflow_logging.MLFLOW_LOGGING_STREAM, _ToLog):
        return
    mlflow_logging.MLFLOW_LOGGING_STREAM = _ToLog()  # eprint() looks it up at each call
    logger = logging.getLogger("mlflow")
    logger.handlers = []
    logger.propagate = True
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, _NotMlflowChatter) for f in handler.filters):
                handler.addFilter(_NotMlflowChatter())
