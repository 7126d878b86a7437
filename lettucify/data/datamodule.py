"""The data config's ``_target_``: from a DataConf to checked train, val and test datasets.

Constructing ``ImageFolderData`` only stores the config; ``setup`` finds (or downloads)
the folder, scans it, splits off validation and builds the datasets.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from lettucify.config import AugmentConf, BadImagePolicy, DownloadConf
from lettucify.data.download import ensure_dataset, is_dataset
from lettucify.data.images import load_rgb
from lettucify.data.scan import (
    Sample,
    check_same_classes,
    find_bad_images,
    list_split,
    without,
    write_report,
)
from lettucify.data.transforms import eval_transform, train_transform
from lettucify.errors import DataError

log = logging.getLogger(__name__)

# Cached training images keep their shorter side at most this times input_size: enough
# for RandomResizedCrop, small enough to hold a few thousand photos in memory.
CACHE_SIDE_RATIO = 1.5


class TrainImages(Dataset):
    """Augmented training samples.

    ``dataset[(index, seed)]`` draws the augmentation from ``seed`` alone, so that a
    resumed run, or another worker process, produces the identical tensor;
    ``dataset[index]`` draws it from torch's global generator.
    """

    def __init__(
        self, samples: Sequence[Sample], transform, max_pixels: int, cache_side: Optional[int]
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.max_pixels = max_pixels
        self.cache_side = cache_side
        self._cache: Dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        label = self.samples[index][1]
        image = self._image(index)
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label

    def _image(self, index: int):
        path = self.samples[index][0]
        if self.cache_side is None:
            return load_rgb(path, self.max_pixels)
        if index not in self._cache:
            self._cache[index] = load_rgb(path, self.max_pixels, shorter_side=self.cache_side)
        return self._cache[index]


class EvalImages(Dataset):
    """Deterministically preprocessed samples; with ``cache``, each tensor is made once."""

    def __init__(self, samples: Sequence[Sample], transform, max_pixels: int, cache: bool) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.max_pixels = max_pixels
        self.cache = cache
        self._cache: Dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        if index in self._cache:
            return self._cache[index], label
        tensor = self.transform(load_rgb(path, self.max_pixels))
        if self.cache:
            self._cache[index] = tensor
        return tensor, label


def stratified_split(
    samples: Sequence[Sample], classes: Sequence[str], val_fraction: float, seed: int
) -> Tuple[List[Sample], List[Sample]]:
    """(train, val): ``val_fraction`` of each class, at least one image when it has two.

    Each class is drawn from its own generator, seeded by ``seed`` and its name, so the
    split depends on nothing else (not the order of listing, not the other classes).
    """
    val = set()
    for label, cls in enumerate(classes):
        paths = sorted(path for path, sample_label in samples if sample_label == label)
        count = 0
        if val_fraction > 0 and len(paths) >= 2:
            count = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
        val.update(random.Random(f"{seed}/{cls}").sample(paths, count))
    return (
        [sample for sample in samples if sample[0] not in val],
        [sample for sample in samples if sample[0] in val],
    )


class ImageFolderData:
    """An ImageFolder dataset (``<root>/{train,test}/<class>/<image>``) built from a DataConf."""

    def __init__(
        self,
        name: str,
        root: Optional[str] = None,
        download: Union[DownloadConf, Mapping, None] = None,
        val_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        on_bad_image: Union[BadImagePolicy, str] = BadImagePolicy.skip,
        max_image_pixels: int = 40_000_000,
        cache_images: bool = True,
        augment: Union[AugmentConf, Mapping, None] = None,
        azure_input: Optional[str] = None,  # read at submission (lettucify.azure), not here
        *,
        data_dir: Optional[str] = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        if not 0 <= val_fraction < 1:
            raise DataError(f"data.val_fraction must be in [0, 1), not {val_fraction}")
        self.name = name
        self.configured_root = root
        # instantiate(..., _convert_="all") passes nested configs as dicts.
        self.download = DownloadConf(**download) if isinstance(download, Mapping) else download
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.on_bad_image = BadImagePolicy(on_bad_image)
        self.max_image_pixels = max_image_pixels
        self.cache_images = cache_images
        self.augment = (
            AugmentConf(**augment) if isinstance(augment, Mapping) else (augment or AugmentConf())
        )
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        # Set by setup().
        self.root: Optional[Path] = None
        self.classes: List[str] = []
        self.train_set: Optional[TrainImages] = None
        self.val_set: Optional[EvalImages] = None
        self.test_set: Optional[EvalImages] = None
        self.bad_images: list = []

    def resolve_root(self) -> Tuple[Path, str]:
        """The dataset folder and where that choice came from, in the user's terms."""
        if self.configured_root:
            return Path(self.configured_root).expanduser(), "data.root"
        if self.data_dir:
            return Path(self.data_dir).expanduser() / self.name, "$LETTUCIFY_DATA_DIR"
        if self.cache_dir:
            return Path(self.cache_dir).expanduser() / "datasets" / self.name, "the cache"
        raise DataError(f"no folder for dataset {self.name}: set data.root=/path/to/{self.name}")

    def setup(
        self,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        report_path: Optional[Path] = None,
    ) -> None:
        """Find, scan and split the data, then build the datasets.

        Bad files are all reported before anything trains: under ``skip`` each is logged
        and left out, under ``fail`` the first one stops the run. ``report_path``, when
        given, receives the CSV of bad files (header only when there are none).
        """
        root, source = self.resolve_root()
        if not is_dataset(root):
            if self.download is not None:
                root = ensure_dataset(root, self.download, looked_in=[f"{root} ({source})"])
            elif not root.is_dir():
                raise DataError(
                    f"dataset folder {root} ({source}) does not exist: "
                    f"point data.root at a folder holding train/ and test/"
                )
        train = list_split(root, "train")
        test = list_split(root, "test")
        check_same_classes(train, test)

        bad = find_bad_images([train, test], self.max_image_pixels)
        if report_path is not None:
            write_report(Path(report_path), bad)
        if bad and self.on_bad_image is BadImagePolicy.fail:
            raise DataError(
                f"bad image {bad[0].path}: {bad[0].reason} "
                f"({len(bad)} bad in all; data.on_bad_image=skip leaves them out)"
            )
        for item in bad:
            log.warning("skipping bad image %s: %s", item.path, item.reason)
        train = without(train, bad)
        test = without(test, bad)

        train_samples, val_samples = stratified_split(
            train.samples, train.classes, self.val_fraction, self.split_seed
        )
        evaluate = eval_transform(input_size, mean, std)
        cache_side = round(CACHE_SIDE_RATIO * input_size) if self.cache_images else None
        self.root = root
        self.classes = list(train.classes)
        self.bad_images = bad
        self.train_set = TrainImages(
            train_samples,
            train_transform(input_size, mean, std, self.augment),
            self.max_image_pixels,
            cache_side,
        )
        self.val_set = (
            EvalImages(val_samples, evaluate, self.max_image_pixels, self.cache_images)
            if val_samples
            else None
        )
        self.test_set = EvalImages(test.samples, evaluate, self.max_image_pixels, self.cache_images)
        log.info(
            "%s: %d classes, %d train / %d val / %d test images in %s",
            self.name,
            len(self.classes),
            len(train_samples),
            len(val_samples),
            len(test.samples),
            root,
        )
