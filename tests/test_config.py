"""Composition: group choices, experiments and the schema rejecting bad overrides (every option and
experiment composing and resolving: tests/test_config_composition.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lettucify.config import REPO_ROOT

def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_group_choice_changes_the_config():
    cfg = compose_cfg(["model=cnn16", "optimizer=sgd", "scheduler=constant"])
    assert cfg.model.net._target_ == "lettucify.models.cnn16.CNN16"
    assert cfg.model.input_size == 64
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler._target_.endswith(".constant")


def test_experiment_overrides_groups_and_primary_values():
    cfg = compose_cfg(["experiment=food16_cnn16"])
    assert cfg.model.net._target_.endswith("CNN16")
    assert cfg.trainer.epochs == 30
    # A command-line override still wins over the experiment.
    assert compose_cfg(["experiment=food16_cnn16", "trainer.epochs=2"]).trainer.epochs == 2


def base_of(path: Path):
    """What a YAML option starts from: its schema (``/schema/<group>@_here_: <name>``) or
    another option of its group (``- efficientnet_lite0``), composed the same way."""
    from lettucify.config import _SCHEMAS

    first = OmegaConf.load(path).defaults[0]
    if isinstance(first, str):
        return option_config(path.with_name(f"{first}.yaml"))
    (key, name), = first.items()
    return OmegaConf.structured(_SCHEMAS[key.split("/")[2].split("@")[0]][name])


def option_config(path: Path):
    own = OmegaConf.load(path)
    del own["defaults"]
    return OmegaConf.merge(base_of(path), own)


def repeated_defaults(own: dict, base: dict, prefix: str = ""):
    """The dotted keys that ``own`` sets to the value ``base`` already has."""
    for key, value in own.items():
        if key not in base or base[key] == "???":
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            yield from repeated_defaults(value, base[key], f"{prefix}{key}.")
        elif value == base[key]:
            yield f"{prefix}{key}={value}"


# Options of a schema's group; a _global_ one (hparams_search=) sets keys of several groups.
SCHEMA_OPTIONS = sorted(p for p in (REPO_ROOT / "conf").glob("*/*.yaml")
                        if not p.read_text().startswith("# @package _global_"))


@pytest.mark.parametrize("path", SCHEMA_OPTIONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_option_sets_only_what_differs_from_its_schema(path):
    """Each default lives in one place, the schema: an option repeating one could drift from it."""
    own = OmegaConf.to_container(OmegaConf.load(path))
    del own["defaults"]
    base = OmegaConf.to_container(base_of(path), enum_to_str=True)
    assert list(repeated_defaults(own, base)) == [], f"{path.name} repeats the schema's defaults"


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.epohcs=3", "Key 'epohcs' not in 'TrainerConf'"),
        ("model.net.chanels=[8,16]", "Key 'chanels' not in 'CNN16NetConf'"),
        ("trainer.epochs=three", "Value 'three' of type 'str' could not be converted to Integer"),
        ("data.on_bad_image=ignore", "Invalid value 'ignore', expected one of [skip, fail]"),
        ("optimizer.lr=fast", "could not be converted to Float"),
        ("trainer.progress=fancy", "expected one of [auto, bar, lines]"),
    ],
)
def test_schema_rejects_bad_overrides(override, message):
    overrides = ["model=cnn16", override] if "chanels" in override else [override]
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(overrides)
    assert message in str(err.value.__cause__ or err.value)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lettucify", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.mark.parametrize("flag", ["--help", "--cfg=job", "--info"])
def test_cli_flags_answer_without_importing_torch(flag, tmp_path):
    result = run_cli(flag, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "mlflow" not in imported
    assert not (tmp_path / "outputs").exists()


def test_help_lists_each_config_group_with_its_options_and_the_typed_config(tmp_path):
    # --help lists groups through copies of Hydra's config repository, which share the
    # ConfigStore (lettucify.config.share_config_store): the schema must still be found.
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compute: azure_nc6, azure_t4, local_cpu, local_gpu, torchrun\n" in result.stdout
    assert "model: cnn16, efficientnet_lite0, efficientnet_lite2\n" in result.stdout
    assert "schema/model: cnn16, efficientnet_lite\n" in result.stdout  # from the ConfigStore
    assert "cache_max_gb: 8.0" in result.stdout  # a schema default that no YAML file sets
