"""A training run with MLflow tracking end to end: the store, the registry, evaluation-only."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

import pytest
import torch

from helpers import make_image_folder

SECRET = "s3cr3t-t0ken-do-not-log-4f1c9a"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tracked run on generated images: (run folder, tracking URI, images)."""
    base = tmp_path_factory.mktemp("tracked")
    images = make_image_folder(base / "images", classes=("apple", "cheese", "lettuce"), per_class_train=12, per_class_test=5)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    run_dir = base / "run"
    result = cli(
        run_dir, images, uri,
        # A credential handed in through the environment: a SAS URL of the photos' container.
        "data.azure_input='https://fridge.blob.core.windows.net/food16?sv=2025-01-05&sig=${oc.env:LETTUCIFY_TEST_TOKEN}'",
        env_token=SECRET,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, uri, images, result


def cli(run_dir: Path, images: Path, uri: str, *extra: str, env_token: str | None = None):
    import os

    env = {**os.environ, "LETTUCIFY_TEST_TOKEN": env_token or "unused"}
    return subprocess.run(
        [sys.executable, "-m", "lettucify", "model=cnn16", "model.input_size=32", "data=imagefolder",
         f"data.root={images}", "data.batch_size=8", "trainer.epochs=3", "compute.num_threads=1",
         f"logger.tracking_uri={uri}", "registry.name=fridge-test", f"hydra.run.dir={run_dir}", *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def only_run(uri: str, status: str | None = None):
    runs = client(uri).search_runs(
        [e.experiment_id for e in client(uri).search_experiments()], order_by=["attributes.start_time DESC"]
    )
    return [r for r in runs if status is None or r.info.status == status]


EVALUATION_FILES = [
    "metrics.json", "per_class.csv", "per_class.md", "confusion_matrix.png", "roc_curves.png",
    "pr_curves.png", "learning_curves.png", "confident_mistakes.png",
]


def test_run_folder_has_every_evaluation_file(tracked):
    from PIL import Image

    run_dir = tracked[0]
    for name in [*EVALUATION_FILES, "bad_images.csv"]:
        assert (run_dir / name).is_file(), name
    for name in EVALUATION_FILES:
        if name.endswith(".png"):
            with Image.open(run_dir / name) as image:
                assert image.width >= 600 and image.height >= 300, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"top1", "top5", "macro_f1", "macro_auc", "log_loss", "per_class"} <= metrics.keys()
    assert [row["class"] for row in metrics["per_class"]] == ["apple", "cheese", "lettuce"]


def test_mlflow_holds_params_metrics_artifacts_and_tags(tracked):
    run_dir, uri, _, _ = tracked
    (run,) = only_run(uri)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["optimizer.lr"] == "0.001" and params["model.net._target_"].endswith("CNN16")
    history = client(uri).get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert run.data.metrics["test_top1"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["top1"])
    for key in ("git_commit", "dataset_fingerprint", "host", "device"):
        assert tags.get(key), key
    artifacts = {a.path for a in client(uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "bad_images.csv", *EVALUATION_FILES} <= artifacts


def test_secret_from_the_environment_is_never_recorded(tracked):
    run_dir, uri, _, result = tracked
    (run,) = only_run(uri)
    assert params_and_tags_text(run).count(SECRET) == 0
    assert run.data.params["data.azure_input"].endswith("&sig=***")
    local = Path(client(uri).download_artifacts(run.info.run_id, "", str(run_dir.parent / "artifacts")))
    for path in local.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stderr
    assert SECRET not in (run_dir / "lettucify.log").read_text()


def params_and_tags_text(run) -> str:
    return json.dumps([run.data.params, run.data.tags, run.info.run_name])


def test_the_console_has_lettucifys_lines_and_mlflows_go_to_the_log_file(tracked):
    run_dir, _, _, result = tracked
    log_file = (run_dir / "lettucify.log").read_text()
    assert "model registry: registered fridge-test version 1 as @candidate" in result.stderr
    for chatter in ("Successfully registered model 'fridge-test'", "Created version '1' of model"):
        assert chatter not in result.stderr
        assert chatter in log_file
    assert "Downloading artifacts" not in result.stderr


def test_registered_model_predicts_like_the_checkpoint(tracked):
    from lettucify.models.build import load_checkpoint_model
    from lettucify.tracking import load_registered

    run_dir, uri, _, _ = tracked
    registered, classes, preprocess = load_registered("models:/fridge-test@candidate", tracking_uri=uri)
    eager, eager_classes, eager_preprocess, _ = load_checkpoint_model(run_dir / "checkpoints" / "last.pt")
    assert classes == eager_classes and preprocess == eager_preprocess
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(registered(images), eager.eval()(images), rtol=1e-5, atol=1e-5)


def test_evaluation_only_on_the_registered_version_reproduces_the_metrics(tracked, tmp_path):
    run_dir, uri, images, _ = tracked
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "task=evaluate", "model_uri=models:/fridge-test/1",
         "data=imagefolder", f"data.root={images}", "compute.num_threads=1", f"logger.tracking_uri={uri}",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Downloading artifacts" not in result.stderr
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("top1", "top5", "macro_f1", "macro_auc", "log_loss"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-5), key


def test_a_crash_inside_training_marks_the_run_failed(tmp_path):
    images = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class_train=4, per_class_test=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A learning rate this large makes the loss non-finite in the first steps.
    result = cli(tmp_path / "run", images, uri, "optimizer.lr=1e30", "trainer.grad_clip_norm=null")
    assert result.returncode == 2
    assert "loss became" in result.stderr and "Traceback" not in result.stderr
    (run,) = only_run(uri)
    assert run.info.status == "FAILED"
    assert "loss became" in run.data.tags["error"]


def test_promote_task_moves_the_alias(tracked, tmp_path):
    _, uri, _, _ = tracked
    command = [sys.executable, "-m", "lettucify", "task=promote", "registry.name=fridge-test",
               f"logger.tracking_uri={uri}", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    version = client(uri).get_model_version_by_alias("fridge-test", "champion")
    assert version.version == client(uri).get_model_version_by_alias("fridge-test", "candidate").version
    assert version.tags["promoted_from"] == "candidate" and "test_top1" in version.tags

    missing = subprocess.run(command[:-2] + ["registry.name=nothing-here", f"hydra.run.dir={tmp_path}/2"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "no registered model 'nothing-here' in sqlite:///" in missing.stderr
    assert "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- the version as a pyfunc
@pytest.fixture(scope="module")
def test_photos(tracked):
    """The test photos, as base64, and what the checkpoint says of them through evaluation's
    decoding and eval_transform: (base64 strings, labels, probabilities)."""
    from lettucify.data.images import load_rgb
    from lettucify.data.transforms import eval_transform
    from lettucify.models.build import load_checkpoint_model

    run_dir, _, images, _ = tracked
    paths = sorted((images / "test").rglob("*.jpg"))
    eager, classes, preprocess, _ = load_checkpoint_model(run_dir / "checkpoints" / "last.pt")
    transform = eval_transform(preprocess["input_size"], preprocess["mean"], preprocess["std"])
    with torch.no_grad():
        logits = eager.eval()(torch.stack([transform(load_rgb(path)) for path in paths]))
    probabilities = torch.softmax(logits.double(), dim=1).numpy()
    labels = [classes[i] for i in probabilities.argmax(axis=1)]
    assert labels == [path.parent.name for path in paths]  # a trained model: the "right label" is the class
    return [base64.b64encode(path.read_bytes()).decode() for path in paths], labels, probabilities


def mlflow_env(uri: str) -> dict:
    """This environment with MLflow's store (tracking and registry) at ``uri``."""
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


# Run in a fresh process: which distributions Lettucify's own code imports while MLflow
# loads the version and predicts, and where that code came from.
PYFUNC_PROCESS = """
import builtins, importlib.metadata, json, sys
imported = set()
real_import = builtins.__import__
def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (globals or {}).get("__name__", "").startswith("lettucify"):
        imported.add(name.partition(".")[0])
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = recording_import
import mlflow.pyfunc
model = mlflow.pyfunc.load_model("models:/fridge-test@candidate")
predictions = model.predict(json.load(sys.stdin))
import lettucify
names = importlib.metadata.packages_distributions()
third_party = {d for n in imported - set(sys.stdlib_module_names) - {"lettucify"} for d in names.get(n, [n])}
print(json.dumps({"code": lettucify.__file__, "imports": sorted(third_party),
                  "labels": predictions["label"].tolist(), "probabilities": predictions["probabilities"].tolist()}))
"""


def test_the_pyfunc_runs_on_the_versions_own_code_and_needs_only_its_requirements(tracked, test_photos):
    from lettucify.config import REPO_ROOT
    from lettucify.tracking.registry import REQUIREMENTS

    _, uri, _, _ = tracked
    photos, labels, probabilities = test_photos
    done = subprocess.run([sys.executable, "-c", PYFUNC_PROCESS], input=json.dumps(photos), capture_output=True,
                          text=True, timeout=300, env=mlflow_env(uri))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    code = Path(result["code"])
    assert code.parts[-3:] == ("code", "lettucify", "__init__.py") and REPO_ROOT not in code.parents
    mlflow_itself = {"mlflow", "mlflow-skinny", "mlflow-tracing"}
    assert {d.lower() for d in result["imports"]} - mlflow_itself == {r.lower() for r in REQUIREMENTS}
    assert result["labels"] == labels
    np.testing.assert_allclose(result["probabilities"], probabilities, atol=1e-4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_mlflow_models_serve_answers_base64_photos(tracked, test_photos, tmp_path):
    _, uri, _, _ = tracked
    photos, labels, probabilities = test_photos
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fridge-test@candidate",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=mlflow_env(uri),
        start_new_session=True,  # its uvicorn child is stopped with it, as one process group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.3)
        status, answer = post_json(f"{url}/invocations", {"inputs": photos})
        assert status == 200, answer
        assert [row["label"] for row in answer["predictions"]] == labels
        np.testing.assert_allclose([row["probabilities"] for row in answer["predictions"]], probabilities, atol=1e-4)
        status, answer = post_json(f"{url}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[photos[-1]]]}})
        assert status == 200 and answer["predictions"][0]["label"] == labels[-1], answer
        status, answer = post_json(f"{url}/invocations", {"inputs": [photos[0], "not base64!"]})
        assert status == 400 and answer["message"].endswith("image 2: not valid base64"), answer
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()

