"""How a training process shares the machine's cores between its model and its loader.

Each of the job's processes on a machine gets ``cores // processes`` cores; its DataLoader
workers (one thread each, PyTorch's default in a worker) and its torch threads split
them, so that ``processes x (workers + threads) <= cores``: oversubscribed cores slow the
model's arithmetic more than they speed the loading. ``data.num_workers`` and
``compute.num_threads`` override either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

# Cores a process needs before a loader worker pays for the core it takes from the model:
# on fewer, the loop prepares its batches itself (from the data cache, gathering a 224 px
# photo costs ~0.1 ms and augmenting it with its batch ~0.5 ms on a CPU, a few percent of a step).
MIN_CORES_FOR_WORKERS = 4


def available_cores() -> int:
    """The cores this process may run on (its affinity: a container's or taskset's limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class CoreShare:
    cores: int
    processes: int
    workers: int
    threads: int

    def describe(self) -> str:
        return (
            f"{self.cores} cores, {self.processes} training process(es) on this machine: "
            f"{self.workers} loader worker(s) and {self.threads} torch thread(s) each"
        )


def core_share(
    num_workers: Optional[int], num_threads: Optional[int], cached: bool, processes: int, cores: Optional[int] = None
) -> CoreShare:
    """The loader workers and torch threads of one of ``processes`` training processes.

    Without the data cache each worker decodes JPEGs, worth one per 2 cores; with it each
    only gathers (or augments) uint8 tensors, worth one per 4.
    """
    cores = cores or available_cores()
    per_process = max(1, cores // processes)
    if num_workers is None:
        num_workers = 0 if per_process < MIN_CORES_FOR_WORKERS else per_process // (4 if cached else 2)
    threads = num_threads or max(1, per_process - num_workers)
    return CoreShare(cores, processes, num_workers, threads)
