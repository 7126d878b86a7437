"""lettucify.models.export: an ONNX file with a dynamic batch axis, checked against PyTorch."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from lettucify.errors import LettucifyError
from lettucify.models.cnn16 import CNN16
from lettucify.models.export import INPUT_NAME, to_onnx


def test_export_has_a_dynamic_batch_and_pytorchs_logits(tmp_path):
    torch.manual_seed(0)
    model = CNN16(num_classes=5, input_size=32).train()
    path = to_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "sub" / "model.onnx", check=torch.randn(4, 3, 32, 32))
    assert path.is_file() and model.training  # left in the mode it was in
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    for batch in (1, 3, 9):
        images = torch.randn(batch, 3, 32, 32)
        (logits,) = session.run(None, {INPUT_NAME: images.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(images).numpy(), atol=1e-4)


class ExportsDifferently(nn.Module):
    """Eager and exported programs disagree: what a broken export looks like."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.mean(dim=(2, 3))
        return logits + 0.5 if torch.compiler.is_exporting() else logits


def test_export_that_disagrees_with_pytorch_fails_naming_the_difference(tmp_path):
    with pytest.raises(LettucifyError, match=r"differs from the PyTorch model by 0\.5 in the logits on 2 image"):
        to_onnx(ExportsDifferently(), torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx", check=torch.randn(2, 3, 8, 8))
