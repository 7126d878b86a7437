"""MLflow tracking and registry against a local SQLite store (no server, no network)."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from lettucify.config import REPO_ROOT
from lettucify.errors import LettucifyError
from lettucify.tracking import (
    MASK,
    Masker,
    NullTracker,
    dataset_fingerprint,
    git_state,
    is_secret_key,
    open_tracker,
    register_model,
)
from lettucify.tracking.run import MAX_PARAM_VALUE, MAX_RUN_NAME, run_name

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

SECRET = "s3cr3t-VALUE-from-env-42"
SAS = "https://acct.blob.core.windows.net/c/food16.zip?sv=2022-11-02&sp=r&sig=SASsignature0123%3D"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An empty MLflow database, migrated once (creating one costs seconds)."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def _new_store(folder: Path, template_db: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _clean_mlflow_env(monkeypatch):
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield
    while mlflow.active_run() is not None:  # a failing test must not leak its run
        mlflow.end_run("KILLED")


@pytest.fixture
def store(tmp_path, template_db) -> str:
    return _new_store(tmp_path / "store", template_db)


def make_cfg(uri: str, tmp_path: Path, **logger):
    return OmegaConf.create(
        {
            "model": {"net": {"variant": "lite0", "channels": [16, 32]}, "input_size": 32},
            "optimizer": {"lr": 0.003, "betas": [0.9, 0.999]},
            "compute": {"device": "cpu"},
            "data": {"root": str(tmp_path / "images"), "download": {"url": SAS}},
            "trainer": {"keep_last": 3, "max_tokens": 512},
            "notes": "x" * (MAX_PARAM_VALUE + 500),
            "logger": {
                "enabled": True,
                "tracking_uri": uri,
                "experiment_name": "lettucify-test",
                "run_name": None,
                **logger,
            },
            "registry": {"enabled": True, "name": "food", "alias": "candidate", "min_accuracy": None},
        }
    )


def only_run(uri: str, experiment: str = "lettucify-test"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def artifact_texts(client: MlflowClient, run_id: str, tmp_path: Path) -> dict:
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "downloaded")))
    return {p.relative_to(local).as_posix(): p.read_text(errors="replace") for p in local.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- runs
def test_run_records_params_metrics_tags_and_artifacts(store, tmp_path):
    cfg = make_cfg(store, tmp_path)
    (tmp_path / "metrics.json").write_text('{"test_acc": 0.8}\n')
    with open_tracker(cfg.logger, cfg, tmp_path, overrides=["model=cnn16", "optimizer.lr=0.003"]) as tracker:
        for epoch in (1, 2, 3):
            record = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.3 * epoch, "lr": 1e-3,
                      "images_per_s": 100.0, "epoch_time_s": 2.5, "note": "skipped"}
            tracker.log_epoch(record, step=epoch)
        tracker.log_metrics({"top1": 0.9, "test_acc": 0.8, "best_val_acc": None, "checkpoint": "best.pt",
                             "per_class": [0.1, 0.2], "confusion": {"a": 1}})
        tracker.log_artifacts([tmp_path / "metrics.json", tmp_path / "missing.csv"])
        tracker.set_tags({"dataset_fingerprint": "abc123"})

    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "lettucify-test model=cnn16,optimizer.lr=0.003"

    params = run.data.params
    assert params["optimizer.lr"] == "0.003"
    assert params["model.net.variant"] == "lite0"
    assert params["optimizer.betas"] == "[0.9, 0.999]"
    assert params["trainer.keep_last"] == "3" and params["trainer.max_tokens"] == "512"  # not secrets
    assert params["data.download.url"].endswith("sig=***") and "SASsignature" not in params["data.download.url"]
    assert len(params["notes"]) == MAX_PARAM_VALUE

    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert "epoch" not in run.data.metrics and "note" not in run.data.metrics
    assert run.data.metrics["test_top1"] == 0.9 and run.data.metrics["test_acc"] == 0.8
    assert not {"test_test_acc", "test_best_val_acc", "test_checkpoint", "test_per_class"} & set(run.data.metrics)

    tags = run.data.tags
    assert tags["host"] and tags["device"] == "cpu" and tags["run_dir"] == str(tmp_path)
    assert tags["dataset_fingerprint"] == "abc123"
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["git_commit"] == head.stdout.strip()
        assert tags["git_dirty"] in ("true", "false")

    texts = artifact_texts(client, run.info.run_id, tmp_path)
    assert set(texts) == {"config.yaml", "metrics.json"}
    logged = OmegaConf.create(texts["config.yaml"])
    assert logged.optimizer.lr == 0.003 and logged.data.download.url.endswith("sig=***")
    # Artifacts of a SQLite store live beside the database, not in ./mlruns.
    assert run.info.artifact_uri.startswith((Path(store[len("sqlite:///"):]).parent / "mlartifacts").as_uri())


def test_a_hydra_composed_run_is_named_after_its_overrides(store, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    overrides = ["model=cnn16", "optimizer.lr=0.003", f"logger.tracking_uri='{store}'", "logger.experiment_name=composed"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"hydra.run.dir={tmp_path}"], return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        with open_tracker(cfg.logger, cfg, tmp_path):
            pass
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    _, run = only_run(store, "composed")
    assert run.info.run_name.startswith("composed model=cnn16,optimizer.lr=0.003,logger.tracking_uri=")
    params = run.data.params
    assert params["model.net._target_"] == "lettucify.models.cnn16.CNN16" and params["optimizer.lr"] == "0.003"
    assert params["paths.output_dir"] == str(tmp_path) and params["data.on_bad_image"] == "skip"
    assert not [key for key, value in params.items() if MASK in value]  # no false positives in our schema


def test_exception_marks_the_run_failed_with_a_masked_error(store, tmp_path):
    cfg = make_cfg(store, tmp_path)
    with pytest.raises(ValueError, match="boom"):
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]):
            raise ValueError("boom: cannot reach https://user:hunter2pass@host/x with api_key=ABCDEFGH12345\nsecond line")
    _, run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.params["optimizer.lr"] == "0.003"
    error = run.data.tags["error"]
    assert error.startswith("ValueError: boom") and "\n" not in error and "second line" not in error
    assert "hunter2pass" not in error and "ABCDEFGH12345" not in error


@pytest.mark.parametrize(
    "exc, status",
    [(SystemExit(75), "KILLED"), (SystemExit(130), "KILLED"), (KeyboardInterrupt(), "KILLED"), (SystemExit(0), "FINISHED")],
)
def test_exit_statuses(store, tmp_path, exc, status):
    cfg = make_cfg(store, tmp_path)
    with pytest.raises(type(exc)):
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]):
            raise exc
    _, run = only_run(store)
    assert run.info.status == status
    if isinstance(exc, SystemExit):
        assert run.data.tags["exit_status"] == str(exc.code)


def test_a_secret_from_the_environment_is_never_logged(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", SECRET)
    cfg = make_cfg(store, tmp_path)
    cfg.logger.token = "${oc.env:MY_TOKEN}"
    cfg.data.mirror = "https://mirror.example/food16?user=me&pass=${oc.env:MY_TOKEN}"  # not a secret key
    cfg.paths = {"cache_dir": "/cache/${oc.env:MY_TOKEN}"}  # not secret-looking at all
    with pytest.raises(RuntimeError):
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[f"+logger.token={SECRET}", "seed=1"]) as tracker:
            tracker.set_tags({"note": f"token {SECRET} used"})
            raise RuntimeError(f"server said: bad credentials {SECRET}")

    client, run = only_run(store)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("RuntimeError: server said")
    assert run.data.params["logger.token"] == MASK
    assert "+logger.token=***" in run.info.run_name
    recorded = [run.info.run_name, *run.data.params.keys(), *run.data.params.values(),
                *run.data.tags.keys(), *run.data.tags.values(),
                *artifact_texts(client, run.info.run_id, tmp_path).values()]
    assert not [text for text in recorded if SECRET in text]
    assert "config.yaml" in artifact_texts(client, run.info.run_id, tmp_path / "again")


def test_attaches_to_the_active_run_and_leaves_it_to_its_owner(store, tmp_path):
    cfg = make_cfg(store, tmp_path)
    mlflow.set_tracking_uri(store)
    experiment_id = MlflowClient(store).create_experiment("lettucify-test", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as outer:
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]) as tracker:
            assert tracker.run_id == outer.info.run_id
        assert MlflowClient(store).get_run(outer.info.run_id).info.status == "RUNNING"
    _, run = only_run(store)
    assert run.info.status == "FINISHED" and run.data.params["optimizer.lr"] == "0.003"


def test_attaches_to_mlflow_run_id(store, tmp_path, monkeypatch):
    cfg = make_cfg(store, tmp_path)
    client = MlflowClient(store)
    experiment_id = client.create_experiment("azure-job", artifact_location=(tmp_path / "a").as_uri())
    job_run = client.create_run(experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", job_run.info.run_id)
    with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]) as tracker:
        assert tracker.run_id == job_run.info.run_id
    _, run = only_run(store, "azure-job")
    assert run.info.status == "FINISHED" and run.data.params["optimizer.lr"] == "0.003"
    assert client.get_experiment_by_name("lettucify-test") is None


def test_null_tracker_does_nothing(tmp_path):
    cfg = make_cfg("sqlite:///never", tmp_path, enabled=False)
    with open_tracker(cfg.logger, cfg, tmp_path) as tracker:
        assert isinstance(tracker, NullTracker)
        tracker.log_epoch({"epoch": 1, "train_loss": 0.5}, step=1)
        tracker.log_metrics({"top1": 1.0})
        tracker.log_artifacts([tmp_path / "x"])
        tracker.set_tags({"a": "b"})
        assert tracker.run_id is None
    assert not (tmp_path / "never").exists()


def test_importing_tracking_imports_neither_mlflow_nor_torch(tmp_path):
    code = (
        "import sys\n"
        "from omegaconf import OmegaConf\n"
        "import lettucify.tracking as t\n"
        "cfg = OmegaConf.create({'logger': {'enabled': False}})\n"
        "with t.open_tracker(cfg.logger, cfg, '.') as tracker:\n"
        "    tracker.log_epoch({'epoch': 1, 'loss': 1.0}, step=1)\n"
        "print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- pieces
@pytest.mark.parametrize(
    "key",
    ["password", "logger.token", "client_secret", "hf_token", "api_key", "apiKey", "key", "storageAccountKey",
     "sas_url", "connection_string", "AZURE_STORAGE_CONNECTION_STRING", "credentials", "db_pwd"],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["keep_last", "tokenizer", "max_tokens", "keyboard", "serve.api_key_env", "optimizer.lr", "model.net.variant",
     "data.download.url", "trainer.resume", "passthrough", "registry.name"],
)
def test_not_secret_keys(key):
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    "text, secret",
    [
        (SAS, "SASsignature0123"),
        ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bWFkZSB1cCBrZXk=;EndpointSuffix=x", "bWFkZSB1cCBrZXk"),
        ("Authorization: Bearer abcdef.ghijkl.mnop", "abcdef.ghijkl"),
        ("postgresql://lettuce:hunter2pass@db:5432/mlflow", "hunter2pass"),
        ("using ghp_0123456789abcdefghijABCDEFGHIJ now", "ghp_0123456789"),
        ("https://h/x?access_token=tok123456&page=2", "tok123456"),
        ("password: Pa55word!", "Pa55word"),
    ],
)
def test_secret_values_are_masked_in_text(text, secret):
    masked = Masker(environ={}).text(text)
    assert secret not in masked and MASK in masked


def test_ordinary_text_is_left_alone():
    masker = Masker(environ={})
    for text in ("KeyError: 'model.foo'", "loss became nan in epoch 3; lower optimizer.lr (now 0.1)",
                 "lettucify model=cnn16,optimizer.lr=0.003", "/work/main/outputs/runs/2024-01-01"):
        assert masker.text(text) == text


def test_run_name_is_masked_and_bounded():
    masker = Masker(environ={})
    assert run_name("exp", ["model=cnn16", "logger.token=abc"], masker) == "exp model=cnn16,logger.token=***"
    assert len(run_name("exp", [f"a{i}=b" for i in range(200)], masker)) == MAX_RUN_NAME


def test_dataset_fingerprint(image_folder, tmp_path):
    files = sorted(p for p in image_folder.rglob("*.jpg"))
    samples = [(p, i % 3) for i, p in enumerate(files)]
    first = dataset_fingerprint(image_folder, samples)
    assert len(first) == 64 and first == dataset_fingerprint(image_folder, list(reversed(files)))
    # Where the tree lives does not matter; what it holds does.
    copy = Path(shutil.copytree(image_folder, tmp_path / "elsewhere"))
    assert dataset_fingerprint(copy, [copy / p.relative_to(image_folder) for p in files]) == first
    with open(files[0], "ab") as f:
        f.write(b"\0")
    assert dataset_fingerprint(image_folder, files) != first
    assert dataset_fingerprint(image_folder, files[1:]) != first


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {}


# --------------------------------------------------------------------------- registry
@pytest.fixture(scope="module")
def registered(tmp_path_factory, template_db):
    """One CNN16 trained-and-registered run (exporting takes seconds: done once)."""
    from lettucify.models.cnn16 import CNN16

    tmp_path = tmp_path_factory.mktemp("registry")
    uri = _new_store(tmp_path / "store", template_db)
    torch.manual_seed(0)
    model = CNN16(num_classes=3, input_size=32)
    model.train()  # register_model must export in eval mode, on a copy
    cfg = make_cfg(uri, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]) as tracker:
            tracker.log_metrics({"top1": 0.8, "top5": 1.0})
            version = register_model(
                model, ["apple", "banana", "carrot"], {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
                torch.rand(1, 3, 32, 32), cfg.registry, test_acc=0.8, run_id=tracker.run_id,
            )
            run_id = tracker.run_id
    assert model.training
    return {"uri": uri, "model": model.eval(), "version": version, "run_id": run_id, "cfg": cfg}


def test_register_sets_alias_and_tags(registered):
    version = registered["version"]
    assert version.name == "food" and str(version.version) == "1"
    assert "candidate" in version.aliases
    assert version.tags["run_id"] == registered["run_id"] == version.run_id
    assert float(version.tags["test_acc"]) == 0.8
    client = MlflowClient(registered["uri"])
    assert client.get_model_version_by_alias("food", "candidate").version == version.version


@pytest.mark.parametrize("uri", ["models:/food@candidate", "models:/food/1"])
def test_load_registered_predicts_like_the_model(registered, uri, monkeypatch):
    from lettucify.tracking import load_registered

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # must not matter
    loaded, classes, preprocess = load_registered(uri, tracking_uri=registered["uri"])
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"
    assert classes == ["apple", "banana", "carrot"]
    assert preprocess == {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    loaded.eval()  # modes are flags only: evaluate.predict toggles them
    torch.manual_seed(1)
    with torch.no_grad():
        for batch in (3, 1, 5):  # the export used a batch of 2
            images = torch.rand(batch, 3, 32, 32)
            assert torch.allclose(loaded(images), registered["model"](images), atol=1e-6)
    # The evaluation loop runs it as it runs a trained model (mode toggles, channels_last).
    from torch.utils.data import DataLoader, TensorDataset

    from lettucify.evaluate.predict import predict

    images = torch.rand(5, 3, 32, 32)
    loader = DataLoader(TensorDataset(images, torch.zeros(5, dtype=torch.long)), batch_size=3)
    logits, _ = predict(loaded, loader, torch.device("cpu"), channels_last=True, tta_flip=True)
    expected, _ = predict(registered["model"], loader, torch.device("cpu"), channels_last=True, tta_flip=True)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_registered_model_files(registered, tmp_path):
    from mlflow.models import Model

    from lettucify.tracking.registry import REQUIREMENTS, pip_requirements

    client = MlflowClient(registered["uri"])
    local = Path(mlflow.artifacts.download_artifacts(client.get_model_version_download_uri("food", "1"), dst_path=str(tmp_path)))
    assert (local / "data" / "model.pt2").is_file() and not (local / "data" / "model.pth").exists()
    assert (local / "data" / "model.onnx").is_file()
    assert json.loads((local / "extra_files" / "classes.json").read_text()) == ["apple", "banana", "carrot"]
    flavors = Model.load(str(local)).flavors
    assert flavors["pytorch"]["model_data"] == "data"
    assert flavors["python_function"]["loader_module"] == "lettucify.tracking.pyfunc"
    assert (local / flavors["python_function"]["code"] / "lettucify" / "tracking" / "pyfunc.py").is_file()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("__pycache__"))
    requirements = (local / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert sorted(requirements) == sorted([f"mlflow=={mlflow.__version__}", *pip_requirements()])
    assert len(pip_requirements()) == len(REQUIREMENTS)  # every one installed, so pinned


def test_promote_moves_the_alias_and_records_provenance(registered):
    from lettucify.tracking import promote

    version = promote("food", tracking_uri=registered["uri"])
    assert "champion" in version.aliases and "candidate" in version.aliases
    assert version.tags["promoted_from"] == "candidate"
    assert version.tags["promoted_run_id"] == registered["run_id"]
    assert float(version.tags["test_top1"]) == 0.8 and float(version.tags["test_top5"]) == 1.0
    with pytest.raises(LettucifyError, match="^food has no alias @nonexistent; aliases: candidate, champion$"):
        promote("food", from_alias="nonexistent", tracking_uri=registered["uri"])


@pytest.mark.parametrize(
    "registry, test_acc, reason",
    [({"enabled": False}, 0.99, "registry.enabled=false"),
     ({"min_accuracy": 0.9}, 0.5, "below registry.min_accuracy=0.9"),
     ({"min_accuracy": 0.9}, None, "below registry.min_accuracy=0.9")],
)
def test_registration_gates(registered, registry, test_acc, reason, caplog):
    from lettucify.tracking import register_model

    cfg = OmegaConf.merge(registered["cfg"].registry, registry)
    with caplog.at_level(logging.INFO, logger="lettucify.tracking"):
        result = register_model(registered["model"], ["a", "b", "c"], {}, torch.rand(2, 3, 32, 32), cfg, test_acc)
    assert result is None
    assert reason in caplog.text
    assert len(MlflowClient(registered["uri"]).search_model_versions("name='food'")) == 1


# --------------------------------------------------------------------------- the pyfunc flavor
class ExportsDifferently(torch.nn.Module):
    """A network whose exported program is not the eager one: what a broken export looks like."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits + 0.5 if torch.compiler.is_exporting() else logits


def test_an_onnx_export_that_disagrees_stops_registration_and_logs_nothing(registered, tmp_path):
    client = MlflowClient(registered["uri"])
    experiment_id = client.get_experiment_by_name("lettucify-test").experiment_id
    logged = len(client.search_logged_models([experiment_id]))
    cfg = registered["cfg"]
    with pytest.raises(LettucifyError) as failure:
        with open_tracker(cfg.logger, cfg, tmp_path, overrides=[]) as tracker:
            register_model(ExportsDifferently(registered["model"]), ["apple", "banana", "carrot"],
                           {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, torch.rand(3, 3, 32, 32),
                           cfg.registry, test_acc=0.9, run_id=tracker.run_id)
    assert re.fullmatch(r"not registering food: ONNX export \S+ differs from the PyTorch model by 0\.5 "
                        r"in the logits on 3 image\(s\) \(tolerance 0\.0001\)", str(failure.value))
    assert len(client.search_model_versions("name='food'")) == 1
    assert len(client.search_logged_models([experiment_id])) == logged


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Generated photos of the three classes, JPEG and PNG, of other sizes than the input."""
    from helpers import class_image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    paths = []
    for n in range(6):
        paths.append(folder / f"{n}.{'png' if n % 3 == 2 else 'jpg'}")
        class_image(n % 3, 3, (64 + 8 * n, 48), rng).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def pyfunc_model(registered):
    # As a user would, through MLflow's process-wide URIs (set_registry_uri also sets
    # $MLFLOW_REGISTRY_URI: taken out again, as _clean_mlflow_env does for each test).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_REGISTRY_URI", registered["uri"])
        mlflow.set_tracking_uri(registered["uri"])
        mlflow.set_registry_uri(registered["uri"])
        return mlflow.pyfunc.load_model("models:/food@candidate")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def preprocessed(paths) -> torch.Tensor:
    """What evaluation feeds the model: the decoder, then eval_transform."""
    from lettucify.data.images import load_rgb
    from lettucify.data.transforms import eval_transform

    transform = eval_transform(32, [0.5] * 3, [0.5] * 3)
    return torch.stack([transform(load_rgb(path)) for path in paths])


INPUT_FORMS = {
    "list of base64": lambda paths: [b64(p.read_bytes()) for p in paths],
    "DataFrame column 'image'": lambda paths: pd.DataFrame({"image": [b64(p.read_bytes()) for p in paths], "id": 0}),
    "DataFrame, its one column": lambda paths: pd.DataFrame({"photo": [b64(p.read_bytes()) for p in paths]}),
    "dict of columns": lambda paths: {"image": np.array([b64(p.read_bytes()) for p in paths])},
    "array of base64": lambda paths: np.array([b64(p.read_bytes()) for p in paths]),
    "base64 with line breaks": lambda paths: [base64.encodebytes(p.read_bytes()).decode() for p in paths],
    "raw bytes": lambda paths: [p.read_bytes() for p in paths],
    "float array": lambda paths: preprocessed(paths).numpy(),
    "float tensor": preprocessed,
}


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_pyfunc_predicts_like_the_model_through_eval_transform(registered, pyfunc_model, photos, form):
    predictions = pyfunc_model.predict(INPUT_FORMS[form](photos))
    with torch.no_grad():
        expected = torch.softmax(registered["model"](preprocessed(photos)).double(), dim=1).numpy()
    assert list(predictions.columns) == ["label", "score", "probabilities"]
    assert predictions["label"].tolist() == [["apple", "banana", "carrot"][i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(np.array(predictions["probabilities"].tolist()), expected, atol=1e-4)
    np.testing.assert_allclose(predictions["score"], expected.max(axis=1), atol=1e-4)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (lambda ok: [ok, "not base64!"], "image 2: not valid base64"),
        (lambda ok: [b64(b"hello, fridge")], "image 1: not an image file"),
        (lambda ok: [ok, ok[: len(ok) // 2 // 4 * 4]], r"image 2: truncated or corrupt \(.+\)"),
        (lambda ok: [b64(b"")], r"image 1: empty file \(0 bytes\)"),
        (lambda ok: np.zeros((2, 3, 31, 32)), r"expected base64 images or a float batch of shape \[N, 3, 32, 32\]; got shape \[2, 3, 31, 32\]"),
        (lambda ok: [], r"expected base64 images or a float batch of shape \[N, 3, 32, 32\]; got shape \[0\]"),
        (lambda ok: pd.DataFrame({"a": [ok], "b": [ok]}), r"expected one column of images \(or one named 'image'\); got \['a', 'b'\]"),
    ],
    ids=["base64", "not an image", "truncated", "empty", "shape", "nothing", "columns"],
)
def test_pyfunc_says_in_one_line_what_is_wrong_with_its_input(pyfunc_model, photos, bad, reason):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as failure:  # MLflow's servers answer it with a 400 and this message
        pyfunc_model.predict(bad(b64(photos[0].read_bytes())))
    assert failure.value.error_code == "INVALID_PARAMETER_VALUE"
    assert re.fullmatch(reason, failure.value.message)

