"""Evaluation metrics, figures and the report folder, on tiny hand-made cases."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from lettucify.evaluate import plots
from lettucify.evaluate.metrics import compute_metrics, most_confident_mistakes, softmax_probs
from lettucify.evaluate.report import write_evaluation

CLASSES = ["apple", "banana", "carrot"]
PNGS = ["confusion_matrix.png", "roc_curves.png", "pr_curves.png", "confident_mistakes.png"]


def one_hot_logits(preds, num_classes, scale=4.0):
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float() * scale


def assert_png(path: Path, min_width: int = 600) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode in ("RGB", "RGBA")
        assert image.width >= min_width and image.height >= 200
        assert np.asarray(image.convert("RGB")).astype(float).var() > 0


# ---- metrics ---------------------------------------------------------------------------


def test_perfect_predictions():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    metrics = compute_metrics(one_hot_logits(labels.tolist(), 3), labels, CLASSES)
    assert metrics["top1"] == 1.0 and metrics["top5"] == 1.0 and metrics["top5_k"] == 3
    assert metrics["macro_f1"] == 1.0
    assert metrics["macro_auc"] == 1.0 and metrics["macro_ap"] == 1.0
    assert metrics["num_images"] == 6
    assert [row["class"] for row in metrics["per_class"]] == CLASSES
    assert all(row["auc"] == 1.0 and row["f1"] == 1.0 and row["support"] == 2 for row in metrics["per_class"])
    json.dumps(metrics, allow_nan=False)


def test_known_confusion_exact_values():
    # true:  0 0 0 1 1 2
    # pred:  0 0 1 1 2 2
    # class 0: TP 2, FP 0, FN 1 -> P 1,   R 2/3, F1 0.8
    # class 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F1 1/2
    # class 2: TP 1, FP 1, FN 0 -> P 1/2, R 1,   F1 2/3
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    metrics = compute_metrics(one_hot_logits([0, 0, 1, 1, 2, 2], 3), labels, CLASSES)
    rows = metrics["per_class"]
    expected = [(1.0, 2 / 3, 0.8, 3), (0.5, 0.5, 0.5, 2), (0.5, 1.0, 2 / 3, 1)]
    for row, (precision, recall, f1, support) in zip(rows, expected):
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    assert metrics["top1"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["macro_precision"] == pytest.approx(2 / 3)
    assert metrics["macro_recall"] == pytest.approx(13 / 18)


def test_auc_ap_and_log_loss_by_hand():
    # Two classes, P(class 1) = 0.1, 0.3, 0.35, 0.8 for labels 0, 1, 0, 1: of the four
    # (positive, negative) pairs one is misordered (0.3 < 0.35) -> AUC 3/4 for both classes.
    # AP of class 1, ranked 0.8(+) 0.35(-) 0.3(+) 0.1(-): 1/2 * 1 + 1/2 * 2/3 = 5/6.
    p1 = torch.tensor([0.1, 0.3, 0.35, 0.8], dtype=torch.float64)
    logits = torch.stack([torch.zeros(4, dtype=torch.float64), torch.log(p1 / (1 - p1))], dim=1)
    labels = torch.tensor([0, 1, 0, 1])
    metrics = compute_metrics(logits, labels, ["no", "yes"])
    assert metrics["per_class"][0]["auc"] == pytest.approx(0.75)
    assert metrics["per_class"][1]["auc"] == pytest.approx(0.75)
    assert metrics["per_class"][1]["ap"] == pytest.approx(5 / 6)
    expected_loss = -np.mean(np.log([0.9, 0.3, 0.65, 0.8]))
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    # Uniform logits: the loss of guessing among 4 classes is ln 4.
    uniform = compute_metrics(torch.zeros(3, 4), torch.tensor([0, 1, 3]), list("abcd"))
    assert uniform["log_loss"] == pytest.approx(math.log(4))


def test_top5_differs_from_top1():
    # Six classes ranked 0 > 1 > ... > 5 in every row: label 1 is second (in the top 5),
    # label 5 is last (outside it), label 0 is first.
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0]]).repeat(3, 1)
    metrics = compute_metrics(logits, torch.tensor([1, 5, 0]), list("abcdef"))
    assert metrics["top5_k"] == 5
    assert metrics["top1"] == pytest.approx(1 / 3)
    assert metrics["top5"] == pytest.approx(2 / 3)


def test_never_predicted_class_has_precision_zero_not_nan():
    labels = torch.tensor([0, 1, 2, 2])
    metrics = compute_metrics(one_hot_logits([0, 1, 0, 1], 3), labels, CLASSES)
    carrot = metrics["per_class"][2]
    assert carrot["precision"] == 0.0 and carrot["recall"] == 0.0 and carrot["f1"] == 0.0
    assert carrot["support"] == 2
    json.dumps(metrics, allow_nan=False)  # no NaN anywhere


def test_class_absent_from_labels_has_null_auc_and_is_left_out_of_macro():
    labels = torch.tensor([0, 0, 1, 1])
    logits = one_hot_logits([0, 0, 1, 1], 3)
    logits[:, 2] = torch.tensor([3.0, -1.0, 2.0, 0.5])  # scores for a class nobody has
    metrics = compute_metrics(logits, labels, CLASSES)
    assert metrics["per_class"][2]["auc"] is None and metrics["per_class"][2]["ap"] is None
    assert metrics["per_class"][0]["auc"] == 1.0 and metrics["per_class"][1]["auc"] == 1.0
    assert metrics["macro_auc"] == 1.0 and metrics["macro_ap"] == 1.0
    assert json.loads(json.dumps(metrics))["per_class"][2]["auc"] is None


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="classes"):
        compute_metrics(torch.zeros(2, 3), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        compute_metrics(torch.zeros(2, 3), torch.tensor([0, 1, 2]), CLASSES)


def test_most_confident_mistakes_order():
    probs = np.array(
        [
            [0.95, 0.05, 0.0],  # right
            [0.3, 0.6, 0.1],  # wrong, 0.6
            [0.05, 0.05, 0.9],  # wrong, 0.9: first
            [0.2, 0.6, 0.2],  # wrong, 0.6, ties with row 1: after it
            [0.1, 0.8, 0.1],  # right
        ]
    )
    labels = np.array([0, 0, 1, 2, 1])
    assert most_confident_mistakes(probs, labels, 10) == [2, 1, 3]
    assert most_confident_mistakes(probs, labels, 1) == [2]
    assert most_confident_mistakes(probs, np.array([0, 1, 2, 1, 1]), 5) == []


# ---- figures and report ----------------------------------------------------------------


def make_samples(root: Path, labels) -> list:
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for index, label in enumerate(labels):
        path = root / f"{index}.png"
        pixels = np.zeros((24, 32, 3), dtype=np.uint8)
        pixels[..., int(label) % 3] = 40 + 20 * index
        pixels[::4] = 255
        Image.fromarray(pixels).save(path)
        samples.append((path, int(label)))
    return samples


LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS = [0, 0, 1, 1, 1, 2, 2, 2, 0]
HISTORY = [
    {"epoch": e, "train_loss": 1.5 / e, "train_acc": 0.5 + 0.1 * e, "lr": 0.01, "images_per_s": 50.0,
     "epoch_time_s": 1.0, "val_loss": 1.6 / e, "val_acc": 0.45 + 0.1 * e}
    for e in range(1, 4)
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    samples = make_samples(root / "images", LABELS)
    logits = one_hot_logits(PREDS, 3, scale=2.0) + torch.linspace(0, 1, 27).reshape(9, 3)
    result = write_evaluation(logits, torch.tensor(LABELS), CLASSES, samples, root / "out", HISTORY)
    return root / "out", result, (logits, samples)


def test_report_writes_every_file(report):
    out, result, _ = report
    expected = ["metrics.json", "per_class.csv", "per_class.md", *PNGS, "learning_curves.png"]
    assert result["files"] == expected
    assert sorted(path.name for path in out.iterdir()) == sorted(expected)
    for name in expected:
        if name.endswith(".png"):
            assert_png(out / name)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == {key: value for key, value in result.items() if key != "files"}
    assert saved["top1"] == pytest.approx(6 / 9)
    assert plt.get_fignums() == []  # no figure left registered


def test_report_tables_have_one_row_per_class(report):
    out, result, _ = report
    with (out / "per_class.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == CLASSES
    assert [int(row["support"]) for row in rows] == [3, 3, 3]
    assert float(rows[0]["f1"]) == pytest.approx(result["per_class"][0]["f1"])
    lines = (out / "per_class.md").read_text().strip().splitlines()
    assert lines[0].startswith("| Class | Precision | Recall | F1 | AUC | AP | Images |")
    body = lines[2:]
    assert [line.split("|")[1].strip() for line in body] == [*CLASSES, "**macro**"]
    assert body[-1].rstrip(" |").endswith("9")


def test_report_is_deterministic_and_skips_learning_curves_without_history(report, tmp_path):
    out, _, (logits, samples) = report
    again = write_evaluation(logits, torch.tensor(LABELS), CLASSES, samples, tmp_path)
    assert "learning_curves.png" not in again["files"]
    for name in again["files"]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_learning_curves_with_and_without_val(tmp_path):
    assert_png(plots.learning_curves_plot(HISTORY[:1], tmp_path / "one_epoch.png"))
    train_only = [{key: value for key, value in r.items() if not key.startswith("val_")} for r in HISTORY]
    assert_png(plots.learning_curves_plot(train_only, tmp_path / "train_only.png"))


def test_confident_mistakes_without_mistakes_says_so(tmp_path):
    labels = [0, 1, 2]
    samples = make_samples(tmp_path / "images", labels)
    probs = softmax_probs(one_hot_logits(labels, 3))
    path = plots.confident_mistakes_plot(samples, probs, labels, CLASSES, tmp_path / "none.png")
    assert_png(path, min_width=500)
    with pytest.raises(ValueError, match="order"):
        plots.confident_mistakes_plot(
            samples[::-1], softmax_probs(one_hot_logits([1, 1, 1], 3)), labels, CLASSES, tmp_path / "x.png"
        )


def test_confusion_matrix_grows_with_class_count(tmp_path):
    many = [f"class_{index:02d}" for index in range(16)]
    labels = np.arange(32) % 16
    small = plots.confusion_matrix_plot(LABELS, PREDS, CLASSES, tmp_path / "small.png")
    large = plots.confusion_matrix_plot(labels, (labels + 1) % 16, many, tmp_path / "large.png")
    with Image.open(small) as a, Image.open(large) as b:
        assert b.width > a.width and b.width >= 1200
    assert_png(large)


def test_curves_without_any_defined_class_still_write_a_figure(tmp_path):
    probs = softmax_probs(torch.zeros(2, 3))
    assert_png(plots.roc_plot(probs, [1, 1], CLASSES, tmp_path / "roc.png"))
    assert_png(plots.pr_plot(probs, [1, 1], CLASSES, tmp_path / "pr.png"))
