"""Networks built from ``cfg.model.net`` with ``hydra.utils.instantiate(..., num_classes=N)``.

Every network implements ``get_classifier()`` (the final Linear, timm's convention).
The submodules import torch and timm; this package does not, until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CNN16": "lettucify.models.cnn16",
    "EfficientNetLite": "lettucify.models.efficientnet",
    "create_imagenet_model": "lettucify.models.efficientnet",
    "load_imagenet_weights": "lettucify.models.efficientnet",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
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
