"""task=serve: the real server process on a free localhost port, through a real HTTP client.

A small cnn16 is trained and registered once (generated images, a SQLite MLflow store in a
temporary folder); the answers are compared with what evaluation computes for the same
photos. With LETTUCIFY_DATA_DIR, the food16 test set is compared with task=evaluate itself.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from helpers import FOOD16
from serving import MODEL, TOLERANCE, ServerProcess, evaluation_probabilities, registered_model

SECRET = "tEsT-kEy-9f2c1d"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return registered_model(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def photos(trained) -> List[Path]:
    return sorted((trained[1] / "test").rglob("*.jpg"))


@pytest.fixture(scope="module")
def expected(trained):
    return evaluation_probabilities(f"models:/{MODEL}/1", trained[2])


@pytest.fixture(scope="module")
def server(trained):
    root, _, uri = trained
    env = {"LETTUCIFY_API_KEY": SECRET, "LETTUCIFY_DEPLOYMENT": "blue"}
    with ServerProcess([f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}"], root / "served",
                       env=env, api_key=SECRET) as running:
        yield running


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_answers(predictions: List[Dict], paths: Sequence[Path], expected) -> None:
    """Each prediction is evaluation's for its photo: label, score and the full top k."""
    probs = expected(paths)
    classes = expected.classes
    assert len(predictions) == len(paths)
    for prediction, row in zip(predictions, probs):
        assert set(prediction) == {"label", "score", "top_k"}
        assert prediction["label"] == classes[int(row.argmax())]
        assert prediction["score"] == pytest.approx(row.max(), abs=TOLERANCE)
        assert [p["label"] for p in prediction["top_k"]] == [classes[i] for i in np.argsort(-row)]
        assert prediction["top_k"][0] == {"label": prediction["label"], "score": prediction["score"]}
        for entry in prediction["top_k"]:
            assert entry["score"] == pytest.approx(row[classes.index(entry["label"])], abs=TOLERANCE)


# --------------------------------------------------------------------------- answers
def test_a_photo_gets_evaluations_label_in_the_issues_shape(server, photos, expected):
    answer = server.post("/predict", data=photos[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"predictions", "model"}
    assert body["model"] == {"name": MODEL, "version": "1", "alias": "candidate", "deployment": "blue"}
    assert_answers(body["predictions"], photos[:1], expected)


def test_a_batch_of_8_through_each_input_form(server, photos, expected):
    batch = photos[:8]
    raw = [server.post("/predict", data=p.read_bytes(), headers={"Content-Type": "image/jpeg"}) for p in batch]
    assert_answers([r.json()["predictions"][0] for r in raw], batch, expected)

    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in batch]
    assert_answers(server.post("/predict", files=files).json()["predictions"], batch, expected)

    images = [b64(p.read_bytes()) for p in batch]
    assert_answers(server.post("/score", json={"images": images}).json()["predictions"], batch, expected)
    single = server.post("/predict", json={"image": images[3]}).json()["predictions"]
    assert_answers(single, batch[3:4], expected)

    v2 = server.post(f"/v2/models/{MODEL}/infer", json={
        "id": "batch-8", "inputs": [{"name": "images", "datatype": "BYTES", "shape": [8], "data": images}],
    })
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1" and body["id"] == "batch-8"
    labels, probs = body["outputs"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [8, 3]
    np.testing.assert_allclose(np.reshape(probs["data"], (8, 3)), expected(batch), atol=TOLERANCE)
    assert labels["datatype"] == "BYTES" and labels["data"] == [expected.classes[i] for i in expected(batch).argmax(1)]


def test_v2_metadata_and_probes(server):
    metadata = server.get(f"/v2/models/{MODEL}").json()
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]} in metadata["outputs"]
    for route in ("/health", "/ready", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        assert server.get(route).status_code == 200, route
    assert "/predict" in server.get("/openapi.json").json()["paths"]
    assert server.get("/docs").status_code == 200


def test_64_concurrent_requests_all_get_their_answer(server, photos, expected):
    chosen = [photos[i % len(photos)] for i in range(64)]

    def ask(path: Path) -> requests.Response:
        return server.request("POST", "/predict", session=requests, data=path.read_bytes(),
                              headers={"Content-Type": "image/jpeg"})

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, chosen))
    assert [a.status_code for a in answers] == [200] * 64
    assert_answers([a.json()["predictions"][0] for a in answers], chosen, expected)


# --------------------------------------------------------------------------- bad input
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(path: Path, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format=fmt)
    return buffer.getvalue()


def corrupt_png(path: Path) -> bytes:
    data = bytearray(encoded(path, "PNG"))
    data[30] ^= 0xFF  # inside the IHDR chunk's CRC
    return bytes(data)


def pixel_bomb() -> bytes:
    """A 20000x20000 PNG of a few KB: a header and the start of its (zero) pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (20000 * 3 + 1) * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def v2(data, datatype="BYTES", shape=None) -> Dict:
    return {"inputs": [{"name": "images", "datatype": datatype, "shape": shape or [len(data)], "data": data}]}


JPEG = "image/jpeg"
# id -> (method, route, request arguments from a test photo, status)
MALFORMED = {
    "empty body": ("POST", "/predict", lambda p: {"data": b"", "headers": {"Content-Type": JPEG}}, 400),
    "no content type": ("POST", "/predict", lambda p: {"data": p.read_bytes()}, 415),
    "text/plain": ("POST", "/predict", lambda p: {"data": b"hi", "headers": {"Content-Type": "text/plain"}}, 415),
    "text as image/jpeg": ("POST", "/predict", lambda p: {"data": b"not a photo\n" * 9, "headers": {"Content-Type": JPEG}}, 415),
    "truncated jpeg": ("POST", "/predict", lambda p: {"data": p.read_bytes()[:400], "headers": {"Content-Type": JPEG}}, 422),
    "png with a corrupt chunk": ("POST", "/predict", lambda p: {"data": corrupt_png(p), "headers": {"Content-Type": "image/png"}}, 422),
    "gif": ("POST", "/predict", lambda p: {"data": encoded(p, "GIF"), "headers": {"Content-Type": "image/gif"}}, 415),
    "gif as image/jpeg": ("POST", "/predict", lambda p: {"data": encoded(p, "GIF"), "headers": {"Content-Type": JPEG}}, 415),
    "tiff in json": ("POST", "/predict", lambda p: {"json": {"image": b64(encoded(p, "TIFF"))}}, 415),
    "invalid base64": ("POST", "/predict", lambda p: {"json": {"image": "@@not base64@@"}}, 400),
    "invalid json": ("POST", "/predict", lambda p: {"data": b'{"image": ', "headers": {"Content-Type": "application/json"}}, 400),
    "json without image": ("POST", "/predict", lambda p: {"json": {"picture": b64(p.read_bytes())}}, 400),
    "images not a list": ("POST", "/predict", lambda p: {"json": {"images": b64(p.read_bytes())}}, 400),
    "image a number": ("POST", "/score", lambda p: {"json": {"image": 42}}, 400),
    "multipart without file": ("POST", "/predict", lambda p: {"files": {"photo": ("a.jpg", p.read_bytes(), JPEG)}}, 400),
    "20 MB body": ("POST", "/predict", lambda p: {"data": b"\xff" * (20 << 20), "headers": {"Content-Type": JPEG}}, 413),
    "pixel bomb": ("POST", "/predict", lambda p: {"data": pixel_bomb(), "headers": {"Content-Type": "image/png"}}, 413),
    "batch over the limit": ("POST", "/predict", lambda p: {"json": {"images": [b64(p.read_bytes())] * 33}}, 413),
    "v2 wrong datatype": ("POST", f"/v2/models/{MODEL}/infer", lambda p: {"json": v2([0.5, 0.1], "FP32")}, 400),
    "v2 wrong shape": ("POST", f"/v2/models/{MODEL}/infer", lambda p: {"json": v2([b64(p.read_bytes())], shape=[2, 3])}, 400),
    "v2 unknown model": ("POST", "/v2/models/nobody/infer", lambda p: {"json": v2([b64(p.read_bytes())])}, 404),
    "v2 without inputs": ("POST", f"/v2/models/{MODEL}/infer", lambda p: {"json": {"outputs": []}}, 400),
    "negative top_k": ("POST", "/predict?top_k=-1", lambda p: {"data": p.read_bytes(), "headers": {"Content-Type": JPEG}}, 400),
    "top_k not a number": ("POST", "/score?top_k=all", lambda p: {"json": {"image": b64(p.read_bytes())}}, 400),
    "unknown route": ("GET", "/nowhere", lambda p: {}, 404),
    "wrong method": ("GET", "/predict", lambda p: {}, 405),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_request_gets_its_4xx_and_the_server_goes_on(server, photos, expected, case):
    method, route, arguments, status = MALFORMED[case]
    answer = server.request(method, route, **arguments(photos[0]))
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and error
    valid = server.post("/predict", data=photos[1].read_bytes(), headers={"Content-Type": JPEG})
    assert valid.status_code == 200
    assert_answers(valid.json()["predictions"], photos[1:2], expected)


def test_a_request_may_ask_for_its_own_top_k(server, photos, expected):
    def top_k(query: str) -> List[str]:
        answer = server.post(f"/predict{query}", data=photos[0].read_bytes(), headers={"Content-Type": JPEG})
        return [entry["label"] for entry in answer.json()["predictions"][0]["top_k"]]

    ranked = [expected.classes[i] for i in np.argsort(-expected(photos[:1])[0])]
    assert top_k("?top_k=1") == ranked[:1]
    assert top_k("?top_k=0") == top_k("?top_k=99") == ranked  # every class


def test_errors_say_what_was_wrong(server, photos):
    def error(**arguments) -> str:
        return server.post("/predict", **arguments).json()["error"]

    assert "over max_image_pixels" in error(data=pixel_bomb(), headers={"Content-Type": "image/png"})
    assert "33 images is over serve.max_batch_images=32" in error(json={"images": [b64(photos[0].read_bytes())] * 33})
    assert "not a JPEG or PNG or WEBP image" in error(data=encoded(photos[0], "GIF"), headers={"Content-Type": JPEG})
    assert "image 2 of 2: truncated or corrupt" in error(
        json={"images": [b64(photos[0].read_bytes()), b64(photos[0].read_bytes()[:400])]})


# --------------------------------------------------------------------------- key, metrics
def test_the_api_key_is_enforced_and_never_written(server):
    for route in ("/predict", "/metrics", "/docs", f"/v2/models/{MODEL}"):
        method = "POST" if route == "/predict" else "GET"
        assert server.request(method, route, key=None).status_code == 401, route
        assert server.request(method, route, key=SECRET[:-1] + "x").status_code == 401, route
    for route in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
        assert server.get(route, key=None).status_code == 200, route
    assert "Bearer" in server.post("/predict", key=None).headers["WWW-Authenticate"]
    for path in server.run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def samples(server) -> Dict:
    text = server.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_was_sent(server, photos):
    before = samples(server)
    for path in photos[:3]:
        assert server.post("/predict", data=path.read_bytes(), headers={"Content-Type": JPEG}).status_code == 200
    for _ in range(2):
        assert server.post("/predict", data=b"x", headers={"Content-Type": "image/gif"}).status_code == 415
    after = samples(server)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    common = {"route": "/predict", "model_version": "1", "deployment": "blue"}
    assert delta("lettucify_requests_total", status="200", **common) == 3
    assert delta("lettucify_requests_total", status="415", **common) == 2
    assert delta("lettucify_request_duration_seconds_count", route="/predict") == 5
    assert delta("lettucify_inference_batch_size_sum") == 3
    assert after[("lettucify_model_info", (("alias", "candidate"), ("name", MODEL), ("version", "1")))] == 1


def test_every_request_has_one_access_log_line(server):
    server.get("/health")
    lines = [line for line in server.stderr().splitlines() if "lettucify.serve.access" in line]
    assert lines and lines[-1].endswith("GET /health 200 " + lines[-1].split(" 200 ")[1])
    assert any("POST /predict 200" in line and "images=1" in line for line in lines)


def test_two_worker_processes_answer_and_metrics_add_up_across_them(trained, photos, expected):
    root, _, uri = trained
    overrides = [f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}", "serve.workers=2"]
    with ServerProcess(overrides, root / "served-2") as server:
        def ask(path: Path) -> requests.Response:
            # A connection each, so that both processes take some.
            return requests.post(f"{server.url}/predict", data=path.read_bytes(), headers={"Content-Type": JPEG}, timeout=60)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, photos))
        assert_answers([a.json()["predictions"][0] for a in answers], photos, expected)
        counted = samples(server)
    ok = ("lettucify_requests_total", (("deployment", ""), ("model_version", "1"), ("route", "/predict"), ("status", "200")))
    assert counted[ok] == len(photos)
    assert counted[("lettucify_inference_batch_size_sum", ())] == len(photos)
    assert counted[("lettucify_model_info", (("alias", "candidate"), ("name", MODEL), ("version", "1")))] == 1


# --------------------------------------------------------------------------- torch, queue, SIGTERM
def test_torch_backend_full_queue_and_sigterm_during_requests(trained, photos, expected):
    root, _, uri = trained
    overrides = [f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}", "serve.backend=torch",
                 # Batches wait 400 ms for company: requests are in flight long enough to overlap.
                 "serve.max_batch_wait_ms=400", "serve.max_batch_size=64",
                 "serve.max_batch_images=8", "serve.max_queue_images=8"]
    server = ServerProcess(overrides, root / "served-torch")
    try:
        images = [b64(p.read_bytes()) for p in photos[:8]]
        answer = server.post("/predict", json={"images": images})
        assert_answers(answer.json()["predictions"], photos[:8], expected)

        def post(batch) -> requests.Response:
            return server.request("POST", "/predict", session=requests, json={"images": batch})

        with ThreadPoolExecutor(2) as pool:
            first = [pool.submit(post, images[:4]), pool.submit(post, images[4:])]
            time.sleep(0.15)
            busy = post(images[:4])
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
            assert "serve.max_queue_images=8" in busy.json()["error"]
            assert [f.result().status_code for f in first] == [200, 200]

        with ThreadPoolExecutor(6) as pool:
            in_flight = [pool.submit(post, [image]) for image in images[:6]]
            time.sleep(0.15)
            status = server.terminate()
            answers = [f.result() for f in in_flight]
        assert [a.status_code for a in answers] == [200] * 6
        assert_answers([a.json()["predictions"][0] for a in answers], photos[:6], expected)
        assert status == 0, server.stderr()[-2000:]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/health", timeout=5)
    finally:
        server.stop()


# --------------------------------------------------------------------------- food16 and task=evaluate


@pytest.mark.slow
def test_every_food16_test_photo_gets_task_evaluates_label_and_probabilities(food16_model, tmp_path, monkeypatch):
    """Served, and labelled by task=predict here and through the server, as task=evaluate labels it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lettucify.config import REPO_ROOT
    from lettucify.evaluate.metrics import softmax_probs
    from lettucify.tasks import evaluate

    uri = food16_model[1]
    model_uri = f"models:/{MODEL}/1"

    # task=evaluate itself, in this process, keeping the logits it writes its report from.
    seen = {}
    real_write = evaluate.write_evaluation

    def keep(logits, labels, classes, samples, out_dir, **kwargs):
        seen.update(logits=logits, classes=classes, samples=samples)
        return real_write(logits, labels, classes, samples, out_dir, **kwargs)

    monkeypatch.setattr(evaluate, "write_evaluation", keep)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=evaluate", f"model_uri={model_uri}", f"logger.tracking_uri={uri}", "compute.num_threads=1",
            f"paths.output_dir={tmp_path / 'evaluate'}", f"data.root={FOOD16}",
        ])
    top1 = evaluate.run(cfg)["test_top1"]
    assert_evaluation_tracked(tmp_path / "evaluate", uri, model_uri, top1)
    evaluated = softmax_probs(seen["logits"])
    classes = seen["classes"]
    paths = [Path(path) for path, _ in seen["samples"]]
    assert len(paths) == 189

    # Served with the same trainer.tta_flip (true) that evaluation used; top_k: every class.
    overrides = [f"model_uri={model_uri}", f"logger.tracking_uri={uri}", "serve.top_k=16"]
    with ServerProcess(overrides, tmp_path / "served") as server:
        def ask(path: Path) -> Dict:
            answer = server.request("POST", "/predict", session=requests, data=path.read_bytes(),
                                    headers={"Content-Type": JPEG})
            assert answer.status_code == 200, (path, answer.text)
            return answer.json()["predictions"][0]

        with ThreadPoolExecutor(4) as pool:
            predictions = list(pool.map(ask, paths))
        remote = predict_folder(tmp_path / "predict-remote", f"predict.endpoint_url={server.url}/predict")
    here = predict_folder(tmp_path / "predict-here", f"model_uri={model_uri}", f"logger.tracking_uri={uri}")
    labels = [p["label"] for p in predictions]
    assert labels == [classes[i] for i in evaluated.argmax(axis=1)]
    served = np.array([[{e["label"]: e["score"] for e in p["top_k"]}[c] for c in classes] for p in predictions])
    assert np.abs(served - evaluated).max() <= TOLERANCE
    assert np.mean([label == classes[true] for label, (_, true) in zip(labels, seen["samples"])]) == pytest.approx(top1)

    # task=predict's predictions.csv: evaluate's rows, here and through the server.
    evaluated_rows = read_predictions(tmp_path / "evaluate")
    assert [row["path"] for row in evaluated_rows] == [str(p) for p in paths]
    for predicted in (here, remote):
        assert [row["path"] for row in predicted] == [str(p) for p in paths]
        assert [row["label"] for row in predicted] == [row["label"] for row in evaluated_rows] == labels
        assert [row["true_label"] for row in predicted] == [row["true_label"] for row in evaluated_rows]
        for got, want in zip(predicted, evaluated_rows):
            assert float(got["score"]) == pytest.approx(float(want["score"]), abs=TOLERANCE)
    for run in ("predict-here", "predict-remote"):
        assert json.loads((tmp_path / run / "metrics.json").read_text())["top1"] == pytest.approx(top1)


def assert_evaluation_tracked(run_dir: Path, uri: str, model_uri: str, top1: float) -> None:
    """task=evaluate's report names the model it tested, and its MLflow run has the metrics and files."""
    from lettucify.tracking.store import client

    report = (run_dir / "report.html").read_text()
    assert "Lettucify evaluation report" in report and f"model_uri={model_uri}" in report
    store = client(uri)
    [run] = store.search_runs([store.get_experiment_by_name("lettucify").experiment_id],
                              "tags.`lettucify.task` = 'evaluate'")
    assert run.info.status == "FINISHED" and run.data.metrics["test_top1"] == pytest.approx(top1)
    assert run.data.tags["lettucify.evaluated"] == f"model_uri={model_uri}"
    assert {"report.html", "predictions.csv", "confusion_matrix.png"} <= {a.path for a in store.list_artifacts(run.info.run_id)}


def predict_folder(run_dir: Path, *overrides: str) -> List[Dict[str, str]]:
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "task=predict", f"input={FOOD16 / 'test'}", f"hydra.run.dir={run_dir}",
         *overrides], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return read_predictions(run_dir)


def read_predictions(run_dir: Path) -> List[Dict[str, str]]:
    with (run_dir / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
