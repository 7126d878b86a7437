"""Sweeps that leave an answer: each job's result, the summary, the MLflow parent run."""

from __future__ import annotations

import csv
import json
import re
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import make_image_folder
from lettucify import checkpoint as ckpt
from lettucify.errors import LettucifyError
from lettucify.sweep import job as sweep_job
from lettucify.sweep.job import JobResult
from lettucify.sweep.summary import collect, command_line, write_summary

TINY = ["model=cnn16", "model.input_size=32", "data=imagefolder", "data.batch_size=8", "trainer.epochs=2",
        "registry.enabled=false", "trainer.progress=lines"]


def lettucify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lettucify", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def write_job(sweep_dir: Path, num: int, overrides, value=None, error=None, **metrics) -> None:
    status = "failed" if error else "completed"
    JobResult(num, list(overrides), status, "val_loss", value, metrics, error).write(sweep_dir / str(num))


# --------------------------------------------------------------------------- the summary alone
def test_the_summary_sorts_by_the_objective_and_puts_failed_jobs_last(tmp_path):
    for num, (lr, value) in enumerate([("1e-4", 0.9), ("3e-4", 0.4), ("1e-3", None), ("3e-3", 0.7)]):
        error = "data.root=/nowhere: no such folder" if value is None else None
        write_job(tmp_path, num, ["model=cnn16", f"optimizer.lr={lr}"], value, error,
                  **({"val_loss": value, "test_top1": 1 - value} if value else {}))
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a job killed before it could write its result
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text("- model=cnn16\n- optimizer.lr=1e-2\n")

    minimized = collect(tmp_path, "val_loss", maximize=False)
    assert [r.num for r in minimized.rows] == [1, 3, 0, 2, 4]
    assert minimized.swept == ["optimizer.lr"]  # model=cnn16 is the same in every job
    assert [r.num for r in minimized.failed] == [2, 4]
    assert "no result.json" in minimized.rows[-1].error and minimized.rows[-1].overrides[-1] == "optimizer.lr=1e-2"
    assert [r.num for r in collect(tmp_path, "val_loss", maximize=True).completed] == [0, 3, 1]

    summary, files = write_summary(tmp_path, "val_loss", maximize=False)
    assert [f.name for f in files] == ["summary.csv", "summary.md", "objective.png", "report.html"]
    rows = list(csv.DictReader(files[0].open()))
    assert [(r["job"], r["status"], r["optimizer.lr"]) for r in rows] == [
        ("1", "completed", "3e-4"), ("3", "completed", "3e-3"), ("0", "completed", "1e-4"),
        ("2", "failed", "1e-3"), ("4", "failed", "1e-2")]
    assert rows[0]["test_top1"] == "0.6" and rows[3]["error"] == "data.root=/nowhere: no such folder"
    text = files[1].read_text()
    assert "python -m lettucify model=cnn16 optimizer.lr=3e-4" in text
    assert "5 jobs: 3 completed, 2 failed" in text


def test_a_jobs_missing_objective_is_one_line_naming_what_it_returned():
    cfg = OmegaConf.create({"optimized_metric": "val_f1", "task": "train"})
    with pytest.raises(LettucifyError, match=r"optimized_metric=val_f1 is not a metric task=train returned "
                                             r"\(it returned: test_top1, val_acc\)"):
        sweep_job.objective(cfg, {"val_acc": 0.5, "test_top1": 0.4})
    assert sweep_job.objective(OmegaConf.create({"optimized_metric": "test_top1", "task": "train"}),
                               {"test_top1": 0.25}) == 0.25


# --------------------------------------------------------------------------- real sweeps
def test_a_2x2_sweep_has_four_child_runs_one_parent_and_a_summary_whose_best_line_reproduces_it(tmp_path):
    import mlflow

    photos = make_image_folder(tmp_path / "photos", per_class_train=8, per_class_test=2)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    done = lettucify("-m", *TINY, f"data.root={photos}", f"logger.tracking_uri={store}",
                     "optimized_metric=val_loss", "optimized_direction=minimize",
                     "optimizer.lr=1e-3,3e-3", "model.net.hidden_units=16,32", f"hydra.sweep.dir={sweep_dir}",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    # Every job returned its own last epoch's val_loss, and the summary is sorted by it.
    results = {int(p.name): JobResult.read(p) for p in sweep_dir.iterdir() if (p / "result.json").is_file()}
    assert sorted(results) == [0, 1, 2, 3]
    for num, result in results.items():
        history = ckpt.load(sweep_dir / str(num) / "checkpoints" / ckpt.LAST)["state"]["history"]
        assert result.status == "completed" and result.value == pytest.approx(history[-1]["val_loss"])
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [float(r["val_loss"]) for r in rows] == sorted(r.value for r in results.values())
    assert {(r["optimizer.lr"], r["model.net.hidden_units"]) for r in rows} == {
        ("0.001", "16"), ("0.001", "32"), ("0.003", "16"), ("0.003", "32")}
    best = results[int(rows[0]["job"])]

    # One parent run holding the sweep's overrides and the best job's metrics; four children.
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("lettucify").experiment_id])
    parent_id = json.loads((sweep_dir / "sweep.json").read_text())["mlflow_run_id"]
    parent = client.get_run(parent_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 5 and len(children) == 4
    assert parent.info.status == "FINISHED" and parent.data.params["optimizer.lr"] == "1e-3,3e-3"
    assert parent.data.metrics["val_loss"] == pytest.approx(best.value)
    assert {"summary.csv", "summary.md", "objective.png", "report.html"} <= {a.path for a in client.list_artifacts(parent_id)}
    # The sweep's report links to each job's, and each job's back to it.
    linked = re.findall(r'<a href="(\d+/report.html)">', (sweep_dir / "report.html").read_text())
    assert sorted(linked) == [f"{num}/report.html" for num in range(4)]
    for link in linked:
        assert 'href="../report.html"' in (sweep_dir / link).read_text()
    assert sorted(c.data.metrics["val_loss"] for c in children) == pytest.approx(sorted(r.value for r in results.values()))

    # The best command line, pasted, trains the same model to the same metric.
    command = next(line for line in (sweep_dir / "summary.md").read_text().splitlines()
                   if line.startswith("python -m lettucify "))
    assert command == command_line(best.overrides)
    rerun = tmp_path / "rerun"
    again = lettucify(*shlex.split(command)[3:], "logger=none", f"hydra.run.dir={rerun}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    history = ckpt.load(rerun / "checkpoints" / ckpt.LAST)["state"]["history"]
    assert history[-1]["val_loss"] == pytest.approx(best.value, rel=1e-6)


def test_a_failing_job_is_a_failed_row_the_others_finish_and_the_sweep_exits_1(tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class_train=6, per_class_test=2)
    sweep_dir = tmp_path / "sweep"
    done = lettucify("-m", *TINY, "logger=none", f"data.root={tmp_path / 'missing'},{photos}",
                     f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "sweep: 1 of 2 jobs failed (job 0:" in last and str(sweep_dir / "summary.md") in last
    assert "Traceback" not in done.stderr
    failed, completed = JobResult.read(sweep_dir / "0"), JobResult.read(sweep_dir / "1")
    assert failed.status == "failed" and "missing" in failed.error and failed.value is None
    assert completed.status == "completed" and not math.isnan(completed.value)
    assert (sweep_dir / "1" / "checkpoints" / ckpt.LAST).is_file()
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("1", "completed"), ("0", "failed")]
    assert rows[1]["error"] == failed.error


# --------------------------------------------------------------------------- Optuna
SEARCH = """# @package _global_
defaults:
  - override /hydra/sweeper: lettucify_optuna
hydra:
  mode: MULTIRUN
  sweeper:
    n_trials: 3
    sampler:
      n_startup_trials: 2
    params:
      optimizer.lr: tag(log, interval(1e-4, 1e-2))
"""


def optuna_search(tmp_path: Path, photos: Path, sweep_dir: Path) -> subprocess.Popen:
    """3 trials of the shipped search's sweeper and storage, over the learning rate of a tiny CNN."""
    searches = tmp_path / "searches"
    (searches / "hparams_search").mkdir(parents=True, exist_ok=True)
    (searches / "hparams_search" / "tiny.yaml").write_text(SEARCH)
    return subprocess.Popen(
        [sys.executable, "-m", "lettucify", *TINY, "logger=none", f"data.root={photos}", "hparams_search=tiny",
         f"hydra.searchpath=[file://{searches}]", f"hydra.sweep.dir={sweep_dir}", "optimized_metric=val_loss",
         "optimized_direction=minimize"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_an_optuna_search_reports_its_best_and_resumes_its_study_after_being_killed(tmp_path):
    import optuna
    import signal
    import time

    photos = make_image_folder(tmp_path / "photos", per_class_train=6, per_class_test=2)
    sweep_dir = tmp_path / "sweep"
    search = optuna_search(tmp_path, photos, sweep_dir)
    deadline = time.monotonic() + 300
    while not (sweep_dir / "2").is_dir() and search.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert search.poll() is None, search.communicate()[1][-3000:]
    os.killpg(search.pid, signal.SIGKILL)  # during the third trial: its job folder is made as it starts
    search.communicate()
    first = {n: (sweep_dir / str(n) / "result.json").read_text() for n in (0, 1)}
    study = optuna.load_study(study_name="lettucify", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    interrupted = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert [t.number for t in interrupted] == [2]

    resumed = optuna_search(tmp_path, photos, sweep_dir)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="lettucify", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3  # n_trials counts the first run's trials: one more ran
    assert {n: (sweep_dir / str(n) / "result.json").read_text() for n in (0, 1)} == first  # not rerun
    # The interrupted trial was asked again, with its values, in its own job folder.
    assert complete[-1].params == interrupted[0].params
    assert "2 trials ended, 1 interrupted ones asked again, 1 to go" in err
    results = [JobResult.read(sweep_dir / str(n)) for n in range(3)]
    assert all(r.status == "completed" for r in results) and not (sweep_dir / "3").exists()
    assert sorted(r.value for r in results) == pytest.approx(sorted(t.value for t in complete))

    best = yaml_load(sweep_dir / "optimization_results.yaml")
    assert best["best_value"] == pytest.approx(min(t.value for t in complete))
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert float(rows[0]["val_loss"]) == pytest.approx(best["best_value"])
    assert float(rows[0]["optimizer.lr"]) == pytest.approx(best["best_params"]["optimizer.lr"])


def yaml_load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))
