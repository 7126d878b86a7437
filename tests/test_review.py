"""experiments/review.py: what a change between two commits does to each experiment, as Markdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lettucify.config import REPO_ROOT
from lettucify.review.compose import job_config

SCRIPT = REPO_ROOT / "experiments" / "review.py"


def results(top1: float) -> dict:
    return {"experiment": "faster", "command": "python -m lettucify experiment=faster", "seeds": [0, 1],
            "metrics": {"test_top1": {"mean": top1, "std": 0.01, "per_seed": [top1, top1]}}, "dirty": False}


class Repo:
    """A git repository holding a copy of conf/ and experiments of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(REPO_ROOT / "conf", root / "conf")
        (root / "experiments" / "experiment").mkdir(parents=True)
        (root / "experiments" / "results").mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=self.root,
                              check=True, capture_output=True, text=True).stdout

    def write(self, path: str, text: str) -> None:
        (self.root / path).write_text(text)

    def experiment(self, name: str, body: str) -> None:
        self.write(f"experiments/experiment/{name}.yaml", "# @package _global_\n" + body)

    def commit(self) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "change")
        return self.git("rev-parse", "HEAD").strip()

    def review(self, base: str, head: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), base, head], cwd=self.root,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "repo")
    repo.experiment("faster", "optimizer:\n  lr: 1.0e-3\n")
    repo.experiment("own_decay", "optimizer:\n  weight_decay: 0.01\n")
    repo.write("experiments/results/faster.json", json.dumps(results(0.511)))
    repo.commit()
    return repo


def sections(markdown: str) -> dict:
    """Heading line -> the text below it, up to the next heading."""
    parts = markdown.split("\n### ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def test_a_changed_learning_rate_and_result_are_shown_old_to_new(repo):
    repo.experiment("faster", "optimizer:\n  lr: 3.0e-3\n")
    repo.write("experiments/results/faster.json", json.dumps(results(0.604)))
    repo.commit()
    done = repo.review("HEAD~1", "HEAD")
    assert done.returncode == 0, done.stderr
    found = sections(done.stdout)
    assert list(found) == ["`faster` (modified)"]
    body = found["`faster` (modified)"]
    config, recorded = body.split("Recorded results")
    assert "optimizer.lr: 0.001 -> 0.003" in config.splitlines()
    assert "metrics.test_top1.mean: 0.511 -> 0.604" in recorded.splitlines()
    assert "metrics.test_top1.per_seed: [0.511, 0.511] -> [0.604, 0.604]" in recorded.splitlines()


def test_a_new_experiment_shows_what_it_changes_from_the_defaults(repo):
    base = repo.git("rev-parse", "HEAD").strip()
    repo.experiment("longer", "trainer:\n  epochs: 40\n")
    repo.commit()
    found = sections(repo.review(base, "HEAD").stdout)
    assert list(found) == ["`longer` (new)"]
    default = job_config([])["trainer"]["epochs"]
    assert f"```text\ntrainer.epochs: {default} -> 40\n```" in found["`longer` (new)"]
    assert "None recorded." in found["`longer` (new)"]


def test_a_conf_change_lists_each_experiment_it_reaches(repo):
    repo.write("conf/optimizer/adamw.yaml", (REPO_ROOT / "conf/optimizer/adamw.yaml").read_text() + "weight_decay: 0.2\n")
    repo.commit()
    found = sections(repo.review("HEAD~1", "HEAD").stdout)
    # own_decay sets the weight decay itself: the change does not reach it.
    assert list(found) == ["the default config (changed through conf/)", "`faster` (changed through conf/)"]
    default = job_config(["optimizer=adamw"])["optimizer"]["weight_decay"]
    assert f"optimizer.weight_decay: {default} -> 0.2" in found["`faster` (changed through conf/)"].splitlines()


def test_an_experiment_that_no_longer_composes_is_reported(repo):
    repo.experiment("faster", "optimiser:\n  lr: 3.0e-3\n")
    repo.commit()
    done = repo.review("HEAD~1", "HEAD")
    assert done.returncode == 0
    assert "Key 'optimiser' not in 'Config'" in sections(done.stdout)["`faster` (modified)"]


def test_an_unknown_revision_is_one_line_and_status_2(repo):
    done = repo.review("no-such-branch", "HEAD")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no-such-branch" in done.stderr
