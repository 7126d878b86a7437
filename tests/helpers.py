"""Synthetic data for tests: small ImageFolder trees that a model can learn quickly."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

# The reference photos, where $LETTUCIFY_DATA_DIR has them (the tests that need real photos skip without).
FOOD16 = Path(os.environ.get("LETTUCIFY_DATA_DIR", "/nonexistent")) / "food16"


def training_sample(data, key):
    """``(tensor, label)`` of the training set's ``key`` (an index, or (index, seed)), as
    training sees it: augmented in the loader, or, with the data cache, as a batch of one."""
    sample = data.train_set[key]
    if data.batch_augment is None:
        return sample
    batch, labels = sample
    return data.batch_augment(batch)[0], int(labels[0])


def class_image(
    label: int, num_classes: int, size: Tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """An RGB image of class ``label``: its own hue and stripe direction, plus noise."""
    width, height = size
    red, green, blue = colorsys.hsv_to_rgb(label / num_classes, 0.8, 0.9)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = (255 * red, 255 * green, 255 * blue)
    # Stripes along x for even labels, along y for odd ones, at a random phase.
    axis = np.arange(width if label % 2 == 0 else height)
    stripes = 40 * (((axis + rng.integers(0, 8)) // 4) % 2)
    pixels -= stripes[None, :, None] if label % 2 == 0 else stripes[:, None, None]
    pixels *= rng.uniform(0.8, 1.1)  # lighting varies from photo to photo
    pixels += rng.normal(0, 20, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_image_folder(
    root: Union[str, Path],
    classes: Sequence[str] = ("a", "b", "c"),
    per_class_train: int = 8,
    per_class_test: int = 4,
    size: Tuple[int, int] = (64, 48),
    seed: int = 0,
    suffix: str = ".jpg",
) -> Path:
    """Write ``root/{train,test}/<class>/<n><suffix>`` and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                class_image(label, len(classes), size, rng).save(folder / f"{n}{suffix}")
    return root
