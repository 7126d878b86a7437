"""Building a network from its config, the contract it must meet, and loading one from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lettucify import checkpoint as ckpt
from lettucify.errors import LettucifyError


@runtime_checkable
class Classifier(Protocol):
    """What training, evaluation, export and serving rely on in a network.

    An ``nn.Module`` that maps ``[N, 3, H, W]`` float images to ``[N, num_classes]``
    logits, and whose ``get_classifier()`` is the final ``nn.Linear`` (timm's
    convention): the head that gets the full learning rate while the rest trains at
    ``model.backbone_lr_scale`` of it.
    """

    def get_classifier(self) -> nn.Module: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


def check_classifier(model: Any, target: str, num_classes: int) -> nn.Module:
    """``model`` when it meets the :class:`Classifier` contract, else one line saying what it lacks."""
    problem = None
    if not isinstance(model, nn.Module):
        problem = f"builds a {type(model).__name__}, not a torch.nn.Module"
    elif not isinstance(model, Classifier):
        problem = "has no get_classifier() method"
    else:
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            problem = f"get_classifier() returns a {type(head).__name__}, not the final nn.Linear"
        elif head.out_features != num_classes:
            problem = f"get_classifier() has {head.out_features} outputs for {num_classes} classes"
    if problem:
        raise LettucifyError(f"model.net._target_={target} {problem} (see lettucify.models.Classifier)")
    return model


def build_model(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    """The network of ``model.net`` with a ``num_classes`` head, checked against the contract."""
    model = instantiate(model_cfg.net, num_classes=num_classes, _convert_="all")
    return check_classifier(model, model_cfg.net._target_, num_classes)


def preprocessing(model_cfg: DictConfig) -> Dict[str, Any]:
    """The model's preprocessing contract, saved with every checkpoint and registered model."""
    return {"input_size": model_cfg.input_size, "mean": list(model_cfg.mean), "std": list(model_cfg.std)}


def load_checkpoint_model(path: Path) -> Tuple[nn.Module, List[str], Dict[str, Any], List[dict]]:
    """``(model, classes, preprocessing, history)`` of a training checkpoint."""
    payload = ckpt.load(path)
    model_cfg = OmegaConf.create(payload["config"])["model"]
    if "pretrained" in model_cfg.net:
        model_cfg.net.pretrained = False  # the checkpoint's weights replace them anyway
    model = build_model(model_cfg, len(payload["classes"]))
    model.load_state_dict(payload["model"])
    return model, payload["classes"], payload["preprocess"], payload["state"]["history"]


def require_one_source(task: str, checkpoint: Optional[str], model_uri: Optional[str]) -> None:
    """The tasks that run a trained model take it from exactly one place."""
    if bool(checkpoint) == bool(model_uri):
        raise LettucifyError(
            f"task={task} needs exactly one of checkpoint=<file> or model_uri=models:/<name>@<alias>"
        )


def load_trained(
    checkpoint: Optional[str], model_uri: Optional[str], tracking_uri: Optional[str] = None
) -> Tuple[nn.Module, List[str], Dict[str, Any], Optional[List[dict]]]:
    """``(model, classes, preprocessing, history or None)`` from a checkpoint file or a
    registered model (``models:/<name>@<alias>``): what evaluation and serving run."""
    if checkpoint:
        return load_checkpoint_model(Path(checkpoint).expanduser())
    from lettucify.tracking.registry import load_registered

    model, classes, preprocess = load_registered(model_uri, tracking_uri=tracking_uri)
    return model, classes, preprocess, None
