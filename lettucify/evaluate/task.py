"""``task=evaluate``: the end-of-training evaluation, for any checkpoint or registered model.

    python -m lettucify task=evaluate checkpoint=outputs/runs/.../checkpoints/last.pt
    python -m lettucify task=evaluate model_uri=models:/lettucify-food16@candidate

The model brings its own preprocessing and class names; the data config says which
photos to test on. Writes the same files as the end of a training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lettucify.compute import setup_compute
from lettucify.errors import LettucifyError
from lettucify.evaluate.predict import predict_sharded
from lettucify.evaluate.report import write_evaluation
from lettucify.train import checkpoint as ckpt
from lettucify.train.loop import amp_dtype, build_model

log = logging.getLogger(__name__)


def load_checkpoint_model(path: Path) -> Tuple[nn.Module, List[str], Dict[str, Any], List[dict]]:
    payload = ckpt.load(path)
    model_cfg = OmegaConf.create(payload["config"])["model"]
    if "pretrained" in model_cfg.net:
        model_cfg.net.pretrained = False  # the checkpoint's weights replace them anyway
    model = build_model(model_cfg, len(payload["classes"]))
    model.load_state_dict(payload["model"])
    return model, payload["classes"], payload["preprocess"], payload["state"]["history"]


def load_model(cfg: DictConfig) -> Tuple[nn.Module, List[str], Dict[str, Any], Optional[List[dict]]]:
    if bool(cfg.checkpoint) == bool(cfg.model_uri):
        raise LettucifyError(
            "task=evaluate needs exactly one of checkpoint=<file> or model_uri=models:/<name>@<alias>"
        )
    if cfg.checkpoint:
        return load_checkpoint_model(Path(cfg.checkpoint).expanduser())
    from lettucify.tracking import load_registered

    model, classes, preprocess = load_registered(cfg.model_uri, tracking_uri=cfg.logger.tracking_uri)
    return model, classes, preprocess, None


def evaluate(cfg: DictConfig) -> float:
    """Evaluate on the test split; return top-1 accuracy."""
    run_dir = Path(cfg.paths.output_dir)
    device = setup_compute(cfg.compute)
    model, classes, preprocess, history = load_model(cfg)

    data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
    data.setup(preprocess["input_size"], preprocess["mean"], preprocess["std"], report_path=run_dir / "bad_images.csv")
    if list(data.classes) != list(classes):
        raise LettucifyError(f"the model knows classes {classes}, but {data.root} has {data.classes}")

    logits, labels = predict_sharded(
        model.to(device), data.test_set, cfg, device=device,
        channels_last=cfg.compute.channels_last, amp_dtype=amp_dtype(cfg.compute), tta_flip=cfg.trainer.tta_flip,
    )
    metrics = write_evaluation(logits, labels, classes, data.test_set.samples, run_dir, history=history)
    log.info(
        "test top-1 %.4f, top-5 %.4f, macro-F1 %.4f on %d images; report in %s",
        metrics["top1"], metrics["top5"], metrics["macro_f1"], len(labels), run_dir,
    )
    return metrics["top1"]
