"""Networks built from ``cfg.model.net`` with ``hydra.utils.instantiate(..., num_classes=N)``.

Every network meets ``Classifier`` (``lettucify.models.build``): logits out, and
``get_classifier()`` the final Linear (timm's convention); ``build_model`` checks it.
A new model is a module here, a schema in ``lettucify/config.py`` and a YAML option
under ``conf/model/``. The submodules import torch and timm; this package does not,
until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CNN16": "lettucify.models.cnn16",
    "Classifier": "lettucify.models.build",
    "build_model": "lettucify.models.build",
    "load_checkpoint_model": "lettucify.models.build",
    "preprocessing": "lettucify.models.build",
    "EfficientNetLite": "lettucify.models.efficientnet",
    "create_imagenet_model": "lettucify.models.efficientnet",
    "load_imagenet_weights": "lettucify.models.efficientnet",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from lettucify.models.build import Classifier, build_model, load_checkpoint_model, preprocessing
    from lettucify.models.cnn16 import CNN16
    from lettucify.models.efficientnet import EfficientNetLite, create_imagenet_model, load_imagenet_weights


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
