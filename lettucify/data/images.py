"""The one image decoder of training, evaluation and serving: a file (or its bytes) in, an RGB image out.

Every image lettucify reads goes through ``load_rgb``, so that a photo is decoded the
same way wherever it is used, and a file it cannot use fails with one line that names it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Union

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
# A file's path, or the file's contents (an upload, a decoded base64 string).
ImageSource = Union[str, Path, bytes]
# What errors call an image given as bytes.
BYTES_NAME = "<bytes>"


class BadImageError(DataError):
    """A file that cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def open_checked(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` lazily (header only) and refuse empty files, non-images and bombs."""
    in_memory = isinstance(source, bytes)
    path = _name(source)
    try:
        if (len(source) if in_memory else path.stat().st_size) == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        image = Image.open(io.BytesIO(source) if in_memory else path)
    except BadImageError:  # the empty file's, as it is (not as a "corrupt header")
        raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file") from None
    except OSError as err:
        raise BadImageError(path, f"unreadable ({err.strerror or err})") from None
    except Exception as err:  # a plugin that recognised the format choked on its header
        raise BadImageError(path, f"corrupt header ({err})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise BadImageError(
            path,
            f"{width}x{height} = {width * height} pixels, over max_image_pixels={max_pixels} "
            "(decompression bomb?)",
        )
    return image


def load_rgb(
    source: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shorter_side: Optional[int] = None,
) -> Image.Image:
    """Decode ``source`` (a file's path or its bytes) fully into an upright RGB image.

    With ``shorter_side``, the result is downscaled so that its shorter side is at most
    that: JPEGs are decoded at a reduced scale (``draft``), then resized with Lanczos.
    """
    with open_checked(source, max_pixels) as image:
        try:
            if shorter_side:
                # A no-op except for JPEG, which then decodes 2, 4 or 8 times smaller
                # while staying at least shorter_side on both sides.
                image.draft(image.mode, (shorter_side, shorter_side))
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        except Exception as err:  # PIL raises many types on malformed data
            raise BadImageError(_name(source), f"truncated or corrupt ({err})") from None
    if shorter_side and min(rgb.size) > shorter_side:
        scale = shorter_side / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


def _name(source: ImageSource) -> Path:
    return Path(BYTES_NAME if isinstance(source, bytes) else source)


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
