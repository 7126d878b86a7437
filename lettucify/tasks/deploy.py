"""``task=deploy``: blue/green deployment of a registered version, on the target ``deploy=`` names.

    python -m lettucify task=deploy deploy=local model_uri=models:/lettucify-food16@candidate
    python -m lettucify task=deploy deploy=local deploy.action=status      # or rollback, stop
    python -m lettucify task=deploy deploy=kubernetes model_uri=... deploy.strategy=all_at_once

The flow is lettucify/deploy/flow.py; the targets are classes of lettucify/deploy/ built
from ``deploy.<target>`` through its ``_target_``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from lettucify.config import DeployAction, DeployStrategy
from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)


def _smoke(cfg: DictConfig, model, run_dir: Path):
    """The smoke test's photo, the label it must get and the key, for a colour's endpoint."""
    from lettucify.deploy.smoke import Deployment

    settings = cfg.deploy
    photo = Path(settings.smoke_photo).expanduser() if settings.smoke_photo else _first_test_photo(cfg)
    if not photo.is_file():
        raise LettucifyError(f"deploy.smoke_photo={photo} is not a file: give a photo the model labels known")
    label = settings.smoke_label or _label_here(cfg, model, photo, run_dir)
    key = os.environ.get(settings.api_key_env) or None
    return lambda endpoint: Deployment(endpoint, photo, label, key, model.version)


def _first_test_photo(cfg: DictConfig) -> Path:
    from lettucify.data.scan import list_split

    data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
    root, _ = data.resolve_root()
    return list_split(root, "test").samples[0][0]


def _label_here(cfg: DictConfig, model, photo: Path, run_dir: Path) -> str:
    """What this version answers for the photo here (task=predict's inference): the deployment
    must answer the same, whatever the photo really shows."""
    from lettucify.predict.local import LocalPredictor

    source = {"checkpoint": None, "model_uri": model.uri, "tracking_uri": cfg.logger.tracking_uri}
    result = next(LocalPredictor(source, cfg.predict, run_dir / "smoke").predict([photo]))
    if result.error:
        raise LettucifyError(f"deploy.smoke_photo={photo}: {result.error}")
    log.info("deploy: smoke photo %s; this version labels it %r here", photo, result.label)
    return result.label


def _plan(settings: DictConfig):
    from lettucify.deploy.flow import Plan

    steps = [100] if DeployStrategy(settings.strategy) is DeployStrategy.all_at_once else list(settings.canary_steps)
    if steps[-1] != 100:
        raise LettucifyError(f"deploy.canary_steps={steps}: the last step must be 100 (all traffic on the new colour)")
    return Plan(steps, settings.step_wait_s, settings.max_error_rate, settings.max_p99_ms, settings.mirror_percent,
                settings.ready_timeout_s)


def run(cfg: DictConfig) -> None:
    from lettucify.deploy import flow
    from lettucify.deploy.record import RegistryRecord

    settings = cfg.deploy
    action = DeployAction(settings.action)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = instantiate(settings[settings.target.value], run_dir=run_dir, tracking_uri=cfg.logger.tracking_uri)
    model = None
    if action is DeployAction.deploy:
        model = _model(cfg)
    # A dry run (Azure's) writes its files and changes nothing: the registry must not say otherwise.
    record = (lambda states: None) if getattr(target, "dry_run", False) else RegistryRecord(
        target.name, cfg.logger.tracking_uri, settings.live_alias, [model.name] if model else [])
    if action is DeployAction.deploy:
        flow.deploy(target, model, _plan(settings), _smoke(cfg, model, run_dir), record)
    elif action is DeployAction.rollback:
        flow.rollback(target, record)
    elif action is DeployAction.stop:
        target.stop()
        record(target.state())
    for line in flow.status_lines(target):
        print(line, flush=True)
    return None


def _model(cfg: DictConfig):
    from lettucify.deploy.target import ModelRef
    from lettucify.tracking.registry import resolve_version

    if not cfg.model_uri or cfg.checkpoint:
        raise LettucifyError("task=deploy deploys a registered version: model_uri=models:/<name>@<alias> or models:/<name>/<version>")
    name, version, _ = resolve_version(cfg.model_uri, cfg.logger.tracking_uri)
    if version is None:
        raise LettucifyError(f"model_uri={cfg.model_uri} is not a registered version: use models:/<name>@<alias>")
    return ModelRef(name, version, cfg.logger.tracking_uri)
