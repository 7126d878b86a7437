"""A registered version as an MLflow pyfunc: photos in, labels and probabilities out.

A version's ``python_function`` flavor names this module as its loader, the way MLflow's
own flavors attach a pyfunc to their folders: MLflow puts the version's ``code/`` folder
(a copy of the ``lettucify`` package) first on ``sys.path`` and calls ``_load_pyfunc``.
So ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` need only the version and
its requirements, and nothing is unpickled. Photos are decoded by
``lettucify.data.images`` and preprocessed by ``eval_transform``, as evaluation does;
ONNX Runtime runs the version's ONNX file.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from lettucify.data.images import BadImageError, load_rgb
from lettucify.data.transforms import eval_transform
from lettucify.errors import LettucifyError

CODE = "code"
# The column images are read from when a DataFrame (or a dict of columns) has several.
IMAGE_COLUMN = "image"


class ImageClassifier:
    """What ``mlflow.pyfunc.load_model`` wraps.

    ``predict`` takes base64 strings (or raw image bytes) as a list, an array, a Series,
    a DataFrame column or a dict of columns (``image``, or the only one), or a float
    batch ``[N, 3, input_size, input_size]`` already preprocessed; it returns one row per
    image: ``label``, its ``score`` and the ``probabilities`` of every class, in the
    order of ``classes``. MLflow's ``params`` are not used.
    """

    def __init__(self, onnx_file: Path, classes: Sequence[str], preprocess: Mapping[str, Any]) -> None:
        from lettucify.models.export import onnx_logits

        self.logits = onnx_logits(onnx_file)
        self.classes = list(classes)
        self.input_size = int(preprocess["input_size"])
        self.transform = eval_transform(self.input_size, preprocess["mean"], preprocess["std"])

    def predict(self, model_input: Any, params: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException

        try:
            batch = self.batch(model_input)
        except LettucifyError as err:  # MLflow's invalid-input error: its servers answer 400 with the reason
            raise MlflowException.invalid_parameter_value(str(err)) from None
        logits = self.logits(batch)
        # As evaluation computes them (lettucify.evaluate.metrics.softmax_probs, which imports scikit-learn).
        probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
        best = probabilities.argmax(axis=1)
        return pd.DataFrame({
            "label": [self.classes[i] for i in best],
            "score": probabilities[np.arange(len(best)), best].tolist(),
            "probabilities": probabilities.tolist(),
        })

    def batch(self, model_input: Any) -> np.ndarray:
        """The float32 batch ``[N, 3, S, S]`` the ONNX file takes; a LettucifyError saying
        what is wrong with ``model_input`` otherwise."""
        values = _column(model_input)
        if isinstance(values, (str, bytes)):
            values = [values]
        elif isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        if _are_images(values):
            return torch.stack([self._preprocessed(value, number) for number, value in enumerate(values, 1)]).numpy()
        shape = (3, self.input_size, self.input_size)
        try:
            batch = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            batch = None
        if batch is None or batch.ndim != 4 or batch.shape[1:] != shape or not len(batch):
            got = f"shape {list(batch.shape)}" if batch is not None else type(values).__name__
            raise LettucifyError(
                f"expected base64 images or a float batch of shape [N, {', '.join(map(str, shape))}]; got {got}"
            )
        return batch

    def _preprocessed(self, image: Any, number: int) -> torch.Tensor:
        if isinstance(image, str):
            try:  # line breaks (as the base64 tool writes them) are not part of the data
                image = base64.b64decode("".join(image.split()), validate=True)
            except (binascii.Error, ValueError):
                raise LettucifyError(f"image {number}: not valid base64") from None
        try:
            return self.transform(load_rgb(image))
        except BadImageError as err:
            raise LettucifyError(f"image {number}: {err.reason}") from None


def _column(model_input: Any) -> Any:
    """The values of a DataFrame's (or a dict's) image column, or ``model_input`` itself."""
    if isinstance(model_input, (pd.DataFrame, Mapping)):
        names: List[str] = list(model_input)
        if IMAGE_COLUMN in names:
            return _column(model_input[IMAGE_COLUMN])
        if len(names) != 1:
            raise LettucifyError(f"expected one column of images (or one named {IMAGE_COLUMN!r}); got {names}")
        return _column(model_input[names[0]])
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    return model_input


def _are_images(values: Any) -> bool:
    listed = isinstance(values, (list, tuple)) or (isinstance(values, np.ndarray) and values.ndim == 1)
    return listed and len(values) > 0 and all(isinstance(value, (str, bytes)) for value in values)


def add_flavor(mlflow_model: Any, path: Path) -> None:
    """Make the version folder ``path`` (its ``MLmodel`` being ``mlflow_model``) a pyfunc
    model too: Lettucify's code goes into ``code/``; the caller saves the ``MLmodel``."""
    import mlflow.pyfunc

    import lettucify

    package = Path(lettucify.__file__).parent
    shutil.copytree(package, path / CODE / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=__name__,
        code=CODE,
        # The environment files mlflow.pytorch.save_model wrote, shared by both flavors.
        conda_env="conda.yaml",
        python_env="python_env.yaml",
    )


def _load_pyfunc(path: str, model_config: Optional[Dict[str, Any]] = None) -> ImageClassifier:
    """MLflow's loader hook: the classifier of the version folder ``path``."""
    from lettucify.tracking.registry import CLASSES_PATH, ONNX_PATH, PREPROCESS_PATH

    root = Path(path)
    return ImageClassifier(
        root / ONNX_PATH, json.loads((root / CLASSES_PATH).read_text()), json.loads((root / PREPROCESS_PATH).read_text())
    )
