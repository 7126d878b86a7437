"""A DistributedSampler that can start mid-epoch and seeds each sample's augmentation.

Both make resuming exact: the order of an epoch is a function of (seed, epoch), and
each sample's random augmentation a function of (seed, epoch, index), whatever the
number of data-loader workers and wherever a run was stopped.
"""

from __future__ import annotations

from typing import Iterator, Tuple

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Yields ``(index, augmentation_seed)`` pairs for datasets that accept them."""

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the current epoch."""
        self.start = start

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start :]
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_033
        return iter([(index, (base + index) % 2**63) for index in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start
