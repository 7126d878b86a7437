"""Augmentation of whole batches (lettucify/data/batch_augment.py): torchvision's
RandomResizedCrop draws and bilinear resize, its colour adjustments, each photo's
augmentation a function of its seed alone, whatever batch, worker or process it is in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from helpers import make_image_folder
from lettucify.config import AugmentConf
from lettucify.data.batch_augment import (
    FLIP,
    NUMBERS,
    BatchAugment,
    color_jitter,
    crop_boxes,
    random_numbers,
    resized_crops,
)
from lettucify.data.datamodule import ImageFolderData

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]


def photos(*sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes]


def hwc(images):
    """The photos as the data cache holds them: uint8 height, width, channels."""
    return [image.permute(1, 2, 0).numpy() for image in images]


def splitmix64(seed: int):
    """The reference generator, as its authors wrote it, in Python integers."""
    mask = 2**64 - 1
    while True:
        seed = (seed + 0x9E3779B97F4A7C15) & mask
        z = seed
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        yield z ^ (z >> 31)


def test_each_photos_random_numbers_are_splitmix64_from_its_seed_alone():
    seeds = [0, 1, 2**62 + 12345, 7]
    numbers = random_numbers(seeds)
    assert numbers.shape == (4, NUMBERS) and numbers.dtype == np.float64
    for row, seed in zip(numbers, seeds):
        reference = splitmix64(seed)
        assert row.tolist() == [(next(reference) >> 11) * 2.0**-53 for _ in range(NUMBERS)]
    assert np.array_equal(random_numbers([7])[0], numbers[3])  # whatever batch it is in
    many = random_numbers(range(2000))
    assert 0 <= many.min() and many.max() < 1 and abs(many.mean() - 0.5) < 0.01


@pytest.mark.parametrize("size", [16, 48], ids=["downscaled", "upscaled"])
def test_each_crop_is_torchvisions_bilinear_resize_of_it_flipped_where_drawn(size):
    images = photos((30, 40), (48, 36), (20, 20))
    boxes = torch.tensor([[3, 5, 20, 30], [10, 2, 38, 34], [0, 0, 20, 20]])  # the last two reach the photo's edge
    flips = torch.tensor([False, True, False])
    canvas = torch.zeros(3, 3, 38, 34, dtype=torch.uint8)
    for k, (top, left, height, width) in enumerate(boxes.tolist()):
        canvas[k, :, :height, :width] = images[k][:, top : top + height, left : left + width]
    out = resized_crops(canvas, boxes[:, 2:], flips, size)
    for k, (top, left, height, width) in enumerate(boxes.tolist()):
        canvas[k, :, height:, :], canvas[k, :, :, width:] = 255, 255  # other padding: never read
    assert torch.allclose(resized_crops(canvas, boxes[:, 2:], flips, size), out, atol=0.01)
    for k, image in enumerate(images):
        top, left, height, width = boxes[k].tolist()
        expected = F.resized_crop(image.float(), top, left, height, width, [size, size], antialias=False)
        expected = F.horizontal_flip(expected) if flips[k] else expected
        assert (out[k] - expected).abs().max() < 0.01, f"photo {k}"  # of 0-255


def test_gather_cuts_each_photo_to_the_box_its_seed_draws():
    images = photos((30, 40), (48, 36), (20, 20), (96, 128))
    seeds = [11, 12, 13, 14]
    augment = BatchAugment(16, MEAN, STD, AugmentConf())
    batch = augment.gather(hwc(images), seeds)
    boxes = torch.from_numpy(crop_boxes(np.array([image.shape[1:] for image in images]), [0.25, 1.0], random_numbers(seeds)))
    assert batch.images.shape == (4, 3, boxes[:, 2].max(), boxes[:, 3].max()) and batch.images.dtype == torch.uint8
    assert torch.equal(batch.sizes, boxes[:, 2:])
    for k, (top, left, height, width) in enumerate(boxes.tolist()):
        assert torch.equal(batch.images[k, :, :height, :width], images[k][:, top : top + height, left : left + width])
    assert torch.equal(batch.flips, torch.from_numpy(random_numbers(seeds)[:, FLIP] < 0.5))


def test_crop_boxes_are_drawn_as_torchvisions_random_resized_crop_draws_them():
    scale, count = (0.25, 1.0), 4000
    ours = torch.from_numpy(crop_boxes(np.array([[96, 128]] * count), scale, random_numbers(range(count))))
    assert (ours >= 0).all() and (ours[:, 0] + ours[:, 2] <= 96).all() and (ours[:, 1] + ours[:, 3] <= 128).all()
    crop = v2.RandomResizedCrop(64, scale=scale)
    torch.manual_seed(1)
    image = torch.zeros(3, 96, 128)
    theirs = [crop.make_params([image]) for _ in range(count)]
    theirs = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in theirs])

    def stats(boxes):
        area = (boxes[:, 2] * boxes[:, 3]).double() / (96 * 128)
        log_ratio = torch.log(boxes[:, 3].double() / boxes[:, 2])
        centre = (boxes[:, 1] + boxes[:, 3] / 2).double() / 128
        return torch.stack([area.mean(), area.std(), log_ratio.mean(), log_ratio.std(), centre.mean(), centre.std()])

    # Means and spreads of 4000 draws: within a few standard errors of torchvision's
    # (a scale range of 0.35-1 instead of 0.25-1 is 0.05 off).
    assert torch.allclose(stats(ours), stats(theirs), atol=0.02), (stats(ours), stats(theirs))
    assert 0.25 - 0.01 <= ((ours[:, 2] * ours[:, 3]) / (96 * 128)).min()


def test_when_no_draw_fits_the_box_is_torchvisions_central_fallback():
    sizes = [(10, 100), (100, 10), (50, 50)]  # too wide, too tall, square
    ours = crop_boxes(np.array(sizes), (1.0, 1.0), random_numbers(range(len(sizes))))
    crop = v2.RandomResizedCrop(8, scale=(1.0, 1.0))
    for (height, width), box in zip(sizes, ours.tolist()):
        params = crop.make_params([torch.zeros(3, height, width)])
        assert box == [params["top"], params["left"], params["height"], params["width"]]


def test_color_jitter_is_torchvisions_brightness_contrast_and_saturation_with_each_photos_factors():
    images = torch.stack([image.float() / 255 for image in photos((16, 16), (16, 16))])
    factors = torch.tensor([[1.3, 0.7, 1.4], [0.6, 1.2, 0.5]])
    out = color_jitter(images.clone(), factors)
    for k in range(2):
        brightness, contrast, saturation = factors[k].tolist()
        expected = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(images[k], brightness), contrast), saturation)
        assert torch.allclose(out[k], expected, atol=1e-5)


def test_a_whole_photo_at_its_own_size_is_the_photo_normalized_as_the_eval_transform_does():
    (image,) = photos((32, 32))
    augment = BatchAugment(32, MEAN, STD, AugmentConf(random_resized_crop_scale=[1.0, 1.0], horizontal_flip=False))
    expected = F.normalize(F.to_dtype(image, torch.float32, scale=True), MEAN, STD)
    assert torch.allclose(augment(augment.gather(hwc([image]), [3]))[0], expected, atol=1e-5)


def test_each_photos_augmentation_is_a_function_of_its_seed_whatever_batch_it_is_in():
    images = photos(*[(40, 50)] * 64)
    augment = BatchAugment(24, MEAN, STD, AugmentConf(color_jitter=0.3))
    first = augment(augment.gather(hwc(images), range(100, 164)))
    assert first.shape == (64, 3, 24, 24) and first.dtype == torch.float32
    assert torch.equal(augment(augment.gather(hwc(images), range(100, 164))), first)
    # Half the batch on its own (another rank's share of a global batch): the same tensors.
    assert torch.allclose(augment(augment.gather(hwc(images[32:]), range(132, 164))), first[32:], atol=1e-5)
    other = augment(augment.gather(hwc(images), range(200, 264)))
    assert all(not torch.equal(a, b) for a, b in zip(other, first))
    batch = augment.gather(hwc(images), range(100, 164))
    assert 16 < batch.flips.sum() < 48  # about half flipped
    assert len(set(map(tuple, batch.sizes.tolist()))) > 40 and ((batch.jitter >= 0.7) & (batch.jitter <= 1.3)).all()


@pytest.mark.filterwarnings("ignore:.*pin_memory")  # no accelerator here: nothing is pinned
def test_the_loaders_batches_are_the_same_with_a_worker_and_pinned_memory_as_without(tmp_path):
    root = make_image_folder(tmp_path / "images", size=(60, 44))
    data = ImageFolderData(name="tiny", root=str(root), cache="on", cache_dir=str(tmp_path / "cache"), batch_size=4)
    data.setup(24, MEAN, STD)
    assert data.batch_augment is not None

    def epoch(workers, pin_memory):
        loader = data.train_loader(num_replicas=1, rank=0, seed=5, pin_memory=pin_memory, workers=workers)
        loader.sampler.set_epoch(1)
        return [(data.batch_augment(batch), labels) for batch, labels in loader]

    alone, helped = epoch(0, False), epoch(1, True)
    assert len(alone) == math.ceil(len(data.train_set) / 4)
    for (a, labels_a), (b, labels_b) in zip(alone, helped):
        assert torch.equal(a, b) and torch.equal(labels_a, labels_b)
