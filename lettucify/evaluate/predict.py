"""Run a model over a data loader and collect its logits: the one inference loop."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lettucify import distributed
from lettucify.models.tta import FlipAveraged


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
    tta_flip: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for every sample of ``loader``, in order.

    With ``tta_flip`` the logits are the mean of the image's and its mirror image's.
    """
    was_training = model.training
    model.eval()
    net = FlipAveraged(model) if tta_flip else model
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    all_logits, all_labels = [], []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    try:
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            with autocast:
                logits = net(images).float()
            all_logits.append(logits.cpu())
            all_labels.append(labels)
    finally:
        model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_labels)


def predict_sharded(
    model: nn.Module, dataset: Dataset, make_loader: Callable[[Dataset], DataLoader], **kwargs: Any
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``predict`` over the whole dataset, each rank taking every world-size-th image
    through ``make_loader(shard)`` (the data module's ``eval_loader``).

    Every image is counted exactly once, in dataset order, on every rank: unlike
    DistributedSampler, nothing is padded in to even out the shards.
    """
    rank, world = distributed.rank(), distributed.world_size()
    indices = list(range(rank, len(dataset), world))
    logits, labels = predict(model, make_loader(Subset(dataset, indices)), **kwargs)
    shards = distributed.gather_objects((indices, logits, labels))
    order = torch.tensor([i for shard_indices, _, _ in shards for i in shard_indices])
    all_logits = torch.cat([shard_logits for _, shard_logits, _ in shards])
    all_labels = torch.cat([shard_labels for _, _, shard_labels in shards])
    position = torch.argsort(order)
    return all_logits[position], all_labels[position]
