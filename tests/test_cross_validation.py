"""data.cv_folds: stratified folds, a training per fold, the final model on every photo, resume."""

from __future__ import annotations

import logging
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import make_image_folder
from lettucify import checkpoint as ckpt
from lettucify.data.datamodule import ImageFolderData, stratified_folds
from lettucify.errors import ConfigError, DataError

CLASSES = ("apple", "cheese", "lettuce")
FOLDS = 3
EPOCHS = 2
# 24 training photos in batches of 8: a fold trains on 16 (2 steps an epoch), the final model on 24 (3).
SMALL = [
    "model=cnn16", "model.input_size=32", "data=imagefolder", "data.batch_size=8",
    f"trainer.epochs={EPOCHS}", "compute.num_threads=1",
]
FAST = [*SMALL, f"data.cv_folds={FOLDS}", "logger=none"]
# Values that depend on the clock, not on what was trained.
TIMED = ("train_time_s", "epoch_time_s", "images_per_s")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fridge"), classes=CLASSES, per_class_train=8, per_class_test=4)


def compose_cfg(images: Path, run_dir: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    from lettucify.config import REPO_ROOT, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"data.root={images}", f"paths.output_dir={run_dir}", *extra])


def train(images: Path, run_dir: Path, *extra: str) -> dict:
    from lettucify.train.pipeline import train as train_job

    return train_job(compose_cfg(images, run_dir, *extra))


def checkpoint(run_dir: Path, fold: int | None = None) -> dict:
    folder = run_dir / "checkpoints" if fold is None else run_dir / "folds" / str(fold) / "checkpoints"
    return ckpt.load(folder / ckpt.LAST)


@pytest.fixture(scope="module")
def job(images, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted cv_folds=3 job: (run folder, what it returned)."""
    run_dir = tmp_path_factory.mktemp("cv")
    return run_dir, train(images, run_dir)


# --------------------------------------------------------------------------- the folds
def test_folds_are_stratified_disjoint_complete_and_deterministic(caplog):
    sizes = {"one": 1, "two": 2, "five": 5, "twenty": 20}
    classes = sorted(sizes)
    samples = [(Path(f"{cls}/{n}.jpg"), label) for label, cls in enumerate(classes) for n in range(sizes[cls])]
    with caplog.at_level(logging.WARNING, logger="lettucify.data.datamodule"):
        folds = stratified_folds(samples, classes, 3, seed=3)
    assert sorted(sample for fold in folds for sample in fold) == sorted(samples)  # disjoint, and all of them
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for label, cls in enumerate(classes):
        counts = [sum(sample_label == label for _, sample_label in fold) for fold in folds]
        assert max(counts) - min(counts) <= 1, (cls, counts)  # "one" and "two": each photo in its own fold
    assert "class one has 1 training photos, fewer than data.cv_folds=3" in caplog.text
    assert "class two has 2 training photos" in caplog.text and "class five" not in caplog.text
    assert stratified_folds(samples, classes, 3, seed=3) == folds
    assert stratified_folds(samples, classes, 3, seed=4) != folds


def test_the_scan_deals_every_training_photo_into_folds(image_folder):
    data = ImageFolderData(name="tiny", root=str(image_folder), cv_folds=3, val_fraction=0.3)
    scan = data.scan()
    assert scan.val == [] and len(scan.train) == 24  # no validation split: the folds replace it
    fold_scans = scan.fold_scans()
    assert [len(fold.val) for fold in fold_scans] == [8, 8, 8]
    for fold in fold_scans:
        assert sorted(fold.train + fold.val) == sorted(scan.train) and not set(fold.train) & set(fold.val)
        assert fold.test == scan.test and fold.fold_scans() == []
    assert sorted(sample for fold in fold_scans for sample in fold.val) == sorted(scan.train)

    with pytest.raises(DataError, match=r"data.cv_folds=25 needs at least 25 training photos; .*train has 24"):
        ImageFolderData(name="tiny", root=str(image_folder), cv_folds=25).scan()


def test_the_trainings_of_a_job_decode_each_training_photo_once(image_folder, tmp_path, monkeypatch):
    from lettucify.data import cache, datamodule

    data = ImageFolderData(name="tiny", root=str(image_folder), cv_folds=3, cache_dir=str(tmp_path))
    scan = data.scan()
    decoded = []
    real_load_rgb = datamodule.load_rgb

    def counted_load_rgb(path, *args, **kwargs):
        decoded.append(path)
        return real_load_rgb(path, *args, **kwargs)

    # Wherever a training photo is decoded: in the dataset, or once into the data cache.
    monkeypatch.setattr(datamodule, "load_rgb", counted_load_rgb)
    monkeypatch.setattr(cache, "load_rgb", counted_load_rgb)
    for split in [*scan.fold_scans(), scan]:  # each fold's training set, then the final one
        data.build(split, 32, (0.5,) * 3, (0.5,) * 3)
        for index in range(len(data.train_set)):
            data.train_set[index]
    assert sorted(decoded) == sorted(path for path, _ in scan.train)


# --------------------------------------------------------------------------- the job
def test_the_job_returns_the_folds_mean_and_trains_the_final_model_on_every_photo(job):
    run_dir, result = job
    last_epochs = [checkpoint(run_dir, fold)["state"]["history"][-1] for fold in range(1, FOLDS + 1)]
    for fold, record in enumerate(last_epochs, 1):
        assert result[f"fold{fold}/val_acc"] == record["val_acc"]
        assert result[f"fold{fold}/val_loss"] == record["val_loss"]
        assert result[f"fold{fold}/train_loss"] == record["train_loss"]
    for key in ("val_acc", "val_loss"):
        values = [record[key] for record in last_epochs]
        assert result[key] == pytest.approx(statistics.fmean(values))
        assert result[f"{key}_std"] == pytest.approx(statistics.stdev(values))

    final = checkpoint(run_dir)
    assert final["state"]["steps"] == EPOCHS * 3  # 24 photos, 3 batches an epoch
    assert all(checkpoint(run_dir, fold)["state"]["steps"] == EPOCHS * 2 for fold in range(1, FOLDS + 1))
    assert all("val_acc" not in record for record in final["state"]["history"])  # nothing held out
    assert result["train_loss"] == final["state"]["history"][-1]["train_loss"]
    assert 0 <= result["test_top1"] <= 1 and (run_dir / "metrics.json").is_file()
    trainings = [final, *(checkpoint(run_dir, fold) for fold in range(1, FOLDS + 1))]
    epoch_times = [record["epoch_time_s"] for training in trainings for record in training["state"]["history"]]
    assert result["train_time_s"] == pytest.approx(sum(epoch_times))


def test_an_interrupted_fold_resumes_exactly_and_finished_folds_are_not_retrained(
    job, images, tmp_path, monkeypatch, caplog
):
    from lettucify.train import loop

    epochs_started = []

    def stop_in_fold_2s_second_epoch(*args, **kwargs):
        epochs_started.append(True)
        if len(epochs_started) == EPOCHS + 2:
            kwargs["stop"].request(signal.SIGTERM)  # the epoch stops after its first step
        return real_train_one_epoch(*args, **kwargs)

    real_train_one_epoch = loop.train_one_epoch
    monkeypatch.setattr(loop, "train_one_epoch", stop_in_fold_2s_second_epoch)
    with pytest.raises(SystemExit) as stopped:
        train(images, tmp_path)
    assert stopped.value.code == 75
    assert f"Rerun the same command (with hydra.run.dir={tmp_path}) to continue" in caplog.text
    assert (checkpoint(tmp_path, 2)["state"]["epoch"], checkpoint(tmp_path, 2)["state"]["step_in_epoch"]) == (1, 1)
    assert not (tmp_path / "folds" / "3").exists() and not (tmp_path / "checkpoints").exists()
    monkeypatch.undo()

    fold_1 = tmp_path / "folds" / "1" / "checkpoints" / ckpt.LAST
    written = (fold_1.stat().st_mtime_ns, fold_1.read_bytes())
    with caplog.at_level(logging.INFO, logger="lettucify"):
        result = train(images, tmp_path)
    assert (fold_1.stat().st_mtime_ns, fold_1.read_bytes()) == written
    assert f"resuming from {fold_1}: {EPOCHS} epochs done" in caplog.text
    fold_2 = tmp_path / "folds" / "2" / "checkpoints" / ckpt.LAST
    assert f"resuming from {fold_2}: 1 epochs done, 1 steps into the next" in caplog.text

    reference_dir, reference = job
    for key in checkpoint(reference_dir)["model"]:
        assert torch.equal(checkpoint(tmp_path)["model"][key], checkpoint(reference_dir)["model"][key]), key
    assert result.keys() == reference.keys()
    # An epoch resumed mid-way averages its training loss over the steps after the resume
    # (the loop's way for any run); its weights and validation are exact.
    partial = ("fold2/train_loss", "fold2/train_acc")
    assert {k: v for k, v in result.items() if not k.endswith(TIMED) and k not in partial} == {
        k: v for k, v in reference.items() if not k.endswith(TIMED) and k not in partial
    }


def test_resuming_a_job_from_one_checkpoint_file_is_refused(job, images, tmp_path):
    named = job[0] / "checkpoints" / ckpt.LAST
    with pytest.raises(ConfigError, match=rf"trainer.resume={named}: a data.cv_folds job resumes from its run folder"):
        train(images, tmp_path, f"trainer.resume={named}")


# --------------------------------------------------------------------------- MLflow
def test_one_mlflow_run_holds_each_folds_epochs_and_the_folds_mean(images, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lettucify", *SMALL, "data.cv_folds=2", f"data.root={images}",
         f"logger.tracking_uri={uri}", "registry.enabled=false", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics, run_id = run.data.metrics, run.info.run_id
    fold_acc = []
    for fold in (1, 2):
        history = client.get_metric_history(run_id, f"fold{fold}/val_acc")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        assert [m.value for m in history] == pytest.approx(
            [record["val_acc"] for record in checkpoint(run_dir, fold)["state"]["history"]]
        )
        fold_acc.append(metrics[f"fold{fold}/val_acc"])
    assert metrics["val_acc"] == pytest.approx(statistics.fmean(fold_acc))
    assert metrics["val_acc_std"] == pytest.approx(statistics.stdev(fold_acc))
    assert {"val_loss", "val_loss_std", "test_top1"} <= metrics.keys()
    # The final model's epochs, unprefixed; its checkpoint names the job's run.
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(1, EPOCHS + 1))
    assert checkpoint(run_dir)["mlflow_run_id"] == run_id
