"""Find the classes and images of an ImageFolder tree and the files among them that are bad.

The scan runs once, before training, so that a bad photo is reported up front (or
fails the run at once) instead of stopping an epoch halfway.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from lettucify.data.images import BadImageError, load_rgb
from lettucify.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

Sample = Tuple[Path, int]


@dataclass(frozen=True)
class Split:
    """One split folder (``<root>/<name>``): its classes and its (path, label) samples."""

    name: str
    directory: Path
    classes: List[str]
    samples: List[Sample]


@dataclass(frozen=True)
class BadImage:
    path: Path
    split: str
    reason: str


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_split(root: Path, name: str) -> Split:
    """Classes (sorted folder names) and image files of ``<root>/<name>``, not yet decoded."""
    directory = root / name
    if not directory.is_dir():
        raise DataError(f"{root} has no {name}/ folder: expected {root}/{name}/<class>/<image>")
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise DataError(f"{directory} has no class folders: expected {directory}/<class>/<image>")
    samples: List[Sample] = []
    for label, cls in enumerate(classes):
        files = sorted(
            p
            for p in (directory / cls).iterdir()
            if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"{directory / cls} is an empty class folder: it holds no image file")
        samples.extend((path, label) for path in files)
    return Split(name, directory, classes, samples)


def check_same_classes(train: Split, test: Split) -> None:
    if train.classes == test.classes:
        return
    only_train = sorted(set(train.classes) - set(test.classes))
    only_test = sorted(set(test.classes) - set(train.classes))
    raise DataError(
        f"{train.directory} and {test.directory} have different classes: "
        f"only in {train.name}: {', '.join(only_train) or '-'}; "
        f"only in {test.name}: {', '.join(only_test) or '-'}"
    )


def _problem(path: Path, max_pixels: int) -> Optional[str]:
    try:
        load_rgb(path, max_pixels)
    except BadImageError as err:
        return err.reason
    return None


def find_bad_images(splits: Sequence[Split], max_pixels: int) -> List[BadImage]:
    """Decode every image of ``splits`` fully (a truncated JPEG only shows when decoded)."""
    found = [(split.name, path) for split in splits for path, _ in split.samples]
    # Threads suffice: PIL releases the GIL while it decodes.
    with ThreadPoolExecutor() as pool:
        reasons = list(pool.map(lambda item: _problem(item[1], max_pixels), found))
    return [
        BadImage(path, split, reason) for (split, path), reason in zip(found, reasons) if reason
    ]


def without(split: Split, bad: Sequence[BadImage]) -> Split:
    """``split`` less its bad files; a class left with no image is an error."""
    skipped = {b.path for b in bad if b.split == split.name}
    samples = [(path, label) for path, label in split.samples if path not in skipped]
    for label, cls in enumerate(split.classes):
        if not any(sample_label == label for _, sample_label in samples):
            raise DataError(
                f"{split.directory / cls} has no usable image: every one of its files is bad"
            )
    return Split(split.name, split.directory, split.classes, samples)


def write_report(path: Path, bad: Sequence[BadImage]) -> None:
    """CSV ``path,split,reason``, one row per bad file; written (header only) when none is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "split", "reason"])
        writer.writerows([str(b.path), b.split, b.reason] for b in bad)
