"""Classification metrics from logits and labels, and the curve data the plots draw.

Everything here is pure: tensors or arrays in, plain Python values out. The metrics dict
holds only floats, ints, strings, lists and ``None``, so it goes to JSON unchanged.

A class's ROC AUC and average precision are defined only when the labels hold both
images of that class and images of other classes; otherwise they are ``None`` and the
macro averages leave that class out. The curves the plots draw come from the same
functions (``roc_curves``, ``pr_curves``) as the numbers in the metrics, so a legend
never disagrees with ``metrics.json``.
"""

from __future__ import annotations

from typing import Callable, Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

ArrayLike = Any  # torch.Tensor, numpy array or nested sequence


def to_numpy(values: ArrayLike) -> np.ndarray:
    """A numpy view or copy of a tensor (any device, with or without grad) or array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def softmax_probs(logits: ArrayLike) -> np.ndarray:
    """Class probabilities ``[N, C]`` (float64) from logits ``[N, C]``."""
    logits = torch.as_tensor(to_numpy(logits), dtype=torch.float64)
    return torch.softmax(logits, dim=1).numpy()


def _check(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be [N] with N = {logits.shape[0]} (rows of logits), "
            f"got shape {tuple(labels.shape)}"
        )
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} columns but there are {num_classes} classes")
    if logits.shape[0] == 0:
        raise ValueError("no images to evaluate (0 rows)")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")


def _defined(labels: np.ndarray, cls: int) -> bool:
    """One-vs-rest curves of ``cls`` need positives and negatives."""
    positives = int((labels == cls).sum())
    return 0 < positives < labels.shape[0]


def _one_vs_rest(
    probs: ArrayLike, labels: ArrayLike, num_classes: int, curve: Callable[[np.ndarray, np.ndarray], Dict[str, Any]]
) -> List[Optional[Dict[str, Any]]]:
    probs, labels = to_numpy(probs), to_numpy(labels).astype(np.int64)
    return [
        curve(labels == cls, probs[:, cls]) if _defined(labels, cls) else None for cls in range(num_classes)
    ]


def _roc(truth: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(truth, scores))}


def _pr(truth: np.ndarray, scores: np.ndarray) -> Dict[str, Any]:
    precision, recall, _ = precision_recall_curve(truth, scores)
    return {"precision": precision, "recall": recall, "ap": float(average_precision_score(truth, scores))}


def roc_curves(probs: ArrayLike, labels: ArrayLike, num_classes: int) -> List[Optional[Dict[str, Any]]]:
    """Per class, one-vs-rest ``{"fpr", "tpr", "auc"}`` (arrays and a float), or ``None``
    where the labels hold no positives or no negatives of that class."""
    return _one_vs_rest(probs, labels, num_classes, _roc)


def pr_curves(probs: ArrayLike, labels: ArrayLike, num_classes: int) -> List[Optional[Dict[str, Any]]]:
    """Per class, one-vs-rest ``{"precision", "recall", "ap"}``, or ``None`` on the same
    rule as ``roc_curves``."""
    return _one_vs_rest(probs, labels, num_classes, _pr)


def macro_mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the defined values; ``None`` when none is."""
    defined = [value for value in values if value is not None]
    return float(np.mean(defined)) if defined else None


def most_confident_mistakes(probs: ArrayLike, labels: ArrayLike, k: int) -> List[int]:
    """Indices of up to ``k`` wrongly predicted images, most confident first.

    Confidence is the probability of the predicted (arg-max) class; ties go to the
    lower index, so the choice is deterministic.
    """
    probs, labels = to_numpy(probs), to_numpy(labels).astype(np.int64)
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    confidence = probs[wrong, preds[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return [int(index) for index in wrong[order][: max(k, 0)]]


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: List[str]) -> Dict[str, Any]:
    """Top-1/top-k accuracy, log loss, macro and per-class metrics of ``logits`` [N, C].

    ``top5`` is top-k accuracy with k = min(5, C). ``macro_f1``, ``macro_precision`` and
    ``macro_recall`` average over the classes that occur in the labels or predictions
    (scikit-learn's macro rule); ``macro_auc`` and ``macro_ap`` over the classes whose
    AUC/AP is defined. A never-predicted class has precision 0, not NaN.
    """
    classes = [str(name) for name in classes]
    num_classes = len(classes)
    logits_np = to_numpy(logits).astype(np.float64)
    labels_np = to_numpy(labels).astype(np.int64).reshape(-1)
    _check(logits_np, labels_np, num_classes)

    logits_t = torch.from_numpy(logits_np)
    labels_t = torch.from_numpy(labels_np)
    probs = torch.softmax(logits_t, dim=1).numpy()
    preds = probs.argmax(axis=1)
    k = min(5, num_classes)
    topk = torch.topk(logits_t, k, dim=1).indices
    top5 = (topk == labels_t[:, None]).any(dim=1).double().mean().item()

    precision, recall, f1, support = precision_recall_fscore_support(
        labels_np, preds, labels=list(range(num_classes)), zero_division=0
    )
    seen = np.zeros(num_classes, dtype=bool)
    seen[labels_np] = True
    seen[preds] = True

    rocs = roc_curves(probs, labels_np, num_classes)
    prs = pr_curves(probs, labels_np, num_classes)
    per_class = [
        {
            "class": classes[cls],
            "precision": float(precision[cls]),
            "recall": float(recall[cls]),
            "f1": float(f1[cls]),
            "support": int(support[cls]),
            "auc": rocs[cls]["auc"] if rocs[cls] is not None else None,
            "ap": prs[cls]["ap"] if prs[cls] is not None else None,
        }
        for cls in range(num_classes)
    ]
    return {
        "num_images": int(labels_np.shape[0]),
        "num_classes": num_classes,
        "top1": float((preds == labels_np).mean()),
        "top5": float(top5),
        "top5_k": k,
        "log_loss": float(F.cross_entropy(logits_t, labels_t).item()),
        "macro_precision": float(precision[seen].mean()),
        "macro_recall": float(recall[seen].mean()),
        "macro_f1": float(f1[seen].mean()),
        "macro_auc": macro_mean([row["auc"] for row in per_class]),
        "macro_ap": macro_mean([row["ap"] for row in per_class]),
        "per_class": per_class,
    }
