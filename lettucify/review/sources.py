"""What one side of ``lettucify config diff`` names, read as a plain, resolved config.

* ``runs:/<run_id>`` or ``mlflow:<run_id>``: the config the MLflow run logged
  (lettucify.tracking.run's config artifact, resolved and masked as the run had it);
* a folder: a run folder, its ``.hydra/config.yaml`` resolved with its ``.hydra/hydra.yaml``
  (``paths.output_dir`` is then that run's folder; ``${oc.env:...}`` reads this environment);
* otherwise overrides, as shell words (``"optimizer.lr=1e-3 model=cnn16"``,
  ``experiment=<name>``), composed now; ``""`` is the default config.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from hydra.conf import HydraConf
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lettucify.errors import ConfigError
from lettucify.review.compose import hydra_node, job_config, resolved
from lettucify.tracking.run import CONFIG_ARTIFACT
from lettucify.tracking.secrets import Masker
from lettucify.tracking.store import client, resolve_tracking_uri, sqlite_path
from lettucify.validation import one_line

MLFLOW_PREFIXES = ("runs:/", "mlflow:")
WHAT = "overrides (key=value ...), experiment=<name>, a run folder or runs:/<run_id>"


def read(spec: str, tracking_uri: Optional[str] = None) -> Dict[str, Any]:
    """The resolved config ``spec`` names (see the module's doc); ConfigError, one line, if none."""
    for prefix in MLFLOW_PREFIXES:
        if spec.startswith(prefix):
            return mlflow_run(spec[len(prefix):].strip("/"), tracking_uri)
    if spec and Path(spec).is_dir():
        return run_folder(Path(spec))
    try:
        words = shlex.split(spec)
    except ValueError as err:
        raise ConfigError(f"{spec!r}: {err}") from None
    if words and not any("=" in word for word in words):
        raise ConfigError(f"{spec!r}: no such run folder, and no override; a side is {WHAT}")
    return job_config(words)


def run_folder(folder: Path) -> Dict[str, Any]:
    saved = folder / ".hydra"
    if not (saved / "config.yaml").is_file():
        raise ConfigError(f"{folder}: not a run folder (no .hydra/config.yaml)")
    try:
        cfg = OmegaConf.load(saved / "config.yaml")
        hydra = OmegaConf.load(saved / "hydra.yaml").hydra if (saved / "hydra.yaml").is_file() else {}
        typed = OmegaConf.structured(HydraConf)
        OmegaConf.set_struct(typed, False)  # Hydra's own groups add keys (hydra.env)
        with open_dict(cfg):
            cfg.hydra = OmegaConf.merge(typed, hydra)
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"{saved}: {one_line(err)}") from None
    with hydra_node(cfg):
        return resolved(cfg)


def mlflow_run(run_id: str, tracking_uri: Optional[str] = None) -> Dict[str, Any]:
    if not run_id or "/" in run_id:
        raise ConfigError(f"runs:/{run_id}: name a run as runs:/<run_id> or mlflow:<run_id>")
    uri = resolve_tracking_uri(tracking_uri)
    shown = Masker().text(uri)  # a server's URI may hold a password
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MLflow would make an empty store there
        raise ConfigError(f"no MLflow store at {db} (--tracking-uri or $MLFLOW_TRACKING_URI names another)")
    # Imported here: reading a run is the only part of config review that needs mlflow.
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client(uri).download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            config = yaml.safe_load(Path(path).read_text())
    except (MlflowException, OSError, yaml.YAMLError) as err:
        raise ConfigError(f"MLflow run {run_id} ({shown}): {one_line(err)}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"MLflow run {run_id} ({shown}): its {CONFIG_ARTIFACT} is no config")
    return config
