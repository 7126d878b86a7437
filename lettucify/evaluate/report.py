"""Write an evaluation's metrics, tables and figures into one folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from lettucify.evaluate import plots
from lettucify.evaluate.metrics import compute_metrics, softmax_probs, to_numpy

PathLike = Union[str, Path]

CSV_COLUMNS = ("class", "precision", "recall", "f1", "support", "auc", "ap")


def scalars(metrics: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """The numbers among ``metrics`` (no per-class lists, no None), named ``<prefix><key>``:
    what a task returns for ``optimized_metric`` to name."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def per_class_markdown(metrics: Dict[str, Any]) -> str:
    """The per-class table in Markdown, with a final macro-average row."""
    lines = [
        "| Class | Precision | Recall | F1 | AUC | AP | Images |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for row in metrics["per_class"]:
        lines.append(
            f"| {_cell(row['class'])} | {_number(row['precision'])} | {_number(row['recall'])} "
            f"| {_number(row['f1'])} | {_number(row['auc'])} | {_number(row['ap'])} | {row['support']} |"
        )
    lines.append(
        f"| **macro** | {_number(metrics['macro_precision'])} | {_number(metrics['macro_recall'])} "
        f"| {_number(metrics['macro_f1'])} | {_number(metrics['macro_auc'])} "
        f"| {_number(metrics['macro_ap'])} | {metrics['num_images']} |"
    )
    return "\n".join(lines) + "\n"


def _write_csv(metrics: Dict[str, Any], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in metrics["per_class"]:
            writer.writerow({key: ("" if row[key] is None else row[key]) for key in CSV_COLUMNS})


def write_evaluation(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: List[str],
    samples: Sequence[Tuple[PathLike, int]],
    out_dir: Path,
    history: Optional[List[Dict[str, float]]] = None,
) -> Dict[str, Any]:
    """Compute the metrics of ``logits`` and write, directly in ``out_dir``:

    ``metrics.json``, ``per_class.csv``, ``per_class.md``, ``confusion_matrix.png``,
    ``roc_curves.png``, ``pr_curves.png``, ``confident_mistakes.png`` and, with a
    non-empty ``history`` (``TrainState.history``), ``learning_curves.png``.

    ``samples`` are the ``(path, label)`` pairs of the evaluated images in the order of
    the logits (a dataset's ``.samples`` with an unshuffled loader). Returns the metrics
    dict plus ``files``: the names written, relative to ``out_dir``.
    """
    classes = [str(name) for name in classes]
    metrics = compute_metrics(logits, labels, classes)
    if len(samples) != metrics["num_images"]:
        raise ValueError(
            f"{len(samples)} samples for {metrics['num_images']} rows of logits: pass the "
            "evaluated dataset's .samples, in the order of the loader"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probs = softmax_probs(logits)
    labels_np = to_numpy(labels).astype("int64").reshape(-1)
    preds = probs.argmax(axis=1)

    files: List[str] = []

    def written(name: str) -> Path:
        files.append(name)
        return out_dir / name

    written("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _write_csv(metrics, written("per_class.csv"))
    written("per_class.md").write_text(per_class_markdown(metrics), encoding="utf-8")
    plots.confusion_matrix_plot(labels_np, preds, classes, written("confusion_matrix.png"))
    plots.roc_plot(probs, labels_np, classes, written("roc_curves.png"))
    plots.pr_plot(probs, labels_np, classes, written("pr_curves.png"))
    plots.confident_mistakes_plot(samples, probs, labels_np, classes, written("confident_mistakes.png"))
    if history:
        plots.learning_curves_plot(history, written("learning_curves.png"))
    return {**metrics, "files": files}
