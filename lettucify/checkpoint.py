"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint holds everything needed to continue a run exactly where it stopped
(model, optimizer, scheduler, epoch and step, RNG states) and to use the model
without the run (class names, preprocessing, the resolved config).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from lettucify.errors import CheckpointError

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> Dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        # As a tensor: weights_only loading accepts tensors, not numpy arrays.
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(payload: Dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A process killed at any moment leaves either the previous file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


_ZIP_MAGIC = b"PK\x03\x04"
# What a user who named the wrong file should point at instead.
_WHICH = "a run folder's checkpoints/last.pt or checkpoints/best.pt"


def load(path: Path, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}: give {_WHICH}")
    # torch.save writes a zip archive; a file that does not start as one never was a checkpoint.
    with open(path, "rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    if not is_zip:
        raise CheckpointError(f"{path} is not a Lettucify checkpoint (not a file torch.save wrote): give {_WHICH}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"cannot read checkpoint {path} (damaged?): {str(err).splitlines()[0]}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a Lettucify checkpoint (format {FORMAT_VERSION}): give {_WHICH}")
    return payload


def resume_path(resume: str, checkpoint_dir: Path) -> Optional[Path]:
    """Which checkpoint ``trainer.resume`` asks for: ``auto``, ``never`` or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        last = checkpoint_dir / LAST
        return last if last.is_file() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume}: no such checkpoint file")
    return path
