"""CI sets up exactly as the README says: .ci/run runs the README's set-up lines, verbatim.

The lines are the ```bash block between <!-- setup:start --> and <!-- setup:end --> in
README.md; .ci/setup-lines prints them and .ci/run runs what it prints, installing nothing
of its own. Here .ci/run itself runs against fake python3/pip/python that log their calls.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
CI_RUN = REPO_ROOT / ".ci" / "run"
SETUP_LINES = REPO_ROOT / ".ci" / "setup-lines"

SETUP_COMMANDS = [
    ["apt-get", "update", "-qq", "&&", "apt-get", "install", "-y", "-qq", "chromium"],
    ["python3", "-m", "venv", ".venv", "&&", ".", ".venv/bin/activate", "&&",
     "pip", "install", "-e", ".[dev]", "-e", "./launchers/hydra_azureml_launcher", "-e",
     "./launchers/hydra_optuna_resume_sweeper"],
]


def readme_setup_lines(text: str) -> List[str]:
    blocks = re.findall(
        r"^<!-- setup:start -->\n```bash\n(.*?)^```\n<!-- setup:end -->$", text, re.S | re.M
    )
    assert len(blocks) == 1, "README.md needs one ```bash block between <!-- setup:start --> and <!-- setup:end -->"
    return [line for line in blocks[0].splitlines() if line.strip()]


def test_readme_has_the_two_setup_commands():
    lines = readme_setup_lines(README.read_text())
    assert [shlex.split(line, comments=True) for line in lines] == SETUP_COMMANDS


def test_setup_lines_prints_the_readme_block():
    printed = subprocess.run([str(SETUP_LINES)], capture_output=True, text=True, check=True).stdout
    assert printed.splitlines() == readme_setup_lines(README.read_text())


def test_ci_run_takes_its_setup_from_the_readme():
    code = "\n".join(line.split("#")[0] for line in CI_RUN.read_text().splitlines())
    assert ".ci/setup-lines" in code
    assert not re.search(r"\bpip\b|-m venv|activate", code), ".ci/run must set up only through the README's lines"


def fake_tool(path: Path, name: str, exit_code: str = "0") -> None:
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >> "$CI_LOG"\nexit {exit_code}\n')
    path.chmod(0o755)


@pytest.fixture
def ci_checkout(tmp_path: Path) -> Path:
    """README.md and .ci/ in a bare folder, with python3 on PATH making a fake venv."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(README, repo / "README.md")
    for script in (CI_RUN, SETUP_LINES):
        shutil.copy2(script, repo / ".ci" / script.name)
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text('export VIRTUAL_ENV="$PWD/.venv"\nexport PATH="$VIRTUAL_ENV/bin:$PATH"\n')
    fake_tool(venv / "bin" / "pip", "pip", exit_code="${FAKE_PIP_EXIT:-0}")
    fake_tool(venv / "bin" / "python", "python")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir / "apt-get", "apt-get")
    (bin_dir / "python3").write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "python3 $*" >> "$CI_LOG"\ncp -r {shlex.quote(str(venv))} .venv\n'
    )
    (bin_dir / "python3").chmod(0o755)
    return repo


def run_ci(repo: Path, **env: str) -> tuple[subprocess.CompletedProcess, List[str]]:
    log = repo.parent / "calls.log"
    log.touch()
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}", "CI_LOG": str(log), **env}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run([str(repo / ".ci" / "run"), "-q"], env=env, capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


def test_ci_run_runs_the_readme_lines_in_a_fresh_venv_then_pytest(ci_checkout: Path):
    (ci_checkout / ".venv").mkdir()
    (ci_checkout / ".venv" / "stale").touch()
    result, calls = run_ci(ci_checkout)
    assert result.returncode == 0, result.stderr
    assert calls == [
        "apt-get update -qq",
        "apt-get install -y -qq chromium",
        "python3 -m venv .venv",
        # through the venv's activation
        "pip install -e .[dev] -e ./launchers/hydra_azureml_launcher -e ./launchers/hydra_optuna_resume_sweeper",
        "python -m pytest -q",
    ]
    assert not (ci_checkout / ".venv" / "stale").exists()


def test_ci_run_fails_when_a_setup_line_fails(ci_checkout: Path):
    result, calls = run_ci(ci_checkout, FAKE_PIP_EXIT="1")
    assert result.returncode != 0
    assert not any(call.startswith("python -m pytest") for call in calls)


def test_ci_run_fails_without_the_readme_markers(ci_checkout: Path):
    readme = ci_checkout / "README.md"
    readme.write_text(readme.read_text().replace("<!-- setup:start -->", ""))
    result, calls = run_ci(ci_checkout)
    assert result.returncode != 0 and calls == []
    assert "setup:start" in result.stderr
