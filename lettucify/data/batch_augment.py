"""Training augmentation of whole batches: cut in the loader, resized on the training device.

With the data cache, ``BatchAugment`` works in two halves:

- ``gather`` runs in the loader (``CachedTrainPhotos.__getitems__``). For a batch of
  cached uint8 photos, it draws each photo's RandomResizedCrop box (torchvision's
  algorithm), flip and colour-jitter factors from the photo's seed, all at once, and
  copies each photo's crop into one uint8 ``CachedBatch``: only the crops' bytes, and a
  quarter of float32's, for the copy to the device.
- ``__call__`` runs on the training device in the loop. It resizes every crop with one
  bilinear ``grid_sample``, with the flips folded into the sampling grid, then jitters and
  normalises the batch as a whole.

That is one pass over the batch instead of a dozen small operations on each photo: on a
2-core CPU a 64 px photo costs about 30 µs (9 of them in the loader) instead of 160,
measured alone, and about twice that inside training, where the model's work has taken
the caches (benchmarks/train_throughput.py); the device's half on a GPU next to nothing. The
resampling is not antialiased. The cache keeps a shorter side of
``data.cache_side_ratio`` x input_size (1.5 by default), so a crop is at most about
twice the input size and the aliasing stays slight.
``augment.batched=false`` augments photo by photo in the loader instead, as without the
cache (``lettucify.data.transforms.TrainAugment``).

A photo's augmentation is a function of its seed alone (``ResumableSampler``'s, from the
run's seed, the epoch and the photo). A resumed run, another number of workers, or the
same global batch split over more processes all augment each photo alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# RandomResizedCrop's defaults: the crop's aspect ratio range, and tries before its fallback.
RATIO = (3 / 4, 4 / 3)
TRIES = 10
# A photo's uniform random numbers: an area and a ratio per try, the crop's top and left,
# the flip, and three jitter factors.
AREA, LOG_RATIO, TOP, LEFT, FLIP, JITTER = 0, TRIES, 2 * TRIES, 2 * TRIES + 1, 2 * TRIES + 2, 2 * TRIES + 3
NUMBERS = 2 * TRIES + 6
# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)
# SplitMix64 (Steele, Lea and Flood 2014): its increment and output mixing constants.
GAMMA, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def random_numbers(seeds: Sequence[int]) -> np.ndarray:
    """``[len(seeds), NUMBERS]`` uniform float64 numbers in [0, 1), row k from ``seeds[k]`` alone.

    Row k is the first ``NUMBERS`` outputs of a SplitMix64 generator seeded with
    ``seeds[k]``. They are computed for the whole batch at once, where a generator per
    photo would cost more than the photo's augmentation.
    """
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64, as SplitMix64's
        state = np.asarray(seeds, dtype=np.uint64)[:, None] + GAMMA * np.arange(1, NUMBERS + 1, dtype=np.uint64)
        state = (state ^ (state >> np.uint64(30))) * MIX1
        state = (state ^ (state >> np.uint64(27))) * MIX2
        state ^= state >> np.uint64(31)
    return (state >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass
class CachedBatch:
    """A batch of cached photos, cut to their crops in the loader, not yet resized."""

    images: torch.Tensor  # uint8 [B, 3, H, W] (channels_last): each crop at the top left, zero-padded
    sizes: torch.Tensor  # int64 [B, 2]: each crop's (height, width)
    flips: torch.Tensor  # bool [B]
    jitter: torch.Tensor  # float32 [B, 3]: brightness, contrast, saturation factors (1: unchanged)

    def to(self, device, non_blocking: bool = False) -> "CachedBatch":
        return replace(self, images=self.images.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "CachedBatch":  # what DataLoader(pin_memory=True) calls
        return replace(self, images=self.images.pin_memory())


def crop_boxes(sizes: np.ndarray, scale: Sequence[float], numbers: np.ndarray) -> np.ndarray:
    """RandomResizedCrop's boxes (top, left, height, width) for photos of ``sizes``, all at once.

    As torchvision draws one: up to ``TRIES`` times an area (``scale`` of the photo's) and
    a log-uniform aspect ratio, the first that fits, at a uniform position; when none
    fits, the whole photo cut to the ratio range, centred. ``numbers``: the photos'
    ``random_numbers``. In numpy: on a batch's few numbers, a few times quicker than torch.
    """
    heights, widths = sizes[:, 0:1].astype(np.float64), sizes[:, 1:2].astype(np.float64)
    areas = heights * widths * (scale[0] + (scale[1] - scale[0]) * numbers[:, AREA : AREA + TRIES])
    low, high = math.log(RATIO[0]), math.log(RATIO[1])
    ratios = np.exp(low + (high - low) * numbers[:, LOG_RATIO : LOG_RATIO + TRIES])
    crop_w, crop_h = np.round(np.sqrt(areas * ratios)), np.round(np.sqrt(areas / ratios))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= widths) & (crop_h <= heights)
    first = fits.argmax(1)[:, None]
    crop_w, crop_h = np.take_along_axis(crop_w, first, 1)[:, 0], np.take_along_axis(crop_h, first, 1)[:, 0]
    heights, widths = heights[:, 0], widths[:, 0]
    top = np.floor(numbers[:, TOP] * (heights - crop_h + 1))
    left = np.floor(numbers[:, LEFT] * (widths - crop_w + 1))

    aspect = widths / heights
    whole_w = np.where(aspect > RATIO[1], np.round(heights * RATIO[1]), widths)
    whole_h = np.where(aspect < RATIO[0], np.round(widths / RATIO[0]), heights)
    none_fit = ~fits.any(1)
    crop_w, crop_h = np.where(none_fit, whole_w, crop_w), np.where(none_fit, whole_h, crop_h)
    top = np.where(none_fit, np.floor((heights - crop_h) / 2), top)
    left = np.where(none_fit, np.floor((widths - crop_w) / 2), left)
    return np.stack([top, left, crop_h, crop_w], 1).astype(np.int64)


def resized_crops(images: torch.Tensor, sizes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's top-left ``sizes`` region resized to ``size`` x ``size`` (float, 0-255),
    mirrored where ``flips``.

    The sampling grid puts each output pixel's centre where ``F.interpolate(mode="bilinear",
    align_corners=False)`` of the region would, clamped to the region's last row and
    column as it clamps (so the padding around a crop is never read); a flip reverses
    the grid's columns.
    """
    batch, _, height, width = images.shape
    device = images.device
    sizes = sizes.to(device, torch.float32)
    crop_h, crop_w = sizes[:, 0:1], sizes[:, 1:2]
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    xs = torch.minimum(torch.clamp(centres * crop_w / size - 0.5, min=0), crop_w - 1)
    ys = torch.minimum(torch.clamp(centres * crop_h / size - 0.5, min=0), crop_h - 1)
    xs = torch.where(flips.to(device)[:, None], xs.flip(1), xs)
    # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer edges of the canvas.
    # Written in place: stacking the broadcast rows and columns costs more than the copy.
    grid = torch.empty(batch, size, size, 2, device=device)
    grid[..., 0] = ((2 * xs + 1) / width - 1)[:, None, :]
    grid[..., 1] = ((2 * ys + 1) / height - 1)[:, :, None]
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation (in that order) of images in [0, 1], each by its own factors.

    As torchvision's ``adjust_brightness``, ``adjust_contrast`` and ``adjust_saturation`` on
    float images. (v2.ColorJitter also shuffles the order per photo; here it is fixed.)
    ``images`` is changed in place.
    """
    factors = factors.to(images.device, images.dtype)[:, :, None, None, None]
    luma = torch.tensor(LUMA, device=images.device, dtype=images.dtype)[:, None, None]

    def grey(x: torch.Tensor) -> torch.Tensor:
        return (x * luma).sum(1, keepdim=True)

    images.mul_(factors[:, 0]).clamp_(0, 1)
    # The grey image's mean, from the channels' means: no grey image made.
    mean = (images.mean(dim=(2, 3), keepdim=True) * luma).sum(1, keepdim=True)
    images.mul_(factors[:, 1]).add_(mean * (1 - factors[:, 1])).clamp_(0, 1)
    toward_grey = grey(images) * (1 - factors[:, 2])  # before the next line changes images
    return images.mul_(factors[:, 2]).add_(toward_grey).clamp_(0, 1)


class BatchAugment:
    """Random crops, flips and colour jitter of cached photos, a batch at a time.

    ``augment`` is an AugmentConf: the crop's scale range, whether to flip, the jitter.
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float], augment) -> None:
        self.size = input_size
        self.scale: List[float] = list(augment.random_resized_crop_scale)
        self.flip = augment.horizontal_flip
        self.jitter = augment.color_jitter
        self.mean, self.std = list(mean), list(std)
        # (scale, shift) of the normalisation of 0-255 values (0-1 after the jitter), by device.
        self._normalise: Dict[Tuple[torch.device, bool], Tuple[torch.Tensor, torch.Tensor]] = {}

    def gather(self, photos: Sequence[np.ndarray], seeds: Sequence[int]) -> CachedBatch:
        """The loader's half: each uint8 ``[H, W, 3]`` photo (as the cache stores it, so a
        crop's rows are copied whole) cut to the crop its seed draws."""
        numbers = random_numbers(seeds)
        boxes = crop_boxes(np.array([photo.shape[:2] for photo in photos]), self.scale, numbers)
        height, width = boxes[:, 2:].max(0).tolist()
        # numpy's slicing, a few times cheaper per photo than torch's.
        images = np.zeros((len(photos), height, width, 3), dtype=np.uint8)
        for canvas, photo, (top, left, crop_h, crop_w) in zip(images, photos, boxes.tolist()):
            canvas[:crop_h, :crop_w] = photo[top : top + crop_h, left : left + crop_w]
        flips = numbers[:, FLIP] < 0.5 if self.flip else np.zeros(len(photos), dtype=bool)
        low = max(0.0, 1 - self.jitter)
        jitter = (low + (1 + self.jitter - low) * numbers[:, JITTER : JITTER + 3]).astype(np.float32)
        return CachedBatch(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(boxes[:, 2:].copy()),
                           torch.from_numpy(flips), torch.from_numpy(jitter))

    def __call__(self, batch: CachedBatch) -> torch.Tensor:
        """The device's half: the normalised float batch, on the batch's device."""
        images = resized_crops(batch.images, batch.sizes, batch.flips, self.size)
        if self.jitter > 0:
            images = color_jitter(images.div_(255), batch.jitter)
        scale, shift = self.normalisation(images.device, unit=self.jitter > 0)
        # In place: a new tensor for each step costs several times the arithmetic on a CPU.
        return images.mul_(scale).add_(shift)

    def normalisation(self, device: torch.device, unit: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` that normalise values of 0-1 (``unit``) or 0-255, on ``device``."""
        key = (device, unit)
        if key not in self._normalise:
            mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
            self._normalise[key] = ((1 if unit else 1 / 255) / std).to(device), (-mean / std).to(device)
        return self._normalise[key]
