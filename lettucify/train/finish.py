"""What follows the fit: the test evaluation, its files, the tracked metrics and the registry."""

from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
from omegaconf import DictConfig

from lettucify import checkpoint as ckpt
from lettucify import distributed
from lettucify.evaluate.predict import predict_sharded
from lettucify.evaluate.report import scalars, write_evaluation
from lettucify.evaluate.run_report import DatasetFacts, write_run_report
from lettucify.models.build import preprocessing
from lettucify.tracking import Tracker
from lettucify.train.loop import Fit, eval_options

log = logging.getLogger(__name__)

# Test photos register_model gets as its example, and checks the ONNX file's logits on.
PARITY_IMAGES = 8


def finish(cfg: DictConfig, run: Fit, tracker: Tracker) -> Dict[str, float]:
    """Test the selected checkpoint, write and log the evaluation, register the model.

    Returns the run's metrics as MLflow has them, what ``optimized_metric`` names one of:
    the selected epoch's (``val_acc``, ``val_loss``, ``train_loss``, ...), the test
    evaluation's (``test_top1``, ...; rank 0 only) and ``train_time_s``.
    """
    state, run_dir = run.state, run.run_dir
    use_best = cfg.trainer.select == "best" and state.best_val_acc is not None
    if use_best:
        distributed.barrier()  # rank 0 has written best.pt
        run.model.load_state_dict(ckpt.load(run.checkpoint_dir / ckpt.BEST, run.device)["model"])
    test_set = run.data.test_set
    logits, labels = predict_sharded(run.model, test_set, run.data.eval_loader, **eval_options(cfg, run.device))
    selected = selected_epoch(state.history, use_best)
    result = scalars(selected)
    result["train_time_s"] = train_time(state.history)
    if distributed.is_main():
        metrics = write_evaluation(logits, labels, run.data.classes, test_set.samples, run_dir, history=state.history)
        log.info(
            "test top-1 %.4f, top-5 %.4f, macro-F1 %.4f, macro AUC %.4f with %s (%d images); report in %s",
            metrics["top1"], metrics["top5"], metrics["macro_f1"], metrics["macro_auc"] or float("nan"),
            ckpt.BEST if use_best else ckpt.LAST, len(labels), run_dir,
        )
        tracker.log_metrics(metrics)
        registered = register(cfg, run, tracker, metrics["top1"])
        report = write_run_report(
            run_dir, cfg, metrics, DatasetFacts.of(run.data), kind="training", history=state.history,
            model=describe_model(cfg), registered=registered, mlflow_run_id=tracker.run_id,
        )
        tracker.log_artifacts([run_dir / name for name in [*metrics["files"], "bad_images.csv"]] + [report])
        result.update(scalars(metrics, prefix="test_"))
    return result


def train_time(history: list) -> float:
    """Seconds the epochs of ``history`` took, in all."""
    return sum(record.get("epoch_time_s", 0.0) for record in history)


def selected_epoch(history: list, use_best: bool) -> dict:
    """The record of the epoch whose model was tested: the best by val_acc, or the last."""
    if not history:
        return {}
    if use_best:
        return max(history, key=lambda record: record.get("val_acc", float("-inf")))
    return history[-1]


def describe_model(cfg: DictConfig) -> str:
    """The trained network in a few words: its class and input size."""
    return f"{str(cfg.model.net._target_).rpartition('.')[2]}, {cfg.model.input_size}x{cfg.model.input_size} input"


def register(cfg: DictConfig, run: Fit, tracker: Tracker, test_acc: float) -> Optional[Dict[str, Optional[str]]]:
    """A new registry version of the tested model, unless there is nothing new to register:
    the run's version (``name``, ``version``, ``alias``), or None when it has none."""
    if not tracker.enabled:
        log.info("model registry: not registering (logger.enabled=false)")
        return None
    if run.state.steps == 0:
        log.warning("model registry: not registering: the model trained no step")
        return None
    from lettucify.tracking.registry import register_model, registered_versions

    earlier = registered_versions(cfg.registry.name, tracker.run_id, cfg.logger.tracking_uri)
    if earlier:  # a resumed run that had finished already
        log.info("model registry: this run is already %s version %s; not registering it again",
                 cfg.registry.name, ", ".join(earlier))
        return {"name": cfg.registry.name, "version": earlier[-1], "alias": None}
    test_set = run.data.test_set
    step = max(1, len(test_set) // PARITY_IMAGES)  # spread over the classes: the split is sorted by class
    example = torch.stack([test_set[i][0] for i in range(0, len(test_set), step)[:PARITY_IMAGES]])
    version = register_model(run.model, run.data.classes, preprocessing(cfg.model), example, cfg.registry, test_acc,
                             run_id=tracker.run_id)
    if version is None:
        return None
    return {"name": version.name, "version": str(version.version), "alias": cfg.registry.alias}
