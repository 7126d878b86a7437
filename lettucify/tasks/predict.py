"""``task=predict``: label every photo of a folder, a file or a glob; write predictions.csv.

    python -m lettucify task=predict model_uri=models:/lettucify-food16@champion input=~/fridge
    python -m lettucify task=predict input=~/fridge predict.endpoint_url=http://127.0.0.1:8080/predict

The model runs here with the server's decoding, preprocessing and backend
(lettucify/predict/local.py), or the photos go to a running server or deployment
(lettucify/predict/endpoint.py). A file that cannot be labelled is a row with its error.
When the input is a folder of class folders, the evaluation of task=evaluate is written
too (metrics.json and the plots), so a deployment can be scored on labelled photos.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Protocol, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from lettucify.errors import LettucifyError
from lettucify.predict.inputs import list_inputs
from lettucify.predict.results import PredictionsCsv, Result

log = logging.getLogger(__name__)


class Predictor(Protocol):
    # The model's classes, in its order; None when they come by name (an endpoint).
    classes: Optional[List[str]]

    def predict(self, files: Sequence[Path]) -> Iterator[Result]: ...


def _predictor(cfg: DictConfig, run_dir: Path) -> Predictor:
    settings = cfg.predict
    if settings.endpoint_url:
        if cfg.checkpoint or cfg.model_uri:
            raise LettucifyError("task=predict takes predict.endpoint_url or a model (checkpoint=, model_uri=), not both")
        from lettucify.predict.endpoint import EndpointPredictor

        return EndpointPredictor(
            settings.endpoint_url, os.environ.get(settings.api_key_env) or None, settings.api_key_env,
            concurrency=settings.concurrency, retries=settings.retries, timeout_s=settings.timeout_s,
        )
    from lettucify.predict.local import LocalPredictor

    if bool(cfg.checkpoint) == bool(cfg.model_uri):
        raise LettucifyError(
            "task=predict needs exactly one of checkpoint=<file>, model_uri=models:/<name>@<alias> or predict.endpoint_url=<URL>"
        )
    source = {"checkpoint": cfg.checkpoint, "model_uri": cfg.model_uri, "tracking_uri": cfg.logger.tracking_uri}
    return LocalPredictor(source, settings, run_dir)


def _progress(results: Iterable[Result], total: int) -> Iterable[Result]:
    from tqdm import tqdm

    return tqdm(results, total=total, desc="predict", unit="photo", disable=not sys.stderr.isatty(), dynamic_ncols=True)


def _evaluate(results: Sequence[Result], true_labels: Sequence[str], classes: Optional[List[str]], run_dir: Path) -> Optional[Dict[str, float]]:
    """task=evaluate's report for the labelled photos whose class the model knows."""
    from lettucify.evaluate.report import scalars, write_evaluation

    # A server's classes come back by name; a model's are its training folders, sorted.
    classes = classes or sorted({label for r in results if r.scores for label in r.scores})
    unknown = sorted(set(true_labels) - set(classes))
    if unknown:
        log.warning("predict: no evaluation: the folders %s are not classes of the model (%s)",
                    ", ".join(unknown), ", ".join(classes))
        return None
    scored = [(r, classes.index(t)) for r, t in zip(results, true_labels) if r.scores]
    if not scored:
        log.warning("predict: no evaluation: no photo got a prediction")
        return None
    probs = np.array([[r.scores[c] for c in classes] for r, _ in scored], dtype=np.float64)
    # The evaluation takes logits; the log of the probabilities has the same softmax.
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-30, None)))
    labels = torch.tensor([label for _, label in scored])
    metrics = write_evaluation(logits, labels, classes, [(r.path, label) for r, label in scored], run_dir)
    log.info("predict: top-1 %.4f, top-5 %.4f, macro-F1 %.4f on %d labelled photos; report in %s",
             metrics["top1"], metrics["top5"], metrics["macro_f1"], len(scored), run_dir)
    return scalars(metrics)


def run(cfg: DictConfig) -> Optional[Dict[str, float]]:
    """Label ``input``; with class folders, return the metrics on them (top1, macro_f1, ...)."""
    if not cfg.input:
        raise LettucifyError("task=predict needs input=<folder, photo or glob>")
    inputs = list_inputs(cfg.input)
    run_dir = Path(cfg.paths.output_dir)
    predictor = _predictor(cfg, run_dir)
    log.info("predict: %d files from %s", len(inputs.files), cfg.input)
    true_labels = inputs.true_labels or [None] * len(inputs.files)
    results: List[Result] = []
    with PredictionsCsv(run_dir, cfg.predict.top_k, with_true_label=inputs.true_labels is not None) as predictions:
        for result, true_label in zip(_progress(predictor.predict(inputs.files), len(inputs.files)), true_labels):
            predictions.write(result, true_label)
            results.append(result)
    errors = sum(r.error is not None for r in results)
    print(f"Labelled {len(results) - errors} of {len(results)} files ({errors} with an error); "
          f"predictions in {predictions.path}", flush=True)
    if inputs.true_labels is None:
        return None
    return _evaluate(results, inputs.true_labels, predictor.classes, run_dir)
