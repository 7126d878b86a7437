"""The server's parts in this process: micro-batching, the timeout, answers, refusals."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from lettucify.data.images import load_rgb
from lettucify.serve.batching import MicroBatcher, QueueFull
from lettucify.serve.inference import Labeller
from lettucify.serve.limits import RequestError, image_error, within


def recording_batcher(**settings):
    sizes, gate = [], threading.Event()

    def run(images: np.ndarray) -> np.ndarray:
        gate.wait(5)
        sizes.append(len(images))
        return images * 10

    settings = {"max_batch_size": 4, "max_wait_s": 0.0, "max_queue": 8, **settings}
    return MicroBatcher(run, **settings).start(), sizes, gate


def test_queued_requests_run_together_up_to_max_batch_size_and_each_gets_its_rows():
    batcher, sizes, gate = recording_batcher()
    first = batcher.submit(np.array([[0.0]]))  # taken at once; the model run waits at the gate
    time.sleep(0.05)
    rest = [batcher.submit(np.array([[float(i)]] * n)) for i, n in [(1, 2), (2, 1), (3, 2), (4, 1)]]
    gate.set()
    assert first.result(5).tolist() == [[0.0]]
    assert [f.result(5).ravel().tolist() for f in rest] == [[10, 10], [20], [30, 30], [40]]
    batcher.stop()
    assert sizes == [1, 3, 3]  # 2 + 1 fit in 4; the next 2 would not, so 2 + 1 again


def test_max_wait_gathers_requests_that_arrive_soon_after():
    batcher, sizes, gate = recording_batcher(max_wait_s=0.3)
    gate.set()
    futures = [batcher.submit(np.zeros((1, 1)))]
    time.sleep(0.05)
    futures.append(batcher.submit(np.zeros((1, 1))))
    [f.result(5) for f in futures]
    batcher.stop()
    assert sizes == [2]


def test_a_full_queue_refuses_at_once_with_a_retry_hint():
    batcher, sizes, gate = recording_batcher(max_queue=4)
    batcher.submit(np.zeros((1, 1)))  # being run
    time.sleep(0.05)
    queued = batcher.submit(np.zeros((4, 1)))
    with pytest.raises(QueueFull, match="4 images queued") as err:
        batcher.submit(np.zeros((1, 1)))
    assert err.value.retry_after_s >= 1
    gate.set()
    assert queued.result(5).shape == (4, 1)
    batcher.stop()


def test_a_cancelled_request_is_not_run_and_a_failed_run_fails_only_its_requests():
    calls = []

    def run(images):
        calls.append(len(images))
        if len(images) == 3:
            raise RuntimeError("model broke")
        return images

    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.2, max_queue=8).start()
    gone = batcher.submit(np.zeros((5, 1)))
    assert gone.cancel()
    broken = batcher.submit(np.zeros((3, 1)))
    with pytest.raises(RuntimeError, match="model broke"):
        broken.result(5)
    assert batcher.submit(np.zeros((2, 1))).result(5).shape == (2, 1)
    batcher.stop()
    assert calls == [3, 2]


def test_a_slow_answer_is_a_504():
    with pytest.raises(RequestError, match="serve.request_timeout_s=0.05s") as err:
        asyncio.run(within(asyncio.sleep(1), 0.05))
    assert err.value.status == 504
    assert asyncio.run(within(asyncio.sleep(0, "done"), 1)) == "done"


def test_labels_scores_and_top_k():
    labeller = Labeller(["apple", "bread", "cheese"], top_k=2)
    (answer,) = labeller(np.array([[0.2, 0.1, 0.7]], np.float32))
    assert answer["label"] == "cheese" and answer["score"] == pytest.approx(0.7)
    assert [e["label"] for e in answer["top_k"]] == ["cheese", "apple"]
    assert len(Labeller(["a", "b"], top_k=5)(np.array([[0.5, 0.5]]))[0]["top_k"]) == 2


@pytest.mark.parametrize("data, status", [(b"", 400), (b"GIF89a....", 415), (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, 422)])
def test_an_image_the_decoder_refuses_gets_its_status(data, status):
    with pytest.raises(Exception) as err:
        load_rgb(data, formats=("JPEG", "PNG", "WEBP"), name="image")
    assert image_error(err.value).status == status


def test_a_model_folder_is_served_under_the_registered_name_and_version_it_is_given(monkeypatch):
    from test_config import compose_cfg

    from lettucify.tasks.serve import _model

    plain = compose_cfg(["task=serve", "model_uri=/model"])
    assert _model(plain)[0] == {"name": "/model", "version": None, "alias": None, "deployment": None}
    # As a container is started (Kubernetes: overrides; Azure: its environment).
    monkeypatch.setenv("LETTUCIFY_MODEL_NAME", "lettucify-food16")
    monkeypatch.setenv("LETTUCIFY_MODEL_VERSION", "7")
    monkeypatch.setenv("LETTUCIFY_DEPLOYMENT", "green")
    named = compose_cfg(["task=serve", "model_uri=/model"])
    identity, source = _model(named)
    assert identity == {"name": "lettucify-food16", "version": "7", "alias": None, "deployment": "green"}
    assert source["model_uri"] == "/model"


@pytest.mark.parametrize("page", [True, False])
def test_the_page_opens_without_the_key_and_serve_page_false_removes_it(monkeypatch, page):
    from fastapi.testclient import TestClient

    from lettucify.serve.app import create_app

    monkeypatch.setenv("LETTUCIFY_API_KEY", "k3y")
    spec = {"serve": {"page": page}, "classes": ["apple"],
            "model": {"name": "fridge", "version": "1", "alias": None, "deployment": None},
            "preprocess": {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}
    client = TestClient(create_app(spec))  # no lifespan: the page needs no model
    answers = {path: client.get(path) for path in ("/", "/page/page.js", "/page/page.css", "/page/nothing.js")}
    assert client.post("/predict").status_code == 401
    if not page:
        assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(answers, 404)
        assert answers["/"].json() == {"error": "Not Found"}
        return
    assert answers["/"].status_code == 200 and answers["/"].headers["content-type"].startswith("text/html")
    assert '<script src="page/page.js"' in answers["/"].text
    assert "script-src 'self'" in answers["/"].headers["content-security-policy"]
    assert answers["/page/page.js"].headers["content-type"].startswith("text/javascript")
    assert answers["/page/page.css"].headers["content-type"].startswith("text/css")
    assert answers["/page/nothing.js"].status_code == 404
    assert answers["/page/nothing.js"].json() == {"error": "no page file 'nothing.js'"}
    assert "/" not in client.get("/openapi.json", headers={"Authorization": "Bearer k3y"}).json()["paths"]
