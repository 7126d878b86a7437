"""compute=azure_*: real azure-ai-ml entities built offline, a fake MLClient, and the job's
command run here as two emulated nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.ai.ml import load_compute, load_job
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fake_azure import FakeMLClient
from helpers import make_image_folder
from lettucify.azure import client as azure_client
from lettucify.azure import entities, local, submit
from lettucify.config import REPO_ROOT
from lettucify.errors import LettucifyError
from lettucify import checkpoint as ckpt

SECRET = "AzureSecret-0f9e8d7c6b5a-must-not-leak"
WORKSPACE_ENV = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")
# A job small enough to train on CPU in seconds, in the shape of a GPU job.
ON_CPU = [
    "compute=azure_t4", "compute.device=cpu", "compute.amp=false", "compute.pin_memory=false",
    "compute.num_threads=1", "model=cnn16", "model.input_size=32", "data=imagefolder",
    "data.batch_size=8", "trainer.epochs=2", "logger=none",
]


@pytest.fixture(autouse=True)
def _no_workspace_in_env(monkeypatch):
    for name in WORKSPACE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fridge"), classes=("apple", "kale", "milk"),
                             per_class_train=12, per_class_test=4)


def compose_cfg(overrides: list[str], run_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={run_dir}"])


@pytest.fixture
def fake(monkeypatch) -> FakeMLClient:
    client = FakeMLClient()
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: client)
    return client


def lettucify(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lettucify", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- configs
def test_nc6_and_t4_share_one_base_and_differ_only_in_the_cluster(tmp_path):
    nc6 = OmegaConf.to_container(compose_cfg(["compute=azure_nc6"], tmp_path).compute, resolve=True)
    t4 = OmegaConf.to_container(compose_cfg(["compute=azure_t4"], tmp_path).compute, resolve=True)
    assert {k: v for k, v in nc6["azure"]["cluster"].items() if nc6["azure"]["cluster"][k] != t4["azure"]["cluster"][k]}
    nc6["azure"].pop("cluster"), t4["azure"].pop("cluster")
    assert nc6 == t4
    assert t4["backend"] == "azureml" and t4["nnodes"] == t4["instance_count"] == 1
    cluster = compose_cfg(["compute=azure_nc6"], tmp_path).compute.azure.cluster
    assert (cluster.size, cluster.min_instances, cluster.max_instances) == ("STANDARD_NC6s_v3", 0, 5)


def test_a_typo_in_an_azure_setting_fails_at_composition(tmp_path):
    result = lettucify("compute=azure_t4", "compute.azure.clustre.name=x", cwd=tmp_path)
    assert result.returncode != 0
    assert "clustre" in result.stderr and "Traceback" not in result.stderr


def test_job_environment_is_built_from_setup_cfg():
    requirements = entities.project_requirements()
    assert "torch==2.14.1" in requirements and "torchvision==0.29.1" in requirements
    assert any(r.startswith("azureml-mlflow") for r in requirements)
    assert not any(r.startswith(("pytest", "#")) for r in requirements)


def test_amlignore_keeps_data_outputs_and_caches_out_of_the_snapshot():
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(str(REPO_ROOT))
    for excluded in ["outputs/mlflow.db", ".venv/bin/python", ".git/HEAD", "lettucify/__pycache__/cli.pyc",
                     "checkpoints/last.pt"]:
        assert ignore.is_file_excluded(str(REPO_ROOT / excluded)), excluded
    for kept in ["lettucify/cli.py", "conf/config.yaml", "experiments/experiment/food16_cnn16.yaml", "setup.cfg"]:
        assert not ignore.is_file_excluded(str(REPO_ROOT / kept)), kept


# --------------------------------------------------------------------------- workspace
def test_workspace_from_the_environment_builds_a_client_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "fridge-rg")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "fridge-ws")
    ml = azure_client.make_ml_client(compose_cfg(["compute=azure_t4"], tmp_path).compute.azure.workspace)
    assert (ml.subscription_id, ml.resource_group_name, ml.workspace_name) == (
        "00000000-0000-0000-0000-000000000000", "fridge-rg", "fridge-ws")


def test_workspace_from_a_config_json(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"subscription_id": "11111111-1111-1111-1111-111111111111",
                                  "resource_group": "rg2", "workspace_name": "ws2"}))
    cfg = compose_cfg(["compute=azure_t4", f"compute.azure.workspace.config_path={config}"], tmp_path)
    ml = azure_client.make_ml_client(cfg.compute.azure.workspace)
    assert (ml.resource_group_name, ml.workspace_name) == ("rg2", "ws2")


def test_no_workspace_is_one_actionable_line(tmp_path):
    cfg = compose_cfg(["compute=azure_t4", f"compute.azure.workspace.config_path={tmp_path}"], tmp_path)
    with pytest.raises(LettucifyError, match="AZURE_SUBSCRIPTION_ID.*config.json"):
        azure_client.make_ml_client(cfg.compute.azure.workspace)


# --------------------------------------------------------------------------- dry run
def test_dry_run_writes_specs_that_load_back_and_validate(images, tmp_path):
    run_dir = tmp_path / "run"
    result = lettucify(*ON_CPU, "compute=azure_nc6", "compute.instance_count=2", f"data.azure_input={images}",
                       "optimizer.lr=3e-3", "compute.azure.dry_run=true", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path, env={"AZURE_CLIENT_SECRET": SECRET, "AZURE_SUBSCRIPTION_ID": "sub-0"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "STANDARD_NC6s_v3 is retired" in result.stderr and "compute=azure_t4" in result.stderr
    assert "nothing submitted" in result.stderr

    job = load_job(run_dir / "job.yaml")
    job._to_job()._validate()
    assert job.compute == "lettucify-nc6"
    assert job.resources.instance_count == 2
    assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1
    assert job.inputs["data"].path == str(images) and job.inputs["data"].mode == "ro_mount"
    assert job.experiment_name == "lettucify"
    for words in ["python -m lettucify", "compute=azure_nc6", "optimizer.lr=3e-3", "compute.backend=torchrun",
                  "compute.node_rank=$NODE_RANK", "compute.master_addr=$MASTER_ADDR", "data.root=${{inputs.data}}"]:
        assert words in job.command, words
    assert "dry_run" not in job.command and "hydra.run.dir=${{outputs.run}}" in job.command
    assert load_compute(run_dir / "compute.yaml").size == "STANDARD_NC6s_v3"

    for path in [*run_dir.rglob("*"), ]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stderr


def test_a_local_data_root_without_an_azure_input_is_warned_about(fake, tmp_path, caplog):
    overrides = ["compute=azure_t4", "data=imagefolder", f"data.root={tmp_path}"]
    submit.submit(compose_cfg(overrides, tmp_path), overrides)
    assert f"data.root={tmp_path} is a folder on this machine" in caplog.text
    assert "data.azure_input" in caplog.text


def test_an_undefined_input_in_the_command_is_refused(tmp_path):
    cfg = compose_cfg(["compute=azure_t4"], tmp_path)
    with pytest.raises(LettucifyError, match="does not validate.*nope"):
        entities.command_job(cfg.compute, ["echo", "${{inputs.nope}}"], experiment_name="e", display_name="d", tags={})


def test_a_missing_data_folder_is_one_line_and_nonzero(tmp_path):
    result = lettucify("compute=azure_t4", f"data.azure_input={tmp_path / 'nowhere'}", "compute.azure.dry_run=true",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.azure_input" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- submission
def test_submission_creates_the_missing_cluster_once_and_sends_the_job(fake, images, tmp_path):
    overrides = ["compute=azure_t4", "compute.instance_count=2", f"data.azure_input={images}", "model=cnn16"]
    for attempt in range(2):
        run_dir = tmp_path / f"run{attempt}"
        assert submit.submit(compose_cfg(overrides, run_dir), overrides) is None  # no wait: returns at once
        recorded = json.loads((run_dir / submit.SUBMITTED).read_text())
        assert recorded == {"name": f"fake-job-{attempt + 1}", "studio_url": f"https://ml.azure.com/runs/fake-job-{attempt + 1}"}
    # A second submission in another process connects anew; the cluster exists by then.
    assert [c.name for c in fake.compute.created] == ["lettucify-t4"]
    created = fake.compute.created[0]
    assert (created.size, created.min_instances, created.max_instances, created.tier) == (
        "STANDARD_NC4AS_T4_V3", 0, 5, "dedicated")

    job = fake.jobs.submitted[0]
    assert job.compute == "lettucify-t4" and job.resources.instance_count == 2
    assert job.distribution.process_count_per_instance == 1
    assert job.environment.conda_file["dependencies"][2]["pip"] == entities.project_requirements()
    assert job.inputs["data"].path == str(images) and job.experiment_name == "lettucify"
    assert job.tags["lettucify.overrides"] == " ".join(overrides)


def test_an_existing_cluster_of_another_size_is_refused(monkeypatch, tmp_path):
    cfg = compose_cfg(["compute=azure_t4"], tmp_path)
    other = entities.cluster(OmegaConf.merge(cfg.compute.azure.cluster, {"size": "STANDARD_NC6s_v3"}))
    fake = FakeMLClient(existing_clusters={"lettucify-t4": other})
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: fake)
    with pytest.raises(LettucifyError, match="cannot change"):
        submit.submit(cfg, ["compute=azure_t4"])
    assert fake.jobs.submitted == []


def test_changed_scale_settings_update_the_cluster(monkeypatch, tmp_path):
    cfg = compose_cfg(["compute=azure_t4"], tmp_path)
    fake = FakeMLClient(existing_clusters={"lettucify-t4": entities.cluster(cfg.compute.azure.cluster)})
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: fake)
    submit.submit(cfg, [])
    assert fake.compute.created == []  # as configured: left alone
    submit.submit(compose_cfg(["compute=azure_t4", "compute.azure.cluster.max_instances=3"], tmp_path), [])
    assert [c.max_instances for c in fake.compute.created] == [3]


def test_wait_follows_the_job_and_returns_rank_zeros_metrics(fake, tmp_path):
    def write_output(name, job, folder):
        node0 = folder / "node0"
        node0.mkdir(parents=True)
        (node0 / "metrics.json").write_text(json.dumps({"top1": 0.8, "macro_f1": 0.75}))
        (node0 / "score.json").write_text(json.dumps({"metrics": {"val_acc": 0.625, "test_top1": 0.8}}))

    fake.write_output = write_output
    overrides = ["compute=azure_t4", "compute.azure.wait=true"]
    assert submit.submit(compose_cfg(overrides, tmp_path), overrides) == {"val_acc": 0.625, "test_top1": 0.8}
    assert fake.jobs.streamed == ["fake-job-1"]


def test_a_job_that_fails_on_the_cluster_is_one_line(fake, tmp_path):
    fake.final_status = "Failed"
    overrides = ["compute=azure_t4", "compute.azure.wait=true"]
    with pytest.raises(LettucifyError, match="fake-job-1 ended Failed"):
        submit.submit(compose_cfg(overrides, tmp_path), overrides)


# --------------------------------------------------------------------------- the job, run here
def test_the_jobs_command_trains_as_two_emulated_nodes(images, tmp_path):
    run_dir = tmp_path / "run"
    result = lettucify(*ON_CPU, "compute.instance_count=2", f"data.azure_input={images}",
                       "compute.azure.dry_run=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]

    status = local.run_job_locally(run_dir / "job.yaml", tmp_path / "emulated", timeout_s=240)
    assert status == 0
    node0 = tmp_path / "emulated" / "outputs" / "run" / "node0"
    assert ckpt.load(node0 / "checkpoints" / ckpt.LAST)["state"]["epoch"] == 2
    assert json.loads((node0 / "metrics.json").read_text())["num_images"] == 12
    # Node 1 trained rank 1: it wrote no run output of its own.
    assert not (tmp_path / "emulated" / "outputs" / "run" / "node1" / "checkpoints").exists()
    config = OmegaConf.load(node0 / "resolved_config.yaml")
    assert (config.compute.nnodes, config.compute.master_addr) == (2, "127.0.0.1")


def test_running_a_job_with_a_data_asset_needs_a_local_copy(tmp_path):
    cfg = compose_cfg(["compute=azure_t4", "data.azure_input=azureml:food16:1"], tmp_path)
    job, cluster = submit.build(cfg, ["compute=azure_t4"])
    entities.write_specs(job, cluster, tmp_path)
    result = subprocess.run([sys.executable, "-m", "lettucify.azure.local", str(tmp_path / "job.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--input data=/path" in result.stderr and "Traceback" not in result.stderr


def test_a_failed_sign_in_is_one_actionable_line(fake, tmp_path):
    from azure.core.exceptions import ClientAuthenticationError

    def refuse(job):
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    fake.fail_submission = refuse
    with pytest.raises(LettucifyError, match=r"sign-in failed.*az login"):
        submit.submit(compose_cfg(["compute=azure_t4"], tmp_path), ["compute=azure_t4"])
