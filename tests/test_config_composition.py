"""Every option of every config group and every experiment composes against the schema,
passes the value checks and resolves; a typo in an experiment file is caught the same way.

The groups are the folders of conf/, found by listing it, so a group added later is
checked too. Composition is lettucify.review.compose.job_config, what
`lettucify config show` prints and experiments/review.py diffs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lettucify.config import REPO_ROOT
from lettucify.errors import ConfigError
from lettucify.review.compose import EXPERIMENTS, experiment_names, job_config

CONF = REPO_ROOT / "conf"


def selections() -> list[tuple[Path, str]]:
    """(file, the override that picks it): each group's options (groups nest: hydra/sweeper), each experiment."""
    options = [
        (path, f"{path.parent.relative_to(CONF).as_posix()}={path.stem}")
        for path in sorted(CONF.rglob("*.yaml")) if path.parent != CONF
    ]
    return options + [(REPO_ROOT / EXPERIMENTS / f"{name}.yaml", f"experiment={name}") for name in experiment_names()]


def composes(path: Path, override: str, root: Path = REPO_ROOT) -> dict:
    try:
        return job_config([override], root)
    except ConfigError as err:
        pytest.fail(f"{path}: {err}", pytrace=False)


def test_the_groups_are_found_by_listing_conf():
    groups = {override.split("=")[0] for _, override in selections()}
    assert {"model", "data", "compute", "optimizer", "deploy", "experiment"} <= groups
    assert "experiment=food16_cnn16" in [override for _, override in selections()]


@pytest.mark.parametrize("path, override", selections(), ids=[override for _, override in selections()])
def test_every_option_and_experiment_composes_checks_and_resolves(path, override):
    cfg = composes(path, override)
    group, option = override.split("=")
    if group == "model":
        assert cfg["model"]["net"]["_target_"].startswith("lettucify.models.")
    # Only what Hydra sets as the run starts stays unresolved.
    assert cfg["paths"]["output_dir"] == "${hydra:runtime.output_dir}"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of conf/ with an empty experiments folder beside it: experiments are planted here."""
    shutil.copytree(CONF, tmp_path / "conf")
    (tmp_path / EXPERIMENTS).mkdir(parents=True)
    return tmp_path


def plant(root: Path, name: str, body: str) -> Path:
    path = root / EXPERIMENTS / f"{name}.yaml"
    path.write_text("# @package _global_\n" + body)
    return path


@pytest.mark.parametrize(
    "body, message",
    [
        ("optimiser:\n  lr: 1.0e-3\n", "Key 'optimiser' not in 'Config'"),
        ("trainer:\n  epoch: 3\n", "Key 'epoch' not in 'TrainerConf'"),
        ("trainer:\n  epochs: 0\n", "trainer.epochs=0: must be at least 1"),
        ("optimizer:\n  lr: ${oc.env:LETTUCIFY_TEST_UNSET_VARIABLE}\n", "LETTUCIFY_TEST_UNSET_VARIABLE"),
        # A download of your own photos needs its archive's URL and manifest.
        ("defaults:\n  - override /data: imagefolder\ndata:\n  download:\n    members: {train: photos}\n",
         "data.download.url=???: must be set"),
    ],
    ids=["misspelt group key", "misspelt key", "out of range", "unresolvable", "missing"],
)
def test_a_planted_mistake_in_an_experiment_is_caught(checkout, body, message):
    plant(checkout, "typo", body)
    with pytest.raises(ConfigError) as err:
        job_config(["experiment=typo"], checkout)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_planted_experiment_composes_from_its_own_checkout(checkout):
    plant(checkout, "faster", "optimizer:\n  lr: 2.5e-3\n")
    assert job_config(["experiment=faster"], checkout)["optimizer"]["lr"] == 2.5e-3
    # The checkout's experiments, not the repository's.
    with pytest.raises(ConfigError, match="^experiment=food16_cnn16: no such option; experiment is one of faster$"):
        job_config(["experiment=food16_cnn16"], checkout)
    assert job_config(["experiment=food16_cnn16"])["model"]["net"]["_target_"].endswith("CNN16")
