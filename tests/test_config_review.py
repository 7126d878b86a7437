"""`lettucify config show` and `lettucify config diff`: the resolved config, and what two configs differ in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lettucify.review.command import main
from lettucify.review.compose import job_config
from lettucify.review.diff import differences


def lettucify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "lettucify", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def imported(result: subprocess.CompletedProcess) -> set:
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}


def test_show_prints_the_resolved_config_sorted_without_hydra_or_torch(tmp_path):
    result = lettucify("config", "show", "experiment=food16_cnn16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = yaml.safe_load(result.stdout)
    assert shown == job_config(["experiment=food16_cnn16"])
    assert "hydra" not in shown and list(shown) == sorted(shown)
    assert shown["optimizer"]["lr"] == 3.0e-3 and shown["model"]["net"]["_target_"].endswith("CNN16")
    # The run folder is named as a run starts: shown as what names it.
    assert shown["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert "torch" not in imported(result) and "mlflow" not in imported(result)
    assert not (tmp_path / "outputs").exists()


def test_show_and_diff_mask_secrets(capsys):
    secret = "https://bob:pa55word-xyz@mlflow.example.com"
    assert main(["show", f"logger.tracking_uri='{secret}'"]) == 0
    out = capsys.readouterr().out
    assert "pa55word-xyz" not in out and "tracking_uri: https://bob:***@mlflow.example.com" in out
    assert main(["diff", "", f"logger.tracking_uri='{secret}'"]) == 1
    assert capsys.readouterr().out == "logger.tracking_uri: null -> https://bob:***@mlflow.example.com\n"


def test_diff_of_two_experiments_names_the_changed_learning_rate(tmp_path):
    result = lettucify("config", "diff", "experiment=food16_cnn16", "experiment=food16_refit", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    old, new = (job_config([f"experiment={name}"])["optimizer"]["lr"] for name in ("food16_cnn16", "food16_refit"))
    assert old != new and f"optimizer.lr: {old} -> {new}" in lines
    assert lines == sorted(lines)
    # Keys one side lacks: cnn16's channels, EfficientNet-Lite's variant.
    assert "model.net.channels: [16, 32] -> <absent>" in lines and "model.net.variant: <absent> -> lite0" in lines
    assert "torch" not in imported(result) and "mlflow" not in imported(result)


def test_diff_of_identical_configs_is_nothing_and_status_0(capsys):
    seed = job_config([])["seed"]
    # Composed twice, the run folder included (paths.output_dir): the same config.
    assert main(["diff", "experiment=food16_cnn16", f"experiment=food16_cnn16 seed={seed}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "no difference\n"


def test_diff_of_override_sets_is_each_changed_key():
    old = job_config(["optimizer.lr=1e-3", "model=cnn16"])
    new = job_config(["optimizer.lr=2e-3", "model=cnn16", "trainer.epochs=3"])
    default_epochs = job_config([])["trainer"]["epochs"]
    assert differences(old, new) == ["optimizer.lr: 0.001 -> 0.002", f"trainer.epochs: {default_epochs} -> 3"]


def run_folder(folder: Path, lr: float, hydra_yaml: bool = True) -> Path:
    """What Hydra leaves in a run folder: the config as composed (unresolved) and its own."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        "model:\n  input_size: 64\n  net:\n    input_size: ${..input_size}\noptimizer:\n"
        f"  lr: {lr}\npaths:\n  output_dir: ${{hydra:runtime.output_dir}}\ntask: train\n"
    )
    if hydra_yaml:
        (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    output_dir: {folder}\n  env: {{}}\n")
    return folder


def test_diff_of_run_folders_resolves_each_with_its_own_run(tmp_path, capsys):
    a, b = run_folder(tmp_path / "a", 0.001), run_folder(tmp_path / "b", 0.003)
    assert main(["diff", str(a), str(b)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "optimizer.lr: 0.001 -> 0.003",
        f"paths.output_dir: {a} -> {b}",
    ]
    assert main(["diff", str(a), str(run_folder(tmp_path / "c", 0.003, hydra_yaml=False))]) == 1
    assert "paths.output_dir: {} -> ${{hydra:runtime.output_dir}}".format(a) in capsys.readouterr().out


def test_diff_reads_the_config_an_mlflow_run_logged(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from lettucify.tracking import open_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = OmegaConf.create(job_config(["experiment=food16_cnn16"]))
    cfg.paths.output_dir = str(tmp_path)  # as the run's Hydra set it
    with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]) as tracker:
        run_id = tracker.run_id
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert main(["diff", f"runs:/{run_id}", "experiment=food16_cnn16", "--tracking-uri", uri]) == 1
    # The run's folder is the one difference from the same experiment composed now.
    assert capsys.readouterr().out == f"paths.output_dir: {tmp_path} -> ${{hydra:runtime.output_dir}}\n"
    assert main(["diff", f"mlflow:{run_id}", "experiment=food16_refit", "--tracking-uri", uri]) == 1
    assert "optimizer.lr: 0.003 -> 0.001" in capsys.readouterr().out.splitlines()
    assert main(["diff", "runs:/0123456789abcdef", "", "--tracking-uri", uri]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err


@pytest.mark.parametrize(
    "side, message",
    [
        ("experiment=no_such_experiment", "experiment=no_such_experiment: no such option; experiment is one of "),
        ("optimizer.lr=0", "optimizer.lr=0.0: must be greater than 0"),
        ("optimiser.lr=1e-3", "optimiser.lr=1e-3: unknown key, Config has no such field; did you mean optimizer?"),
        ("no/such/run/folder", "'no/such/run/folder': no such run folder"),
        (".", "not a run folder (no .hydra/config.yaml)"),
        ("runs:/abc", "no MLflow store at"),
    ],
)
def test_a_bad_side_is_one_line_and_status_2(side, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    assert main(["diff", "", side]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and message in captured.err
    assert not (tmp_path / "none").exists()  # no store made by asking


def test_a_bad_side_from_the_command_line_has_no_traceback(tmp_path):
    result = lettucify("config", "diff", "experiment=no_such_experiment", "", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if "|" not in line]  # importtime's own
    assert len(lines) == 1 and lines[0].startswith("lettucify config diff: ")
