"""One file's prediction (every class's probability) or its error, and ``predictions.csv``.

Rows are written as they come, in input order, and flushed batch by batch: a run that is
stopped keeps the rows it has written. ``task=evaluate`` writes its predictions.csv
through the same writer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

FILE = "predictions.csv"


@dataclass(frozen=True)
class Result:
    path: Path
    # Every class's probability, best first; None when the file got no prediction.
    scores: Optional[Dict[str, float]] = None
    error: Optional[str] = None

    @property
    def label(self) -> Optional[str]:
        return next(iter(self.scores)) if self.scores else None


def ranked(probs: np.ndarray, classes: Sequence[str]) -> Dict[str, float]:
    """One row of probabilities -> {label: probability}, best first (ties in class order)."""
    return {classes[i]: float(probs[i]) for i in np.argsort(-probs, kind="stable")}


def from_probabilities(paths: Sequence[Path], probs: np.ndarray, classes: Sequence[str]) -> List[Result]:
    return [Result(Path(path), ranked(row, classes)) for path, row in zip(paths, probs)]


class PredictionsCsv:
    """``out_dir/predictions.csv``: path, label, score, top_k (JSON {label: score}, best
    first), error, and true_label when the photos have one.

        with PredictionsCsv(run_dir, top_k=5, with_true_label=False) as csv_file:
            csv_file.write(result)
    """

    def __init__(self, out_dir: Path, top_k: int, with_true_label: bool, flush_every: int = 32) -> None:
        self.path = Path(out_dir) / FILE
        self.top_k = top_k
        self.with_true_label = with_true_label
        self.flush_every = flush_every
        self.rows = 0

    def __enter__(self) -> "PredictionsCsv":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self._writer.writerow(["path", "label", "score", "top_k", "error"] + (["true_label"] if self.with_true_label else []))
        return self

    def write(self, result: Result, true_label: Optional[str] = None) -> None:
        best = list(result.scores.items())[: self.top_k] if result.scores else []
        row = [
            str(result.path), result.label or "", f"{best[0][1]:.6f}" if best else "",
            json.dumps({label: round(score, 6) for label, score in best}) if best else "", result.error or "",
        ]
        self._writer.writerow(row + ([true_label or ""] if self.with_true_label else []))
        self.rows += 1
        if self.rows % self.flush_every == 0:
            self._handle.flush()

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()
