"""Evaluation figures, one PNG per function.

The figures are built with matplotlib's object-oriented API on an Agg canvas, never
through pyplot: nothing opens a window, the process's backend is left as it is, and no
figure stays registered anywhere once the function returns. Each function returns the
path of the PNG it wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from lettucify.data.images import load_rgb
from lettucify.evaluate.metrics import (
    ArrayLike,
    macro_mean,
    most_confident_mistakes,
    pr_curves,
    roc_curves,
    to_numpy,
)

DPI = 120
# Side of the thumbnails in the mistakes grid: decoding at this size keeps big photos cheap.
THUMBNAIL_SIDE = 256

PathLike = Union[str, Path]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # No "Software" entry: the bytes depend only on the drawing, not the version.
        figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    finally:
        figure.clear()
    return path


def _message(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, wrap=True, transform=ax.transAxes)


def _colors(count: int) -> List[Tuple[float, float, float, float]]:
    palette = sns.color_palette("tab10" if count <= 10 else "tab20", n_colors=max(count, 1))
    return list(palette)


def confusion_matrix_plot(
    labels: ArrayLike, preds: ArrayLike, classes: Sequence[str], path: PathLike
) -> Path:
    """Row-normalised confusion matrix (each true class's row sums to 1), annotated."""
    labels = to_numpy(labels).astype(np.int64).reshape(-1)
    preds = to_numpy(preds).astype(np.int64).reshape(-1)
    num_classes = len(classes)
    counts = confusion_matrix(labels, preds, labels=list(range(num_classes)))
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    annotations = np.where(counts > 0, np.vectorize(lambda value: f"{value:.2f}")(normalised), "")

    side = max(6.0, 0.6 * num_classes + 3.0)
    figure = _figure(side + 1.0, side)
    ax = figure.add_subplot()
    sns.heatmap(
        normalised,
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap="Blues",
        annot=annotations,
        fmt="",
        annot_kws={"fontsize": max(6.0, min(11.0, 130.0 / max(num_classes, 1)))},
        xticklabels=list(classes),
        yticklabels=list(classes),
        square=True,
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": "fraction of the true class", "shrink": 0.8},
    )
    ax.set_xticklabels(list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(list(classes), rotation=0, va="center")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = float((labels == preds).mean()) if labels.size else 0.0
    ax.set_title(
        f"Confusion matrix, row-normalised ({labels.size} images, top-1 {accuracy:.1%})"
    )
    figure.tight_layout()
    return _save(figure, path)


def _curve_plot(
    curves: List[Optional[Dict[str, Any]]],
    classes: Sequence[str],
    path: PathLike,
    *,
    x_key: str,
    y_key: str,
    score_key: str,
    score_name: str,
    title: str,
    xlabel: str,
    ylabel: str,
    chance_line: bool,
) -> Path:
    figure = _figure(11.0, 7.0)
    ax = figure.add_subplot()
    defined = [cls for cls, curve in enumerate(curves) if curve is not None]
    if not defined:
        _message(
            ax,
            f"{title}\n\nundefined: no class has both positive and negative images",
        )
        return _save(figure, path)
    colors = _colors(len(classes))
    # Legend sorted by score, best first, so the weak classes sit together at the bottom.
    for cls in sorted(defined, key=lambda c: (-curves[c][score_key], c)):
        curve = curves[cls]
        ax.plot(
            curve[x_key],
            curve[y_key],
            color=colors[cls],
            linewidth=1.6,
            drawstyle="steps-post" if y_key == "precision" else "default",
            label=f"{classes[cls]} ({score_name} {curve[score_key]:.3f})",
        )
    if chance_line:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    macro = macro_mean([curve[score_key] if curve else None for curve in curves])
    missing = [classes[cls] for cls, curve in enumerate(curves) if curve is None]
    subtitle = f"macro {score_name} {macro:.3f} over {len(defined)}/{len(classes)} classes"
    ax.set_title(f"{title}: {subtitle}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    legend_title = f"macro {score_name} {macro:.3f}"
    if missing:
        legend_title += f"\n{score_name} undefined: " + ", ".join(missing)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8 if len(defined) > 10 else 9,
        title=legend_title,
        title_fontsize=9,
        frameon=False,
    )
    figure.tight_layout()
    return _save(figure, path)


def roc_plot(probs: ArrayLike, labels: ArrayLike, classes: Sequence[str], path: PathLike) -> Path:
    """One-vs-rest ROC curve per class, AUC per class in the legend, macro AUC in the title."""
    curves = roc_curves(probs, labels, len(classes))
    return _curve_plot(
        curves,
        classes,
        path,
        x_key="fpr",
        y_key="tpr",
        score_key="auc",
        score_name="AUC",
        title="ROC, one-vs-rest",
        xlabel="false positive rate",
        ylabel="true positive rate",
        chance_line=True,
    )


def pr_plot(probs: ArrayLike, labels: ArrayLike, classes: Sequence[str], path: PathLike) -> Path:
    """One-vs-rest precision-recall curve per class, AP per class and macro AP."""
    curves = pr_curves(probs, labels, len(classes))
    return _curve_plot(
        curves,
        classes,
        path,
        x_key="recall",
        y_key="precision",
        score_key="ap",
        score_name="AP",
        title="Precision-recall, one-vs-rest",
        xlabel="recall",
        ylabel="precision",
        chance_line=False,
    )


def _series(history: Sequence[Dict[str, float]], key: str) -> Tuple[List[float], List[float]]:
    points = [
        (float(record.get("epoch", index + 1)), float(record[key]))
        for index, record in enumerate(history)
        if record.get(key) is not None
    ]
    return [x for x, _ in points], [y for _, y in points]


def learning_curves_plot(history: Sequence[Dict[str, float]], path: PathLike) -> Path:
    """Loss and accuracy per epoch, train and (when recorded) validation, in two panels."""
    figure = _figure(12.0, 5.0)
    loss_ax, acc_ax = figure.subplots(1, 2)
    if not history:
        _message(loss_ax, "no epochs recorded")
        acc_ax.set_axis_off()
        return _save(figure, path)
    epochs = sorted({float(record.get("epoch", index + 1)) for index, record in enumerate(history)})
    for ax, metric, name in ((loss_ax, "loss", "Loss"), (acc_ax, "acc", "Accuracy")):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            xs, ys = _series(history, f"{split}_{metric}")
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, color=color, label=split)
        ax.set_title(f"{name} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.lower())
        ax.grid(True, alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.margins(y=0.12)
        if ax.lines:
            ax.legend()
    xs, ys = _series(history, "val_acc")
    if ys:
        best = int(np.argmax(ys))
        acc_ax.scatter([xs[best]], [ys[best]], s=70, facecolors="none", edgecolors="tab:red", zorder=3)
        acc_ax.annotate(
            f"best val {ys[best]:.3f} (epoch {xs[best]:g})",
            (xs[best], ys[best]),
            textcoords="offset points",
            xytext=(0, -16),
            # Toward the middle of the panel, so the note stays inside it.
            ha="right" if best >= len(ys) / 2 else "left",
            fontsize=8,
            color="tab:red",
        )
    figure.tight_layout()
    return _save(figure, path)


def confident_mistakes_plot(
    samples: Sequence[Tuple[PathLike, int]],
    probs: ArrayLike,
    labels: ArrayLike,
    classes: Sequence[str],
    path: PathLike,
    max_images: int = 16,
) -> Path:
    """A grid of the most confidently wrong images, titled true / predicted (confidence).

    ``samples[i]`` is the ``(path, label)`` of row ``i`` of ``probs``, as in the
    datasets' ``.samples`` with an unshuffled loader.
    """
    probs = to_numpy(probs)
    labels = to_numpy(labels).astype(np.int64).reshape(-1)
    if len(samples) != labels.shape[0] or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{len(samples)} samples, {probs.shape[0]} rows of probabilities and "
            f"{labels.shape[0]} labels: they must be the same images, in the same order"
        )
    chosen = most_confident_mistakes(probs, labels, max_images)
    if not chosen:
        figure = _figure(8.0, 3.0)
        _message(figure.add_subplot(), f"No mistakes: all {labels.shape[0]} images are classified correctly.")
        return _save(figure, path)

    columns = min(4, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    figure = _figure(max(3.2 * columns, 6.0), 3.4 * rows + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    preds = probs.argmax(axis=1)
    for ax, index in zip(axes, chosen):
        image_path, sample_label = samples[index][0], int(samples[index][1])
        if sample_label != labels[index]:
            raise ValueError(
                f"sample {index} ({image_path}) has label {sample_label} but labels[{index}] is "
                f"{labels[index]}: samples and predictions are not in the same order"
            )
        try:
            ax.imshow(np.asarray(load_rgb(image_path, shorter_side=THUMBNAIL_SIDE)))
        except Exception as err:  # a file gone or broken since prediction: say so in its cell
            ax.text(0.5, 0.5, f"cannot load\n{Path(image_path).name}\n({type(err).__name__})",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        pred = int(preds[index])
        ax.set_title(
            f"true: {classes[labels[index]]}\npred: {classes[pred]} ({probs[index, pred]:.2f})",
            fontsize=9,
            color="tab:red",
        )
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    figure.suptitle(f"Most confident mistakes ({len(chosen)} of {int((preds != labels).sum())} wrong)")
    figure.tight_layout()
    return _save(figure, path)
