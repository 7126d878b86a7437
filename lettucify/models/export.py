"""Exporting a trained network to ONNX, checked against the PyTorch program it came from.

Registration (one file per registered version) and the server (at start-up, for
ONNX Runtime) both call ``to_onnx``, so a model is only ever served or registered as
ONNX after its logits were compared with PyTorch's on real images.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
from torch import nn

from lettucify.errors import LettucifyError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# Largest |ONNX - PyTorch| difference in the logits that still counts as the same model.
PARITY_TOLERANCE = 1e-4
# The exporter's optimiser logs every pass at INFO.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress lines (stdout) and pass-by-pass logs out of the run's log."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Union[str, Path],
    check: Optional[torch.Tensor] = None,
) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch axis and return its path.

    ``example`` is a ``[N, 3, H, W]`` float batch of the model's input size (its
    values do not matter). The file's logits are compared with ``model``'s on
    ``check`` (real preprocessed images; ``example`` when None): a difference over
    ``PARITY_TOLERANCE`` raises a LettucifyError naming it. The model is exported
    in eval mode and left in the mode it was in.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch.export specialises a dimension whose example size is 1, so trace a batch of 2.
    example = example[:1].expand(2, *example.shape[1:]).contiguous()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,  # one self-contained file, as registries and servers expect
                dynamo=True,
            )
        check_parity(model, path, example if check is None else check)
    finally:
        model.train(was_training)
    return path


def onnx_logits(path: Union[str, Path], threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """The file's logits for a float32 ``[N, 3, H, W]`` batch, run by ONNX Runtime on the CPU;
    ``threads``: its intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def check_parity(model: nn.Module, path: Path, images: torch.Tensor) -> float:
    """The largest logit difference between ``model`` and the ONNX file on ``images``;
    a LettucifyError when it is over ``PARITY_TOLERANCE``."""
    with torch.no_grad():
        expected = model(images).float().numpy()
    got = onnx_logits(path)(images.numpy().astype(np.float32))
    difference = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if not difference <= PARITY_TOLERANCE:  # also catches NaN
        raise LettucifyError(
            f"ONNX export {path} differs from the PyTorch model by {difference:.3g} in the logits "
            f"on {len(images)} image(s) (tolerance {PARITY_TOLERANCE:g})"
        )
    return difference
