"""report.html of a run and of a sweep: what it holds, that it holds nothing from outside,
and, in headless Chromium, that it opens from disk with every figure and no error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from browser import DESKTOP, PHONE, open_page
from helpers import make_image_folder
from lettucify.data.scan import BadImage
from lettucify.evaluate.report import write_evaluation
from lettucify.evaluate.run_report import DatasetFacts, write_run_report
from lettucify.sweep.job import JobResult
from lettucify.sweep.summary import write_summary

SECRET = "hunter2-sEcReT-77"
CLASSES = ["apple", "banana", "carrot"]
HISTORY = [{"epoch": e, "train_loss": 1.2 / e, "train_acc": 0.3 * e, "val_loss": 1.3 / e, "val_acc": 0.25 * e,
            "lr": 1e-3, "images_per_s": 40.0 + e, "epoch_time_s": 2.0} for e in (1, 2, 3)]
FIGURES = 5  # confusion matrix, ROC, PR, confident mistakes, learning curves


def hydra_record(run_dir: Path, overrides) -> None:
    """What Hydra writes in a run folder: the overrides and the groups chosen."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    record = {"hydra": {"overrides": {"task": list(overrides)},
                        "runtime": {"choices": {"model": "cnn16", "data": "imagefolder", "hydra/launcher": "basic",
                                                "schema/model@model": "cnn16", "experiment": None}}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))


def written_run(run_dir: Path, photos: Path, bad_reason: str = "not an image (<script>alert(1)</script>)"):
    """A training run's folder as finish() leaves it: the evaluation files and report.html."""
    train = [(p, CLASSES.index(p.parent.name)) for p in sorted((photos / "train").rglob("*.jpg"))]
    test = [(p, CLASSES.index(p.parent.name)) for p in sorted((photos / "test").rglob("*.jpg"))]
    labels = torch.tensor([label for _, label in test])
    logits = torch.nn.functional.one_hot(labels, 3).float() * 2 + torch.linspace(0, 3, 3 * len(test)).reshape(-1, 3)
    metrics = write_evaluation(logits, labels, CLASSES, test, run_dir, history=HISTORY)
    cfg = OmegaConf.create({
        "task": "train", "seed": 3, "model": {"input_size": 32}, "trainer": {"epochs": 3},
        "logger": {"tracking_uri": f"https://user:{SECRET}@mlflow.example"}, "azure": {"api_key": SECRET},
    })
    hydra_record(run_dir, ["model=cnn16", "trainer.epochs=3", f"logger.tracking_uri=https://u:{SECRET}@mlflow.example"])
    dataset = DatasetFacts(photos, CLASSES, {"train": train[:-3], "validation": train[-3:], "test": test},
                           [BadImage(photos / "train" / "apple" / "broken.jpg", "train", bad_reason)])
    report = write_run_report(run_dir, cfg, metrics, dataset, kind="training", model="CNN16, 32x32 input",
                              history=HISTORY, registered={"name": "fridge", "version": "7", "alias": "candidate"},
                              mlflow_run_id="0123abcd")
    return report, metrics


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    photos = make_image_folder(root / "photos", classes=CLASSES, per_class_train=4, per_class_test=3)
    report, metrics = written_run(root / "run", photos)
    return report, metrics


def test_a_run_report_holds_the_metrics_config_dataset_curves_and_registry(run_report):
    report, metrics = run_report
    text = report.read_text()
    assert report.name == "report.html"
    assert f"{100 * metrics['top1']:.1f}%" in text and f"{100 * metrics['top5']:.1f}%" in text
    assert f"{metrics['macro_f1']:.3f}" in text
    for row in metrics["per_class"]:  # the per-class table, with its images
        assert re.search(rf"<td>{row['class']}</td><td>{row['precision']:.3f}</td>.*?<td>{row['support']}</td>", text)
    assert "python -m lettucify model=cnn16 trainer.epochs=3" in text  # the overrides
    assert "<td>model</td><td class=\"text\">cnn16</td>" in text and "hydra/launcher" not in text
    assert "fridge version 7, alias @candidate" in text and "0123abcd" in text
    # Images per class and split: the last 3 training photos (carrot's) are the validation split.
    assert re.search(r"<td>apple</td><td>4</td><td>0</td><td>3</td>", text)
    assert "broken.jpg" in text
    # Training: the epochs' table, the time and the mean images/s.
    assert "6.0 s" in text and "42.0" in text and text.count("<tr><td>") >= len(HISTORY)
    assert text.count('<img src="data:image/') == FIGURES


def test_a_run_report_is_self_contained_escaped_and_holds_no_secret(run_report):
    text = run_report[0].read_text()
    assert SECRET not in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "a report loads nothing from outside"
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_sweep_jobs_report_links_to_the_sweeps_report(tmp_path):
    photos = make_image_folder(tmp_path / "photos", classes=CLASSES, per_class_train=2, per_class_test=2)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    job_report, _ = written_run(tmp_path / "sweep" / "seed0", photos)
    assert 'href="../report.html"' in job_report.read_text()
    alone, _ = written_run(tmp_path / "alone", photos)
    assert "sweep's report" not in alone.read_text()


def sweep_with_reports(sweep_dir: Path, photos: Path) -> Path:
    """A sweep folder of three jobs (one failed), each completed one with its own report; its summary."""
    for num, (lr, value) in enumerate([("1e-4", 0.8), ("1e-3", None), ("3e-3", 0.5)]):
        JobResult(num, ["model=cnn16", f"optimizer.lr={lr}"], "failed" if value is None else "completed",
                  "val_loss", value, {"val_loss": value} if value else {},
                  None if value else "data.root=/nowhere: no such folder").write(sweep_dir / str(num))
        if value is not None:
            written_run(sweep_dir / str(num), photos)
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    _, files = write_summary(sweep_dir, "val_loss", maximize=False)
    return files[-1]


def test_a_sweep_report_has_the_table_the_best_command_the_plot_and_links_to_its_jobs(tmp_path):
    photos = make_image_folder(tmp_path / "photos", classes=CLASSES, per_class_train=2, per_class_test=2)
    report = sweep_with_reports(tmp_path / "sweep", photos)
    text = report.read_text()
    assert report == tmp_path / "sweep" / "report.html"
    assert "python -m lettucify model=cnn16 optimizer.lr=3e-3" in text
    jobs = re.findall(r'<tr class="(best|failed|)">\s*<td>(\d*)</td>\s*<td>(?:<a href="([^"]+)">)?(\d+)', text)
    assert [(kind, rank, link, num) for kind, rank, link, num in jobs] == [
        ("best", "1", "2/report.html", "2"), ("", "2", "0/report.html", "0"), ("failed", "", "", "1")]
    assert "data.root=/nowhere: no such folder" in text
    assert text.count('<img src="data:image/png') == 1


# --------------------------------------------------------------------------- in the browser
def assert_opens_clean(browser, report: Path, images: int, size=DESKTOP):
    page, problems = open_page(browser, report.as_uri(), size)
    assert problems.all() == []
    shown = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert shown == [True] * images
    assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
    return page


def test_a_sweep_report_opens_from_disk_with_its_plot_and_no_error(browser, tmp_path):
    photos = make_image_folder(tmp_path / "photos", classes=CLASSES, per_class_train=2, per_class_test=2)
    page = assert_opens_clean(browser, sweep_with_reports(tmp_path / "sweep", photos), images=1)
    assert page.locator("tbody tr").count() == 3
    page.get_by_role("link", name="2", exact=True).click()  # job 2's own report
    page.wait_for_load_state()
    assert page.url.endswith("/sweep/2/report.html") and page.inner_text("h1") == "Lettucify training report"
    page.context.close()


@pytest.mark.slow
def test_the_report_of_a_food16_run_opens_with_every_plot_and_no_error(browser, food16_model):
    run_dir = food16_model[0] / "train"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for size in (DESKTOP, PHONE):
        page = assert_opens_clean(browser, run_dir / "report.html", images=FIGURES, size=size)
        body = page.inner_text("body")
        assert f"{100 * metrics['top1']:.1f}%" in body and "fridge-serve version 1, alias @candidate" in body
        for row in metrics["per_class"]:
            assert row["class"] in body
        for heading in ("Configuration", "Dataset", "Training", "Test evaluation"):
            assert page.get_by_role("heading", name=heading, exact=True).count() == 1
        page.context.close()
