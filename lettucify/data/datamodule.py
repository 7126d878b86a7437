"""The data config's ``_target_``: from a DataConf to checked datasets and their loaders.

Constructing ``ImageFolderData`` only stores the config. ``scan`` finds (or downloads)
the folder, checks every file and splits off validation (or, with ``data.cv_folds``, deals
the training photos into folds): one process does it (rank 0) and hands the ``Scan`` to
the others. ``build`` makes the datasets from a scan, or from one of its ``fold_scans``;
the loaders come from ``train_loader`` and ``eval_loader``. ``setup`` is both, in one process.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from lettucify.config import AugmentConf, BadImagePolicy, CacheMode, DataConf, DownloadConf
from lettucify.data.batch_augment import BatchAugment, CachedBatch
from lettucify.data.cache import DecodedImages, cache_root, estimated_bytes, open_cache
from lettucify.data.download import ensure_dataset, is_dataset
from lettucify.data.images import load_rgb
from lettucify.data.sampler import ResumableSampler
from lettucify.data.scan import (
    BadImage,
    Sample,
    check_same_classes,
    find_bad_images,
    list_split,
    without,
    write_report,
)
from lettucify.data.transforms import TrainAugment, eval_transform
from lettucify.errors import DataError, LettucifyError

log = logging.getLogger(__name__)

class TrainImages(Dataset):
    """Augmented training samples.

    ``dataset[(index, seed)]`` draws the augmentation from ``seed`` alone, so that a
    resumed run, or another worker process, produces the identical tensor;
    ``dataset[index]`` draws it from torch's global generator. With ``decoded`` (the data
    cache), each photo comes from its uint8 tensor there instead of its file.
    """

    def __init__(self, samples: Sequence[Sample], transform, max_pixels: int, decoded: Optional[DecodedImages]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.max_pixels = max_pixels
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        image = self.decoded[path] if self.decoded is not None else load_rgb(path, self.max_pixels)
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone: torch.manual_seed would also (re)seed CUDA's, which
            # fork_rng(devices=[]) does not restore, and costs ~0.2 ms a sample in stack
            # captures for the lazily initialised devices.
            torch.default_generator.manual_seed(seed)
            return self.transform(image), label


class CachedTrainPhotos(Dataset):
    """Training photos from the data cache, fetched a batch at a time and cut to their
    random crops there (``BatchAugment.gather``), for the training device to finish.

    ``dataset.__getitems__(keys)`` (what a DataLoader calls) is ``(CachedBatch, labels)``
    for ``(index, seed)`` keys; ``dataset[key]`` is that of one key, and an index alone
    seeds from torch's global generator.
    """

    def __init__(self, samples: Sequence[Sample], decoded: DecodedImages, augment: BatchAugment) -> None:
        self.samples = list(samples)
        self.decoded = decoded
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, keys: Sequence[Union[int, Tuple[int, int]]]) -> Tuple[CachedBatch, torch.Tensor]:
        keys = [key if isinstance(key, tuple) else (key, int(torch.randint(2**62, (1,)))) for key in keys]
        photos = [self.decoded.pixels(self.samples[index][0]) for index, _ in keys]
        labels = torch.tensor([self.samples[index][1] for index, _ in keys], dtype=torch.int64)
        return self.augment.gather(photos, [seed for _, seed in keys]), labels

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Tuple[CachedBatch, torch.Tensor]:
        return self.__getitems__([key])


def already_collated(batch):
    """The collate_fn of a dataset whose ``__getitems__`` returns whole batches."""
    return batch


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


def stratified_folds(samples: Sequence[Sample], classes: Sequence[str], folds: int, seed: int) -> List[List[Sample]]:
    """``samples`` in ``folds`` disjoint parts, each class spread over them as evenly as it can be.

    Each class is shuffled by its own generator (seeded by ``seed`` and its name, as in
    ``stratified_split``) and dealt round the folds, starting where the class before it
    stopped, so that the folds' sizes differ by one photo at most. A class with fewer
    photos than folds has each in a different fold.
    """
    fold_of: Dict[Path, int] = {}
    for label, cls in enumerate(classes):
        paths = sorted(path for path, sample_label in samples if sample_label == label)
        random.Random(f"{seed}/{cls}").shuffle(paths)
        start = len(fold_of)
        fold_of.update((path, (start + i) % folds) for i, path in enumerate(paths))
        if len(paths) < folds:
            log.warning(
                "class %s has %d training photos, fewer than data.cv_folds=%d: each is in a "
                "different fold, and %d folds validate without it", cls, len(paths), folds, folds - len(paths),
            )
    return [[sample for sample in samples if fold_of[sample[0]] == k] for k in range(folds)]


@dataclass
class Scan:
    """What checking the folder found: enough to build the datasets anywhere (it pickles)."""

    root: Path
    classes: List[str]
    train: List[Sample]
    val: List[Sample]
    test: List[Sample]
    bad: List[BadImage]
    # With data.cv_folds: each fold's photos, dealt from ``train`` (``val`` is then empty).
    folds: List[List[Sample]] = field(default_factory=list)

    @property
    def samples(self) -> List[Sample]:
        """Every image of every split, for the dataset fingerprint."""
        return [*self.train, *self.val, *self.test]

    def fold_scans(self) -> List["Scan"]:
        """One scan per fold, validating on that fold and training on the others (none without folds)."""
        scans = []
        for fold in self.folds:
            held_out = {path for path, _ in fold}
            train = [sample for sample in self.train if sample[0] not in held_out]
            scans.append(replace(self, train=train, val=list(fold), folds=[]))
        return scans


class ImageFolderData:
    """An ImageFolder dataset (``<root>/{train,test}/<class>/<image>``) built from a DataConf.

    Its settings are the DataConf's fields, with the schema's defaults; ``data_dir`` and
    ``cache_dir`` (from ``paths``) are where a dataset without ``root`` is looked for.
    """

    def __init__(self, *, data_dir: Optional[str] = None, cache_dir: Optional[str] = None, **settings: Any) -> None:
        conf = DataConf(**settings)
        if not 0 <= conf.val_fraction < 1:
            raise DataError(f"data.val_fraction must be in [0, 1), not {conf.val_fraction}")
        # instantiate(..., _convert_="all") passes nested configs as dicts.
        if isinstance(conf.download, Mapping):
            conf.download = DownloadConf(**conf.download)
        conf.augment = AugmentConf(**conf.augment) if isinstance(conf.augment, Mapping) else conf.augment
        conf.on_bad_image = BadImagePolicy(conf.on_bad_image)
        conf.cache = CacheMode(conf.cache)
        self.conf = conf
        self.name = conf.name
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        # Set by build().
        self.root: Optional[Path] = None
        self.classes: List[str] = []
        self.decoded: Optional[DecodedImages] = None
        self.train_set: Optional[Union[TrainImages, CachedTrainPhotos]] = None
        # With the data cache and augment.batched: what augments each batch on the training device.
        self.batch_augment: Optional[BatchAugment] = None
        self.val_set: Optional[EvalImages] = None
        self.test_set: Optional[EvalImages] = None
        self.bad_images: List[BadImage] = []

    def resolve_root(self) -> Tuple[Path, str]:
        """The dataset folder and where that choice came from, in the user's terms."""
        if self.conf.root:
            return Path(self.conf.root).expanduser(), "data.root"
        if self.data_dir:
            return Path(self.data_dir).expanduser() / self.name, "$LETTUCIFY_DATA_DIR"
        if self.cache_dir:
            return Path(self.cache_dir).expanduser() / "datasets" / self.name, "the cache"
        raise DataError(f"no folder for dataset {self.name}: set data.root=/path/to/{self.name}")

    def scan(self, report_path: Optional[Path] = None) -> Scan:
        """Find (or download), check and split the data.

        Bad files are all reported before anything trains: under ``skip`` each is logged
        and left out, under ``fail`` the first one stops the run. ``report_path``, when
        given, receives the CSV of bad files (header only when there are none).
        """
        root, source = self.resolve_root()
        if not is_dataset(root):
            if self.conf.download is not None:
                root = ensure_dataset(root, self.conf.download, looked_in=[f"{root} ({source})"])
            elif not root.is_dir():
                raise DataError(
                    f"dataset folder {root} ({source}) does not exist: "
                    f"point data.root at a folder holding train/ and test/"
                )
        train = list_split(root, "train")
        test = list_split(root, "test")
        check_same_classes(train, test)

        bad = find_bad_images([train, test], self.conf.max_image_pixels)
        if report_path is not None:
            write_report(Path(report_path), bad)
        if bad and self.conf.on_bad_image is BadImagePolicy.fail:
            raise DataError(
                f"bad image {bad[0].path}: {bad[0].reason} "
                f"({len(bad)} bad in all; data.on_bad_image=skip leaves them out)"
            )
        for item in bad:
            log.warning("skipping bad image %s: %s", item.path, item.reason)
        train = without(train, bad)
        scan = Scan(root, list(train.classes), train.samples, [], without(test, bad).samples, bad)
        if not self.conf.cv_folds:
            scan.train, scan.val = stratified_split(
                train.samples, train.classes, self.conf.val_fraction, self.conf.split_seed
            )
        log.info(
            "%s: %d classes, %d train / %d val / %d test images in %s",
            self.name, len(scan.classes), len(scan.train), len(scan.val), len(scan.test), root,
        )
        if self.conf.cv_folds:
            scan.folds = self.cross_validation_folds(scan)
        return scan

    def cross_validation_folds(self, scan: Scan) -> List[List[Sample]]:
        """``data.cv_folds`` stratified folds of the scan's training photos (data.val_fraction unused)."""
        folds = self.conf.cv_folds
        if len(scan.train) < folds:
            raise DataError(
                f"data.cv_folds={folds} needs at least {folds} training photos; "
                f"{scan.root / 'train'} has {len(scan.train)}"
            )
        parts = stratified_folds(scan.train, scan.classes, folds, self.conf.split_seed)
        log.info(
            "cross-validation: %d stratified folds of the %d training photos (%s; data.val_fraction is not used)",
            folds, len(scan.train), " / ".join(str(len(part)) for part in parts),
        )
        return parts

    def build(self, scan: Scan, input_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        """The datasets of ``scan`` (or of one of its ``fold_scans``), preprocessed for a model
        of ``input_size``, ``mean``, ``std``; a later call replaces them."""
        conf = self.conf
        evaluate = eval_transform(input_size, mean, std)
        self.root, self.classes, self.bad_images = scan.root, list(scan.classes), list(scan.bad)
        self.decoded = self.decoded_images(scan, round(conf.cache_side_ratio * input_size))
        if self.decoded is not None and conf.augment.batched:
            self.batch_augment = BatchAugment(input_size, mean, std, conf.augment)
            self.train_set = CachedTrainPhotos(scan.train, self.decoded, self.batch_augment)
        else:
            self.train_set = TrainImages(
                scan.train, TrainAugment(input_size, mean, std, conf.augment), conf.max_image_pixels, self.decoded,
            )
            self.batch_augment = None
        remember = conf.cache is not CacheMode.off
        self.val_set = EvalImages(scan.val, evaluate, conf.max_image_pixels, remember) if scan.val else None
        self.test_set = EvalImages(scan.test, evaluate, conf.max_image_pixels, remember)

    def decoded_images(self, scan: Scan, side: int) -> Optional[DecodedImages]:
        """The data cache of the training folder's photos at ``side``, or None (data.cache).

        It holds train and val together, the whole training folder: every cross-validation
        fold and the final training then share one cache.
        """
        mode, root = self.conf.cache, cache_root(self.cache_dir)
        if mode is CacheMode.off:
            return None
        if root is None:
            if mode is CacheMode.on:
                raise DataError("data.cache=on needs paths.cache_dir, where the decoded photos are kept")
            return None
        paths = sorted(path for path, _ in [*scan.train, *scan.val])
        if mode is CacheMode.auto:
            size = estimated_bytes(paths, side, self.conf.max_image_pixels)
            if size > self.conf.cache_max_gb * 1e9:
                log.info(
                    "data cache: off, the %d training photos would take %.1f GB, over data.cache_max_gb=%g",
                    len(paths), size / 1e9, self.conf.cache_max_gb,
                )
                return None
        try:
            return open_cache(root, paths, side, self.conf.max_image_pixels)
        except OSError as err:
            if mode is CacheMode.on:
                raise DataError(f"data cache in {root}: {err.strerror or err} (data.cache=off decodes every epoch)") from None
            log.warning("data cache: off, %s is not usable (%s)", root, err.strerror or err)
            return None

    def setup(
        self, input_size: int, mean: Sequence[float], std: Sequence[float], report_path: Optional[Path] = None
    ) -> None:
        """``scan`` then ``build``, in this process."""
        self.build(self.scan(report_path), input_size, mean, std)

    def train_loader(self, *, num_replicas: int, rank: int, seed: int, pin_memory: bool, workers: int) -> DataLoader:
        """This rank's share of each global batch of ``data.batch_size``, resumable mid-epoch
        through its ``ResumableSampler`` (``loader.sampler``), prepared by ``workers`` processes
        (``lettucify.data.loading.core_share``). With ``batch_augment``, its batches are
        ``CachedBatch``es for it to augment on the training device."""
        if self.conf.batch_size % num_replicas:
            raise LettucifyError(
                f"data.batch_size={self.conf.batch_size} is the global batch and must divide "
                f"by the {num_replicas} processes"
            )
        return DataLoader(
            self.train_set,
            batch_size=self.conf.batch_size // num_replicas,
            sampler=ResumableSampler(self.train_set, num_replicas=num_replicas, rank=rank, seed=seed),
            num_workers=workers,
            collate_fn=already_collated if self.batch_augment is not None else None,
            pin_memory=pin_memory,
            # Started once: a worker's start (fork, the dataset's state) costs more than an epoch of food16.
            persistent_workers=workers > 0,
            # Its own generator: starting an epoch must not draw from the global one, whose
            # state a mid-epoch checkpoint saves for dropout and the like.
            generator=torch.Generator().manual_seed(seed),
        )

    def eval_loader(self, dataset: Dataset, *, pin_memory: bool = False) -> DataLoader:
        """``dataset`` (a split, or a rank's shard of one) in order, ``data.eval_batch_size`` at a time."""
        return DataLoader(
            dataset,
            batch_size=self.conf.eval_batch_size,
            shuffle=False,
            num_workers=self.conf.num_workers or 0,
            pin_memory=pin_memory,
            # Its own generator: each pass draws a seed from it, and drawing from the global
            # one would shift the state that a mid-epoch checkpoint saves.
            generator=torch.Generator().manual_seed(0),
        )
