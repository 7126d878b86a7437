"""Test-time augmentation as a module: evaluation runs it, and serving exports it as it is."""

from __future__ import annotations

import torch
from torch import nn


class FlipAveraged(nn.Module):
    """The mean of ``net``'s float logits for each image and its mirror image (``trainer.tta_flip``).

    A module rather than a loop step, so that the ONNX file a server runs computes what
    evaluation measured.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x).float() + self.net(torch.flip(x, dims=[3])).float()) / 2
