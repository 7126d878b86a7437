"""The main job end to end on generated images: learning, checkpoints, resume, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import make_image_folder
from lettucify import checkpoint as ckpt

CLASSES = ("apple", "cheese", "lettuce")
# Small and quick, but with enough steps per epoch that a signal lands mid-epoch.
FAST = [
    "model=cnn16",
    "model.input_size=32",
    "data=imagefolder",
    "data.batch_size=8",
    "data.val_fraction=0.2",
    "trainer.epochs=6",
    "optimizer.lr=3e-3",
    "compute.num_threads=1",
    "logger=none",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(
        tmp_path_factory.mktemp("fridge"), classes=CLASSES, per_class_train=24, per_class_test=6
    )


def command(run_dir: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lettucify", *FAST, f"data.root={root}", f"hydra.run.dir={run_dir}", *extra]


def run(run_dir: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command(run_dir, root, *extra), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(run_dir / "checkpoints" / ckpt.LAST)["model"]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """One uninterrupted run that the other tests compare against."""
    run_dir = tmp_path_factory.mktemp("reference")
    run(run_dir, images)
    return run_dir


def test_loss_falls_and_the_model_learns(reference):
    payload = ckpt.load(reference / "checkpoints" / ckpt.LAST)
    history = payload["state"]["history"]
    assert len(history) == 6
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    # Three classes: chance is a third.
    assert payload["state"]["best_val_acc"] > 0.6
    assert payload["classes"] == list(CLASSES)
    assert payload["preprocess"] == {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert payload["config"]["model"]["net"]["_target_"] == "lettucify.models.cnn16.CNN16"
    assert (reference / "checkpoints" / ckpt.BEST).is_file()
    assert (reference / "metrics.json").is_file()


def test_same_seed_gives_identical_weights(reference, images, tmp_path):
    run(tmp_path, images)
    assert_identical(weights(reference), weights(tmp_path))


def wait_for_checkpoint(process: subprocess.Popen, path: Path, epochs_done: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file():
            try:
                if ckpt.load(path)["state"]["epoch"] >= epochs_done:
                    return
            except Exception:  # being replaced right now: try again
                pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint with {epochs_done} epochs at {path}; exit {process.poll()}")


def test_killed_run_resumes_to_identical_weights(reference, images, tmp_path):
    last = tmp_path / "checkpoints" / ckpt.LAST
    process = subprocess.Popen(command(tmp_path, images), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(process, last, epochs_done=2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = ckpt.load(last)["state"]["epoch"]
    assert killed_at < 6, "the run finished before it was killed"

    result = run(tmp_path, images)  # the same command, the same run folder
    assert f"resuming from {last}: {killed_at} epochs done" in result.stderr
    assert_identical(weights(reference), weights(tmp_path))


def test_sigterm_checkpoints_mid_epoch_and_resume_is_exact(reference, images, tmp_path):
    last = tmp_path / "checkpoints" / ckpt.LAST
    process = subprocess.Popen(
        command(tmp_path, images), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for_checkpoint(process, last, epochs_done=1)
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr[-2000:]
    assert "received SIGTERM" in stderr

    state = ckpt.load(last)["state"]  # loadable, and it says where it stopped
    assert 1 <= state["epoch"] < 6
    assert state["step_in_epoch"] > 0 or "stopped in epoch" not in stderr

    run(tmp_path, images)
    assert_identical(weights(reference), weights(tmp_path))


def test_a_stop_during_the_last_step_of_an_epoch_ends_that_epoch_first(reference, images, tmp_path, monkeypatch):
    """The signal can land while an epoch's final step runs; the checkpoint must still resume."""
    from hydra import compose, initialize_config_dir

    from lettucify.config import REPO_ROOT, register_configs
    from lettucify.train import loop, pipeline

    epoch_of_the_signal = 2
    calls = []

    def signalled_in_the_last_step(*args, **kwargs):
        stats = real_train_one_epoch(*args, **kwargs)
        calls.append(stats)
        if len(calls) == epoch_of_the_signal:
            kwargs["stop"].request(signal.SIGTERM)  # after the last step ran
        return stats

    real_train_one_epoch = loop.train_one_epoch
    monkeypatch.setattr(loop, "train_one_epoch", signalled_in_the_last_step)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, f"data.root={images}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as stopped:
        pipeline.train(cfg)
    assert stopped.value.code == 75
    state = ckpt.load(tmp_path / "checkpoints" / ckpt.LAST)["state"]
    assert (state["epoch"], state["step_in_epoch"]) == (epoch_of_the_signal, 0)
    assert len(state["history"]) == epoch_of_the_signal  # the epoch was validated and recorded

    run(tmp_path, images)
    assert_identical(weights(reference), weights(tmp_path))


def test_resume_with_other_classes_is_refused_in_one_line(reference, tmp_path):
    other = make_image_folder(tmp_path / "other", classes=("egg", "milk", "tofu"), per_class_train=4, per_class_test=2)
    result = subprocess.run(
        command(tmp_path / "run", other, f"trainer.resume={reference / 'checkpoints' / ckpt.LAST}"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "was trained on classes ['apple', 'cheese', 'lettuce']" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_root_is_one_line_and_nonzero(tmp_path):
    result = subprocess.run(
        command(tmp_path / "run", tmp_path / "nowhere"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert str(tmp_path / "nowhere") in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_task_reproduces_the_training_run_metrics(reference, images, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "task=evaluate", *FAST, f"data.root={images}",
         f"checkpoint={reference / 'checkpoints' / ckpt.LAST}", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((reference / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated == trained
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "learning_curves.png").is_file()


def test_evaluate_task_needs_a_model(images, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "task=evaluate", *FAST, f"data.root={images}", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "needs exactly one of checkpoint=" in result.stderr and "Traceback" not in result.stderr


def test_mixed_precision_path_trains_on_cpu(images, tmp_path):
    # The GPU's autocast path, exercised with bfloat16 on the CPU.
    run(tmp_path, images, "compute.amp=true", "compute.amp_dtype=bfloat16", "trainer.epochs=3")
    history = ckpt.load(tmp_path / "checkpoints" / ckpt.LAST)["state"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
