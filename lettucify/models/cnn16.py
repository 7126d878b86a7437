"""The classic small CNN of the original LettucifyAI project.

The original (``SRC/Model.py`` of github.com/harinik05/LettucifyAI, ``CNNModel``)::

    Conv2d(3, 16, 3, padding=1) -> ReLU -> MaxPool2d(2)
    Conv2d(16, 32, 3, padding=1) -> ReLU -> MaxPool2d(2)
    flatten -> Linear(32 * 128 * 128, 128) -> ReLU -> Linear(128, 16)

It hard-wired 512 px inputs (512 / 4 = 128) and 16 classes. Here the flattened size
follows the configured input size and channel list, the class count is a parameter,
and a dropout (absent from the original) sits before the final Linear.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class CNN16(nn.Module):
    """Stacked ``conv3x3 -> ReLU -> maxpool2`` stages, then an MLP head.

    Args:
        num_classes: number of logits.
        input_size: side of the square input images the head is sized for.
        channels: output channels of each conv stage (the original: 16, 32).
        hidden_units: width of the hidden fully connected layer.
        dropout: dropout probability before the final Linear.
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int = 64,
        channels: Sequence[int] = (16, 32),
        hidden_units: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if input_size < 2 ** len(channels):
            raise ValueError(
                f"input_size {input_size} is too small for {len(channels)} 2x2 max-pools "
                f"(needs >= {2 ** len(channels)})"
            )

        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.num_features = int(hidden_units)

        layers: list[nn.Module] = []
        in_ch, side = 3, self.input_size
        for out_ch in channels:
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
            in_ch, side = out_ch, side // 2  # 3x3/pad 1 keeps the size; the pool floors it
        self.features = nn.Sequential(*layers)
        self.feature_size = side  # spatial side after the last pool
        self.flat_features = in_ch * side * side

        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(self.flat_features, self.num_features)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, self.num_classes)

    def get_classifier(self) -> nn.Module:
        """The final Linear (timm's convention)."""
        return self.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"CNN16 was built for {self.input_size}x{self.input_size} inputs, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.forward_features(x))
        x = self.dropout(self.act(self.fc(x)))
        return self.classifier(x)
