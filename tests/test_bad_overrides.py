"""Bad values stop at once: one line naming the key and the value, exit status 2, nothing made.

Each case runs the real CLI. The value checks run before the task, so those processes
exit before importing torch; the registry's take a few seconds more.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lettucify.config import REPO_ROOT, AugmentConf, TorchrunConf
from lettucify.errors import ConfigError
from lettucify.validation import validate

MODEL = "lettucify-food16"

# (overrides, the one line stderr says): the line names the key (or the thing) and the value.
CASES = [
    # The table.
    (["trainer.epochs=-1"], "trainer.epochs=-1: must be at least 1"),
    (["+model.foo=1"], "model.foo=1: unknown key, EfficientNetLiteConf has no such field"),
    (["data.batch_size=0"], "data.batch_size=0: must be at least 1"),
    (["compute=torchrun", "compute.nproc_per_node=0"], "compute.nproc_per_node=0: must be at least 1"),
    (["task=evaluate", "model_uri=models:/nope@x"],
     f"no registered model 'nope' in sqlite:///{{db}}; registered: {MODEL}"),
    # More of the kind.
    (["task=evaluate", f"model_uri=models:/{MODEL}/3"], f"{MODEL} has no version 3; versions: none"),
    (["task=promote", "registry.alias=x"], f"{MODEL} has no alias @x; aliases: none"),
    (["+trainer.epohcs=3"],
     "trainer.epohcs=3: unknown key, TrainerConf has no such field; did you mean trainer.epochs?"),
    (["+bogus=1"], "bogus=1: unknown key, Config has no such field"),
    (["+logger.api_token=s3cr3t-sentinel"], "logger.api_token=***: unknown key, LoggerConf has no such field"),
    (["data.val_fraction=1.0"], "data.val_fraction=1.0: must be in [0, 1)"),
    (["data.cv_folds=1"], "data.cv_folds=1: must be 0 (off) or at least 2"),
    (["data.num_workers=-1"], "data.num_workers=-1: must be at least 0"),
    (["data.augment.random_resized_crop_scale=[0.9,0.1]"],
     "data.augment.random_resized_crop_scale=[0.9, 0.1]: must be 2 numbers, each in (0, 1], smallest first"),
    (["optimizer.lr=0"], "optimizer.lr=0.0: must be greater than 0"),
    (["optimizer=sgd", "optimizer.momentum=1"], "optimizer.momentum=1.0: must be in [0, 1)"),
    (["trainer.label_smoothing=1"], "trainer.label_smoothing=1.0: must be in [0, 1)"),
    (["trainer.grad_clip_norm=0"], "trainer.grad_clip_norm=0.0: must be greater than 0"),
    (["registry.min_accuracy=1.5"], "registry.min_accuracy=1.5: must be in [0, 1]"),
    (["compute.device=gpu"], "compute.device=gpu: must be cpu, cuda or cuda:N"),
    (["compute=local_gpu", "compute.amp_dtype=half"], "compute.amp_dtype=half: must be one of bfloat16, float16"),
    (["model.net.variant=lite9"], "model.net.variant=lite9: must be one of lite0, lite2"),
    (["compute=torchrun", "compute.master_port=70000"], "compute.master_port=70000: must be in [1, 65535]"),
    (["compute=torchrun", "compute.nnodes=2", "compute.node_rank=2"],
     "compute.node_rank=2: must be in [0, compute.nnodes=2)"),
    # nnodes and node_rank follow from it and are out of range too: the key given is blamed.
    (["compute=azure_t4", "compute.instance_count=0"],
     "compute.instance_count=0: must be in [1, compute.azure.cluster.max_instances=5]"),
    (["compute=azure_t4", "compute.azure.cluster.min_instances=6"],
     "compute.azure.cluster.min_instances=6: must be in [0, compute.azure.cluster.max_instances=5]"),
    (["serve.port=70000"], "serve.port=70000: must be in [0, 65535]"),
    (["serve.max_batch_images=100"],
     "serve.max_queue_images=64: must be at least serve.max_batch_images=100"),
    (["serve.request_timeout_s=0"], "serve.request_timeout_s=0.0: must be greater than 0"),
    (["task=serve"], "task=serve needs exactly one of checkpoint=<file> or model_uri=models:/<name>@<alias>"),
    (["task=serve", "model_uri=models:/nope@x"], f"no registered model 'nope' in sqlite:///{{db}}; registered: {MODEL}"),
    # A sweep is checked, every point, before its first job runs.
    (["-m", "trainer.epochs=1,-1"], "trainer.epochs=-1: must be at least 1"),
    # What Hydra itself refuses as it composes, in the same one line.
    (["trainer.epohcs=3"], "trainer.epohcs=3: unknown key, TrainerConf has no such field; did you mean trainer.epochs?"),
    (["logger.api_token=s3cr3t-sentinel"], "logger.api_token=***: unknown key, LoggerConf has no such field"),
    (["trainer.epochs=abc"], "trainer.epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["model=cnn17"], "model=cnn17: no such option; model is one of cnn16, efficientnet_lite0, efficientnet_lite2; "
                      "did you mean model=cnn16?"),
    (["trainer.epochs=[1"], "trainer.epochs=[1: no viable alternative at input '[1' (Hydra's override grammar)"),
    (["-m", "model=cnn16", "model.net.frozen_stages=1,2"],
     "model.net.frozen_stages=1,2: unknown key, CNN16NetConf has no such field"),
    # A search's parameters, before Optuna's first trial.
    (["hparams_search=efficientnet_lite_optuna", "model=cnn16"],
     "hydra.sweeper.params.model.net.frozen_stages: unknown key, CNN16NetConf has no such field"),
]


def _id(case) -> str:
    return " ".join(case[0])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store holding one registered model (no version, no run)."""
    import mlflow

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.create_registered_model(MODEL)
    return db, client


def runs_and_versions(client) -> tuple[int, int]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments)), len(client.search_model_versions())


@pytest.mark.parametrize("overrides, line", CASES, ids=[_id(c) for c in CASES])
def test_a_bad_override_stops_with_one_line(overrides, line, store, tmp_path):
    db, client = store
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", *overrides, f"logger.tracking_uri=sqlite:///{db}",
         f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr and "s3cr3t" not in result.stderr
    assert runs_and_versions(client) == (0, 0)
    assert not (tmp_path / "sweep").exists()
    if any(o.startswith("task=") for o in overrides):
        # The registry's, found by the task (a logged error) once Hydra has made the run
        # folder: it holds Hydra's records alone.
        assert len(lines) == 1 and lines[0].endswith(f"[ERROR] - {line.format(db=db)}"), lines
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "lettucify.log"]
    else:
        assert lines == [line]
        assert not (tmp_path / "run").exists()


def test_a_bad_value_stops_before_torch_or_mlflow_is_imported(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lettucify", "trainer.epochs=-1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert result.returncode == 2 and "trainer.epochs=-1: must be at least 1" in result.stderr
    assert "torch" not in imported and "mlflow" not in imported


# --------------------------------------------------------------------------- the pass itself
def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def problem(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


def test_a_subclass_that_changes_a_default_keeps_the_rule():
    # AzureComputeConf declares amp_dtype and nnodes again, for their defaults.
    assert problem(composed("compute=azure_t4", "compute.amp_dtype=half")).startswith("compute.amp_dtype=half:")
    assert problem(composed("compute=azure_t4", "compute.nnodes=0")) == "compute.nnodes=0: must be at least 1"


def test_null_is_off_and_passes():
    validate(composed("trainer.grad_clip_norm=null", "registry.min_accuracy=null", "compute.num_threads=null"))


def test_an_interpolated_value_is_checked_as_what_it_resolves_to():
    assert problem(composed("trainer.epochs=${data.cv_folds}")) == "trainer.epochs=0: must be at least 1"


def test_a_value_that_does_not_resolve_is_one_line():
    line = problem(composed("trainer.epochs=${oc.env:LETTUCIFY_TEST_UNSET}"))
    assert line.startswith("trainer.epochs=${oc.env:LETTUCIFY_TEST_UNSET}: ") and "\n" not in line


def test_an_unset_mandatory_value_is_refused():
    cfg = OmegaConf.structured(AugmentConf)
    cfg.random_resized_crop_scale = "???"
    assert problem(cfg) == "random_resized_crop_scale=???: must be set"


def test_without_a_command_line_the_first_problem_is_named():
    cfg = OmegaConf.structured(TorchrunConf(nproc_per_node=0, max_restarts=-1))
    assert problem(cfg) == "nproc_per_node=0: must be at least 1"


@pytest.mark.parametrize("scale", [[0.5], [0.0, 1.0], [0.5, 1.5]])
def test_a_list_rule_checks_length_and_items(scale):
    assert "must be 2 numbers, each in (0, 1], smallest first" in problem(OmegaConf.structured(AugmentConf(scale)))
