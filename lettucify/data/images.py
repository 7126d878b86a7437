"""The one image decoder of training, evaluation and serving: a file or bytes in, an RGB image out.

Every image lettucify reads goes through ``load_rgb`` (a photo on disk, or the bytes a
client sent the server), so that a photo is decoded the same way wherever it is used,
and an image it cannot use fails with one line that names it and says why.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lettucify.config import DEFAULT_MAX_IMAGE_PIXELS as DEFAULT_MAX_PIXELS
from lettucify.errors import DataError

# ``open_checked`` compares the header's size with the configured limit before any
# pixel is decoded; PIL's own limit would warn or refuse at another threshold.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255, 255)

PathLike = Union[str, Path]
# A file, or an image's encoded bytes.
Source = Union[PathLike, bytes]


class BadImageError(DataError):
    """An image that cannot be used; ``reason`` says why in a few words, ``path`` names it."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class EmptyImageError(BadImageError):
    """No bytes at all."""


class NotAnImageError(BadImageError):
    """Not an image, or not in one of the formats allowed."""


class TooManyPixelsError(BadImageError):
    """Over the pixel limit by its header alone: refused before decoding (a decompression bomb?)."""


class CorruptImageError(BadImageError):
    """A recognised format whose header or data is broken or cut short."""


def open_checked(
    source: Source,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
) -> Image.Image:
    """Open ``source`` lazily (header only) and refuse empty files, non-images and bombs.

    ``formats`` (PIL's names, e.g. ``("JPEG", "PNG")``) limits the decoders tried: any
    other format is refused without its parser running. ``name`` labels bytes in errors.
    """
    label = _label(source, name)
    try:
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats) if size else None
    except UnidentifiedImageError:
        claimed = _claimed_format(source, formats) if formats else None
        if claimed:  # its signature says PNG (say), and the PNG parser refused it
            raise CorruptImageError(label, f"corrupt {claimed} header") from None
        reason = f"not a {' or '.join(formats)} image" if formats else "not an image file"
        raise NotAnImageError(label, reason) from None
    except OSError as err:
        if err.errno is None:  # PIL's own: the data ends or breaks off inside the header
            raise CorruptImageError(label, f"truncated or corrupt ({err})") from None
        raise BadImageError(label, f"unreadable ({err.strerror or err})") from None
    except Exception as err:  # a plugin that recognised the format choked on its header
        raise CorruptImageError(label, f"corrupt header ({err})") from None
    if image is None:
        raise EmptyImageError(label, "empty file (0 bytes)")
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise TooManyPixelsError(
            label,
            f"{width}x{height} = {width * height} pixels, over max_image_pixels={max_pixels} "
            "(decompression bomb?)",
        )
    return image


def image_size(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> "tuple[int, int]":
    """``(width, height)`` by the header alone (before any EXIF rotation)."""
    with open_checked(path, max_pixels) as image:
        return image.size


def load_rgb(
    source: Source,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shorter_side: Optional[int] = None,
    formats: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
) -> Image.Image:
    """Decode ``source`` (a path, or encoded bytes) fully into an upright RGB image.

    With ``shorter_side``, the result is downscaled so that its shorter side is at most
    that: JPEGs are decoded at a reduced scale (``draft``), then resized with Lanczos.
    ``formats`` and ``name`` are ``open_checked``'s.
    """
    label = _label(source, name)
    with open_checked(source, max_pixels, formats, label) as image:
        try:
            if shorter_side:
                # A no-op except for JPEG, which then decodes 2, 4 or 8 times smaller
                # while staying at least shorter_side on both sides.
                image.draft(image.mode, (shorter_side, shorter_side))
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        except Exception as err:  # PIL raises many types on malformed data
            raise CorruptImageError(label, f"truncated or corrupt ({err})") from None
    if shorter_side and min(rgb.size) > shorter_side:
        scale = shorter_side / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


def _claimed_format(source: Source, formats: Sequence[str]) -> Optional[str]:
    """The one of ``formats`` whose signature ``source`` starts with, if any."""
    if isinstance(source, bytes):
        head = source[:16]
    else:
        with open(source, "rb") as handle:
            head = handle.read(16)
    Image.init()
    for fmt in formats:
        accept = Image.OPEN.get(fmt, (None, None))[1]
        with contextlib.suppress(Exception):  # some signature checks fail on short input
            if accept and accept(head):
                return fmt
    return None


def _label(source: Source, name: Optional[str]) -> str:
    return name or ("<bytes>" if isinstance(source, bytes) else str(source))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's convert clips 16-bit samples at 255 instead of scaling them.
        samples = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        image = Image.fromarray(samples.astype(np.uint8))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels become white, as a viewer shows them, not black.
        background = Image.new("RGBA", image.size, _WHITE)
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image.convert("RGB")
