"""This process's device, threads, mixed precision and host-memory behaviour."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Optional

import torch
from omegaconf import DictConfig

from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_host_memory() -> bool:
    """Have glibc keep large freed blocks for reuse rather than unmapping them.

    By default every activation tensor above 32 MiB is a fresh mmap, and its pages
    fault in again at every step; PyTorch's CPU tuning guides use jemalloc or tcmalloc
    for the same reason. Returns whether it took effect (only on glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def setup_compute(compute: DictConfig) -> torch.device:
    device = torch.device(compute.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LettucifyError(
            f"compute.device={compute.device} but no CUDA device is visible; use compute=local_cpu"
        )
    if compute.num_threads:
        torch.set_num_threads(compute.num_threads)
    if compute.reuse_host_memory and not keep_freed_host_memory():
        log.info("compute.reuse_host_memory: not glibc, left the allocator as it is")
    return device


def amp_dtype(compute: DictConfig) -> Optional[torch.dtype]:
    """The autocast dtype, or None when mixed precision is off."""
    return getattr(torch, compute.amp_dtype) if compute.amp else None
