"""Preprocessing from an RGB PIL image to a normalized float tensor.

``eval_transform`` is the single definition of inference preprocessing: evaluation uses
it and serving must too, with the input_size, mean and std saved in the checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

# Resize to input_size / 0.875, then center-crop: the usual ImageNet evaluation ratio.
EVAL_CROP_RATIO = 0.875


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def eval_transform(input_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose(
        [
            v2.Resize(round(input_size / EVAL_CROP_RATIO), antialias=True),
            v2.CenterCrop(input_size),
            *_to_normalized_tensor(mean, std),
        ]
    )


def train_transform(
    input_size: int, mean: Sequence[float], std: Sequence[float], augment
) -> v2.Compose:
    """Random crop, optional flip and color jitter (``augment``: an AugmentConf), normalize."""
    steps = [
        v2.RandomResizedCrop(
            input_size, scale=tuple(augment.random_resized_crop_scale), antialias=True
        )
    ]
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter > 0:
        jitter = augment.color_jitter
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return v2.Compose(steps + _to_normalized_tensor(mean, std))
