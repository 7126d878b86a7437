"""What the server runs: an upload's bytes to a preprocessed image, a batch to probabilities.

Decoding is ``lettucify.data.images.load_rgb`` and preprocessing is
``lettucify.data.transforms.eval_transform`` with the model's stored input size, mean and
std: the same functions, with the same arguments, as ``task=evaluate``. The model runs
on one of two backends (``serve.backend``), each with ``prepare`` (once, in the process
that starts the server) and ``load`` (in each server process).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from lettucify.config import ServeBackend
from lettucify.data.images import Source, load_rgb
from lettucify.data.transforms import eval_transform
from lettucify.evaluate.metrics import softmax_probs
from lettucify.models.tta import FlipAveraged

log = logging.getLogger(__name__)

# The decoders an upload may use: other formats are refused without their parser running.
SERVED_FORMATS = ("JPEG", "PNG", "WEBP")
ONNX_FILE = "model.onnx"


class Preprocessor:
    """Encoded image bytes (or a file) -> the ``[3, H, W]`` float32 array evaluation would feed the model."""

    def __init__(self, preprocess: Mapping[str, Any], max_pixels: int) -> None:
        self.transform = eval_transform(preprocess["input_size"], preprocess["mean"], preprocess["std"])
        self.max_pixels = max_pixels
        self.shape = (3, preprocess["input_size"], preprocess["input_size"])

    def __call__(self, data: Source, name: Optional[str] = None) -> np.ndarray:
        image = load_rgb(data, self.max_pixels, formats=SERVED_FORMATS, name=name)
        return self.transform(image).numpy()


Logits = Callable[[np.ndarray], np.ndarray]


def load_net(source: Mapping[str, Optional[str]], tta_flip: bool) -> Tuple[nn.Module, List[str], Dict[str, Any]]:
    """``(network, classes, preprocessing)`` of ``source`` (``load_trained``'s checkpoint,
    model_uri and tracking_uri), the network averaging the mirror image's logits if ``tta_flip``."""
    from lettucify.models.build import load_trained

    model, classes, preprocess, _ = load_trained(**source)
    return (FlipAveraged(model) if tta_flip else model).eval(), list(classes), dict(preprocess)


class OnnxRuntimeBackend:
    """The network exported with ``lettucify.models.export.to_onnx``, run by ONNX Runtime."""

    @staticmethod
    def prepare(net: nn.Module, preprocess: Mapping[str, Any], folder: Path) -> Dict[str, Any]:
        from lettucify.models.export import to_onnx

        size = preprocess["input_size"]
        # No real photo is at hand here; registration checks on test images.
        check = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        path = to_onnx(net, torch.zeros(1, 3, size, size), folder / ONNX_FILE, check=check)
        log.info("exported the model for ONNX Runtime to %s", path)
        return {"onnx": str(path)}

    @staticmethod
    def load(spec: Mapping[str, Any], threads: Optional[int], net: Optional[nn.Module] = None) -> Logits:
        from lettucify.models.export import onnx_logits

        return onnx_logits(spec["onnx"], threads)


class TorchBackend:
    """The loaded PyTorch module itself (a registered version's ``torch.export`` program)."""

    @staticmethod
    def prepare(net: nn.Module, preprocess: Mapping[str, Any], folder: Path) -> Dict[str, Any]:
        return {}

    @staticmethod
    def load(spec: Mapping[str, Any], threads: Optional[int], net: Optional[nn.Module] = None) -> Logits:
        if threads:
            torch.set_num_threads(threads)
        if net is None:  # a server process of its own (serve.workers > 1) loads it again
            net = load_net(spec["source"], spec["tta_flip"])[0]

        def logits(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(images)).float().numpy()

        return logits


BACKENDS = {ServeBackend.onnxruntime: OnnxRuntimeBackend, ServeBackend.torch: TorchBackend}


def probabilities(logits: Logits) -> Callable[[np.ndarray], np.ndarray]:
    """A batch of images -> their class probabilities, as evaluation computes them."""
    return lambda images: softmax_probs(logits(images)).astype(np.float32)


@dataclass
class Labeller:
    """Class probabilities -> the answer's predictions: label, score and the top k."""

    classes: Sequence[str]
    top_k: int

    def __call__(self, probs: np.ndarray, top_k: Optional[int] = None) -> List[Dict[str, Any]]:
        """``top_k`` overrides the default; 0 means every class."""
        k = len(self.classes) if top_k == 0 else min(top_k or self.top_k, len(self.classes))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        answers = []
        for row, best in zip(probs, order):
            top = [{"label": self.classes[i], "score": float(row[i])} for i in best]
            answers.append({**top[0], "top_k": top})
        return answers
