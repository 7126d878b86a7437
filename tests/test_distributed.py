"""Two processes on CPU (gloo) through torchrun: the same training, counted once, one writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import make_image_folder
from lettucify import checkpoint as ckpt

# No randomness that depends on how a batch is split over processes (dropout, MixUp),
# and batches that divide evenly, so 1 and 2 processes must compute the same steps.
EXACT = [
    "model=cnn16", "model.input_size=32", "model.net.dropout=0", "data=imagefolder",
    "data.batch_size=8", "data.val_fraction=0", "trainer.mixup_alpha=0", "trainer.cutmix_alpha=0",
    "trainer.epochs=2", "logger=none",
]
TWO = ["compute=torchrun", "compute.nproc_per_node=2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    # 48 training photos (6 full batches of 8) and 15 test photos (odd: shards differ).
    root = make_image_folder(tmp_path_factory.mktemp("fridge"), classes=("a", "b", "c"),
                             per_class_train=16, per_class_test=5)
    (root / "train" / "a" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")  # skipped
    return root


def lettucify(run_dir: Path, *overrides: str, timeout: float = 300, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "lettucify", *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


@pytest.fixture(scope="module")
def two_process_result(images, tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("two")
    result = lettucify(run_dir, *EXACT, *TWO, f"data.root={images}")
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, result.stderr


@pytest.fixture(scope="module")
def two_process_run(two_process_result) -> Path:
    return two_process_result[0]


def test_only_rank_zero_scans_the_images(two_process_result):
    """The other rank gets rank 0's scan: one report of the bad file, not one per rank."""
    _, stderr = two_process_result
    assert stderr.count("skipping bad image") == 1
    assert "[rank 0]" in stderr.split("skipping bad image")[0].splitlines()[-1]


def test_two_processes_train_the_same_weights_as_one(two_process_run, images, tmp_path):
    result = lettucify(tmp_path, *EXACT, "compute.num_threads=1", f"data.root={images}")
    assert result.returncode == 0, result.stderr[-3000:]
    one = ckpt.load(tmp_path / "checkpoints" / ckpt.LAST)
    two = ckpt.load(two_process_run / "checkpoints" / ckpt.LAST)
    assert one["state"]["epoch"] == two["state"]["epoch"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert not torch.equal(one["model"]["classifier.weight"], torch.zeros_like(one["model"]["classifier.weight"]))


def test_two_process_evaluation_counts_every_test_photo_once(two_process_run, images, tmp_path):
    distributed_metrics = json.loads((two_process_run / "metrics.json").read_text())
    assert distributed_metrics["num_images"] == 15
    assert sum(row["support"] for row in distributed_metrics["per_class"]) == 15

    result = lettucify(tmp_path, "task=evaluate", *EXACT, f"data.root={images}",
                       f"checkpoint={two_process_run / 'checkpoints' / ckpt.LAST}")
    assert result.returncode == 0, result.stderr[-3000:]
    single = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("top1", "top5", "macro_f1", "macro_auc", "log_loss"):
        assert distributed_metrics[key] == pytest.approx(single[key], abs=1e-6), key


def test_only_rank_zero_writes_a_run_folder_and_an_mlflow_run(images, tmp_path):
    from mlflow import MlflowClient

    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    exact = [o for o in EXACT if o != "logger=none"]
    result = lettucify(tmp_path / "run", *exact, *TWO, f"data.root={images}", f"logger.tracking_uri={uri}",
                       "registry.enabled=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing but the one run folder and the MLflow store: no folders made by other ranks.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "store"]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2]


def worker_pids(config: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # The workers, not torchrun's agent (whose command line names them too).
            if b"lettucify.worker" in cmdline and str(config).encode() in cmdline \
                    and b"lettucify.compute.torchrun" not in cmdline:
                pids.append(int(proc.name))
    return pids


def kill_a_worker_after_first_epoch(process: subprocess.Popen, run_dir: Path) -> None:
    last = run_dir / "checkpoints" / ckpt.LAST
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if ckpt.load(last)["state"]["epoch"] >= 1:
                pids = worker_pids(run_dir / "resolved_config.yaml")
                if pids:
                    os.kill(max(pids), signal.SIGKILL)
                    return
        except Exception:  # not written yet, or being replaced
            pass
        time.sleep(0.02)
    raise AssertionError(f"no worker to kill; exit {process.poll()}")


def start(run_dir: Path, images: Path, *extra: str, base: list[str] = EXACT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lettucify", *base, *TWO, f"data.root={images}", "trainer.epochs=12",
         f"hydra.run.dir={run_dir}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_a_killed_worker_is_restarted_and_training_finishes_in_one_mlflow_run(images, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    tracked = [o for o in EXACT if o != "logger=none"]
    process = start(run_dir, images, "compute.max_restarts=1", f"logger.tracking_uri={uri}", "registry.enabled=false",
                    base=tracked)
    kill_a_worker_after_first_epoch(process, run_dir)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-12000:]
    assert "resuming from" in output
    assert ckpt.load(run_dir / "checkpoints" / ckpt.LAST)["state"]["epoch"] == 12
    # The restarted rank 0 continued the run its checkpoint named.
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(1, 13))


def test_a_killed_worker_without_restarts_fails_the_job_naming_the_rank(images, tmp_path):
    process = start(tmp_path, images, "compute.max_restarts=0", "compute.collective_timeout_s=30")
    kill_a_worker_after_first_epoch(process, tmp_path)
    output, _ = process.communicate(timeout=180)  # bounded: a hang fails the test here
    assert process.returncode != 0
    assert "rank" in output and "SIGKILL" in output
    assert "the workers failed with exit status" in output


def test_sigterm_to_the_launcher_checkpoints_the_workers_and_exits_75(images, tmp_path):
    process = start(tmp_path, images)
    last = tmp_path / "checkpoints" / ckpt.LAST
    deadline = time.monotonic() + 120
    while not last.is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    workers = worker_pids(tmp_path / "resolved_config.yaml")
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 75, output[-4000:]
    assert output.count("finishing this step, then writing a checkpoint") == 2  # both ranks
    assert "Traceback" not in output
    state = ckpt.load(last)["state"]
    assert state["epoch"] < 12 and state["steps"] == state["epoch"] * 6 + state["step_in_epoch"]
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_global_batch_must_divide_by_the_processes(images, tmp_path):
    result = lettucify(tmp_path, *EXACT, *TWO, "data.batch_size=7", f"data.root={images}")
    assert result.returncode != 0
    assert "data.batch_size=7 is the global batch and must divide by the 2 processes" in result.stderr
