"""A per-epoch progress bar on a terminal; nothing extra in non-interactive logs,
where the loop's one line per epoch says it all."""

from __future__ import annotations

import sys
from typing import Optional


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, steps: int, mode: str = "auto") -> None:
        self.enabled = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.description = f"epoch {epoch + 1}/{epochs}"
        self.steps = steps
        self._bar: Optional[object] = None

    def __enter__(self) -> "EpochProgress":
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.steps, desc=self.description, leave=False, dynamic_ncols=True)
        return self

    def update(self, *, loss: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images_per_s:.1f}")
            self._bar.update(1)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()
