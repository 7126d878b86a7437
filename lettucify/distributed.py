"""Process groups and ranks: the only module that knows about them.

Workers find their rank in the environment that PyTorch's elastic launcher
(``torchrun``) or a cluster scheduler sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so the code path is the same for both. Everything
else asks ``is_main()`` or calls the collectives below, which are no-ops in a single
process.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, List

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only the main process writes files and talks to MLflow."""
    return rank() == 0


def local_world_size() -> int:
    """The processes of this job on this machine (torchrun's ``LOCAL_WORLD_SIZE``)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device, backend: str | None, timeout_s: float) -> torch.device:
    """Join the process group when launched with several processes; return this rank's device.

    ``timeout_s`` bounds every collective: a rank that died makes the others fail
    within it instead of waiting for ever.
    """
    if not launched_distributed() or dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend or ("nccl" if device.type == "cuda" else "gloo"),
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    log.info("rank %d of %d on %s (%s)", rank(), world_size(), device, dist.get_backend())
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Element-wise sum over ranks of a few numbers (loss sums, counts)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank."""
    if not dist.is_initialized():
        return flag
    return all_reduce_sum([float(flag)], device)[0] > 0


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    gathered: List[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
