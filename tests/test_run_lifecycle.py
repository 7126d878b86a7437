"""One MLflow run per training, whatever happens to its process: killed, resumed, found stale."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_image_folder
from lettucify import checkpoint as ckpt

EPOCHS = 8
FAST = [
    "model=cnn16", "model.input_size=32", "data=imagefolder", "data.batch_size=8", "compute.num_threads=1",
    f"trainer.epochs={EPOCHS}", "registry.name=fridge-lifecycle",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fridge"), per_class_train=16, per_class_test=4)


def command(run_dir: Path, images: Path, uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lettucify", *FAST, f"data.root={images}", f"logger.tracking_uri={uri}",
            f"hydra.run.dir={run_dir}", *extra]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(uri: str) -> dict:
    store = client(uri)
    return {r.info.run_id: r for r in store.search_runs([e.experiment_id for e in store.search_experiments()])}


def kill_after_epochs(run_dir: Path, images: Path, uri: str, epochs: int) -> dict:
    """Start a training, SIGKILL it once it has checkpointed ``epochs``; return the checkpoint."""
    last = run_dir / "checkpoints" / ckpt.LAST
    process = subprocess.Popen(command(run_dir, images, uri), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if ckpt.load(last)["state"]["epoch"] >= epochs:
                break
        except Exception:  # not written yet, or being replaced
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    payload = ckpt.load(last)
    assert epochs <= payload["state"]["epoch"] < EPOCHS, stderr[-3000:]
    return payload


def test_a_killed_training_is_ended_killed_when_found_and_continued_when_resumed(images, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed_dir = tmp_path / "killed"
    payload = kill_after_epochs(killed_dir, images, uri, epochs=2)
    run_id = payload["mlflow_run_id"]
    assert runs(uri)[run_id].info.status == "RUNNING"  # nobody could end it

    # Another training in the same store finds the run stale: its process is gone.
    other = subprocess.run(command(tmp_path / "other", images, uri, "trainer.epochs=1"),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-3000:]
    assert f"run {run_id} was left RUNNING by process" in other.stderr
    stale = runs(uri)[run_id]
    assert stale.info.status == "KILLED"
    assert "killed" in stale.data.tags["lettucify.note"] and str(killed_dir) in stale.data.tags["lettucify.note"]

    # Rerunning the killed training's command continues its run, at the next epoch's step.
    resumed = subprocess.run(command(killed_dir, images, uri), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing run {run_id}" in resumed.stderr
    all_runs = runs(uri)
    assert len(all_runs) == 2 and all_runs[run_id].info.status == "FINISHED"
    steps = [m.step for m in client(uri).get_metric_history(run_id, "train_loss")]
    assert steps == list(range(1, EPOCHS + 1))
    assert "test_top1" in all_runs[run_id].data.metrics
    assert ckpt.load(killed_dir / "checkpoints" / ckpt.LAST)["mlflow_run_id"] == run_id
    versions = client(uri).search_model_versions("name = 'fridge-lifecycle'")
    assert sorted(v.run_id for v in versions) == sorted(all_runs)  # one version per training

    # A finished training rerun in its folder trains nothing more and registers nothing again.
    again = subprocess.run(command(killed_dir, images, uri), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not registering it again" in again.stderr
    assert len(client(uri).search_model_versions("name = 'fridge-lifecycle'")) == 2
    assert len(runs(uri)) == 2


def test_a_live_training_is_never_taken_for_a_stale_one(images, tmp_path):
    from lettucify.tracking import end_orphaned_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "live"
    last = run_dir / "checkpoints" / ckpt.LAST
    process = subprocess.Popen(command(run_dir, images, uri, "trainer.epochs=40"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not last.is_file() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert last.is_file(), "the training wrote no checkpoint"
        assert end_orphaned_runs(client(uri)) == []
        assert [r.info.status for r in runs(uri).values()] == ["RUNNING"]
    finally:
        process.kill()
        process.wait(timeout=30)
    (run_id,) = runs(uri)
    assert end_orphaned_runs(client(uri)) == [run_id]
