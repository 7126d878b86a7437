"""``task=evaluate``: the end-of-training evaluation, for any checkpoint or registered model.

    python -m lettucify task=evaluate checkpoint=outputs/runs/.../checkpoints/last.pt
    python -m lettucify task=evaluate model_uri=models:/lettucify-food16@candidate

The model brings its own preprocessing and class names; the data config says which
photos to test on. Writes the same files as the end of a training run (report.html too),
and predictions.csv (as task=predict); with tracking on, they and the metrics go to an
MLflow run of their own, tagged ``lettucify.task=evaluate`` and with the model it tested.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

from hydra.utils import instantiate
from omegaconf import DictConfig

from lettucify.compute.device import amp_dtype, setup_compute
from lettucify.errors import LettucifyError
from lettucify.evaluate.metrics import softmax_probs
from lettucify.evaluate.predict import predict_sharded
from lettucify.evaluate.report import scalars, write_evaluation
from lettucify.evaluate.run_report import DatasetFacts, write_run_report
from lettucify.models.build import load_trained, require_one_source
from lettucify.predict.results import FILE as PREDICTIONS_FILE
from lettucify.predict.results import PredictionsCsv, from_probabilities
from lettucify.tracking import open_tracker

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Dict[str, float]:
    """Evaluate on the test split; return the metrics, named as training logs them (test_top1, ...)."""
    require_one_source("evaluate", cfg.checkpoint, cfg.model_uri)
    run_dir = Path(cfg.paths.output_dir)
    device = setup_compute(cfg.compute)
    model, classes, preprocess, history = load_trained(cfg.checkpoint, cfg.model_uri, cfg.logger.tracking_uri)

    data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
    data.setup(preprocess["input_size"], preprocess["mean"], preprocess["std"], report_path=run_dir / "bad_images.csv")
    if list(data.classes) != list(classes):
        raise LettucifyError(f"the model knows classes {classes}, but {data.root} has {data.classes}")

    logits, labels = predict_sharded(
        model.to(device), data.test_set, data.eval_loader, device=device,
        channels_last=cfg.compute.channels_last, amp_dtype=amp_dtype(cfg.compute), tta_flip=cfg.trainer.tta_flip,
    )
    metrics = write_evaluation(logits, labels, classes, data.test_set.samples, run_dir, history=history)
    paths = [path for path, _ in data.test_set.samples]
    with PredictionsCsv(run_dir, cfg.predict.top_k, with_true_label=True) as predictions:
        for result, label in zip(from_probabilities(paths, softmax_probs(logits), classes), labels.tolist()):
            predictions.write(result, classes[label])
    source = f"model_uri={cfg.model_uri}" if cfg.model_uri else f"checkpoint={cfg.checkpoint}"
    with open_tracker(cfg.logger, cfg, run_dir) as tracker:
        tracker.set_tags({"lettucify.task": "evaluate", "lettucify.evaluated": source})
        report = write_run_report(
            run_dir, cfg, metrics, DatasetFacts.of(data, splits=("test",)), kind="evaluation",
            model=source, history=history, mlflow_run_id=tracker.run_id,
        )
        tracker.log_metrics(metrics)
        tracker.log_artifacts([run_dir / name for name in [*metrics["files"], "bad_images.csv", PREDICTIONS_FILE]]
                              + [report])
    log.info(
        "test top-1 %.4f, top-5 %.4f, macro-F1 %.4f on %d images; report in %s",
        metrics["top1"], metrics["top5"], metrics["macro_f1"], len(labels), report,
    )
    return scalars(metrics, prefix="test_")
