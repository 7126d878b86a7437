"""The decoded-image cache: each training photo decoded once, for every later epoch, run,
sweep job and torchrun rank.

Each image is decoded (``load_rgb``, the decoder of training, evaluation and serving) and
downscaled so that its shorter side is at most ``side``, then stored as uint8 HWC bytes in
shard files of up to ``SHARD_BYTES``; ``index.json`` says where each image is. Readers map
the shards (``np.memmap``): the pages are the operating system's, shared by every process
reading them, and nothing is decoded again.

    <root>/<key>/index.json, shard-000.bin, ...

The key hashes each image's path, size and modification time with the resize settings, so
a changed, added or removed image, or another size, never reuses stale data. A writer holds
``<key>.lock`` (``flock``: released by the kernel if it dies), writes into
``<key>.tmp-<pid>/`` and renames it to ``<key>/`` only when complete: a folder named by its
key is always whole, and a killed writer's leftovers are never read (the next writer
removes them). Other processes wanting the same key wait on the lock, then read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lettucify.data.images import BadImageError, image_size, load_rgb
from lettucify.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX = "index.json"
SHARD_BYTES = 512 << 20


def cache_key(paths: Sequence[Path], side: int, max_pixels: int) -> str:
    digest = hashlib.sha256(f"lettucify decoded v{FORMAT_VERSION} side={side} max_pixels={max_pixels}\n".encode())
    for path in sorted(str(Path(p).resolve()) for p in paths):
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def decoded_size(width: int, height: int, side: int) -> Tuple[int, int]:
    """``(width, height)`` of an image once its shorter side is at most ``side`` (as ``load_rgb`` makes it)."""
    if min(width, height) <= side:
        return width, height
    scale = side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def estimated_bytes(paths: Sequence[Path], side: int, max_pixels: int) -> int:
    """What the cache of ``paths`` will take on disk, from the images' headers alone."""
    total = 0
    for path in paths:
        width, height = decoded_size(*image_size(path, max_pixels), side)
        total += width * height * 3
    return total


class DecodedImages:
    """A complete cache folder: ``images[path]`` is that photo's uint8 ``[3, H, W]`` tensor,
    ``images.pixels(path)`` the same bytes as a ``[H, W, 3]`` array.

    The shards are mapped lazily in each process (a DataLoader worker maps its own; the
    mapping is never pickled), copy-on-write so the tensors may be handed to transforms.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        index = json.loads((folder / INDEX).read_text())
        self.side: int = index["side"]
        self.shards: List[str] = index["shards"]
        self.entries: Dict[str, Tuple[int, int, int, int]] = {
            path: tuple(entry) for path, entry in index["images"].items()  # shard, offset, height, width
        }
        self._maps: Dict[int, np.ndarray] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: Path) -> bool:
        return str(path) in self.entries

    def __getitem__(self, path: Path) -> torch.Tensor:
        return torch.from_numpy(self.pixels(path)).permute(2, 0, 1)

    def pixels(self, path: Path) -> np.ndarray:
        shard, offset, height, width = self.entries[str(path)]
        return self._map(shard)[offset : offset + height * width * 3].reshape(height, width, 3)

    def _map(self, shard: int) -> np.ndarray:
        if self._pid != os.getpid():  # a forked worker: its own mappings
            self._maps, self._pid = {}, os.getpid()
        if shard not in self._maps:
            # A plain ndarray over the mapping: slicing np.memmap itself costs a few times more
            # (its subclass hooks), and slicing a tensor more again (torch's dispatch).
            self._maps[shard] = np.memmap(self.folder / self.shards[shard], dtype=np.uint8, mode="c").view(np.ndarray)
        return self._maps[shard]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}


def open_cache(root: Path, paths: Sequence[Path], side: int, max_pixels: int) -> DecodedImages:
    """The cache of ``paths`` at ``side`` under ``root``: read if complete, else written first
    (by this process, or by another one it waits for)."""
    key = cache_key(paths, side, max_pixels)
    folder = root / key
    if not (folder / INDEX).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{key}.lock", "a") as lock:
            waited = time.perf_counter()
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (folder / INDEX).is_file():
                log.info("data cache: %s written by another process (waited %.1f s)", folder, time.perf_counter() - waited)
            else:
                _write(root, key, paths, side, max_pixels)
    return DecodedImages(folder)


def _write(root: Path, key: str, paths: Sequence[Path], side: int, max_pixels: int) -> None:
    for stale in root.glob(f"{key}.tmp-*"):  # a killed writer's; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    partial = root / f"{key}.tmp-{os.getpid()}"
    partial.mkdir()
    started = time.perf_counter()
    images: Dict[str, Tuple[int, int, int, int]] = {}
    shards: List[str] = []
    handle = None
    offset = 0
    try:
        for path in paths:
            try:
                pixels = np.asarray(load_rgb(path, max_pixels, shorter_side=side), dtype=np.uint8)
            except BadImageError as err:
                raise DataError(f"data cache: {err} (it changed since the scan?)") from None
            if handle is None or offset + pixels.nbytes > SHARD_BYTES:
                handle = _next_shard(handle, partial, shards)
                offset = 0
            handle.write(pixels.tobytes())
            images[str(path)] = (len(shards) - 1, offset, pixels.shape[0], pixels.shape[1])
            offset += pixels.nbytes
        _close(handle)
        handle = None
        index = {"version": FORMAT_VERSION, "side": side, "max_pixels": max_pixels, "shards": shards, "images": images}
        (partial / INDEX).write_text(json.dumps(index))
        os.rename(partial, root / key)
    except BaseException:
        if handle is not None:
            handle.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info(
        "data cache: %d images decoded to shorter side %d in %.1f s, %.1f MB in %s",
        len(images), side, time.perf_counter() - started, sum((partial.parent / key / s).stat().st_size for s in shards) / 1e6,
        root / key,
    )


def _next_shard(handle, folder: Path, shards: List[str]):
    _close(handle)
    shards.append(f"shard-{len(shards):03d}.bin")
    return open(folder / shards[-1], "wb")


def _close(handle) -> None:
    if handle is not None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def cache_root(cache_dir: Optional[str]) -> Optional[Path]:
    """Where decoded caches live: ``<paths.cache_dir>/decoded``."""
    return Path(cache_dir).expanduser() / "decoded" if cache_dir else None
