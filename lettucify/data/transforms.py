"""Preprocessing from an RGB PIL image to a normalized float tensor.

``eval_transform`` is the single definition of inference preprocessing: evaluation uses
it and serving must too, with the input_size, mean and std saved in the checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

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


class TrainAugment:
    """Random crop, optional flip and color jitter (``augment``: an AugmentConf), normalize.

    torchvision v2's transforms, called as its kernels: the same random draws and the same
    pixels as ``v2.Compose`` of them on a tensor, without the input inspection that
    ``Compose`` repeats for every transform of every sample (half the time of a 64 px
    sample from the data cache). A PIL image (the cache off) becomes a uint8 tensor first.
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float], augment) -> None:
        self.crop = v2.RandomResizedCrop(input_size, scale=tuple(augment.random_resized_crop_scale), antialias=True)
        self.flip = augment.horizontal_flip
        jitter = augment.color_jitter
        self.jitter = v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter) if jitter > 0 else None
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = F.pil_to_tensor(image)
        image = F.resized_crop(image, **self.crop.make_params([image]), size=self.crop.size, antialias=True)
        if self.flip and torch.rand(1) < 0.5:  # as v2.RandomHorizontalFlip draws it
            image = F.horizontal_flip(image)
        if self.jitter is not None:
            image = self.jitter(image)
        return F.normalize(F.to_dtype(image, torch.float32, scale=True), self.mean, self.std)
