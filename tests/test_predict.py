"""task=predict: the real CLI over a folder, here and through a running server's URL.

A small cnn16 is trained and registered once on generated images; its labels for the
test photos are compared with what evaluation computes. A stand-in endpoint (a real HTTP
server in this process) answers 503 first, to show the client's retries and its bound on
requests in flight.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import pytest

from serving import MODEL, TOLERANCE, ServerProcess, evaluation_probabilities, registered_model

SECRET = "predict-key-5e1b"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return registered_model(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def folder(trained) -> Path:
    """The test photos in their class folders, with a text file and a cut-off JPEG among them."""
    root, images, _ = trained
    folder = root / "to-label"
    shutil.copytree(images / "test", folder)
    (folder / "a" / "notes.txt").write_text("not a photo\n")
    (folder / "b" / "broken.jpg").write_bytes((folder / "b" / "0.jpg").read_bytes()[:300])
    return folder


def predict(run_dir: Path, *overrides: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "lettucify", "task=predict", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )


def rows(run_dir: Path) -> List[Dict[str, str]]:
    with (run_dir / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_evaluations_labels(found: List[Dict[str, str]], folder: Path, expected) -> None:
    """The photos' rows have evaluation's label and score; the two bad files, their errors."""
    by_path = {Path(row["path"]): row for row in found}
    assert set(by_path) == {p for p in folder.rglob("*") if p.is_file()}
    photos = sorted(p for p in by_path if p.name not in ("notes.txt", "broken.jpg"))
    probs = expected(photos)
    for photo, row in zip(photos, probs):
        line = by_path[photo]
        assert line["error"] == ""
        assert line["label"] == expected.classes[int(row.argmax())]
        assert float(line["score"]) == pytest.approx(row.max(), abs=TOLERANCE)
        top = json.loads(line["top_k"])
        assert list(top) == [expected.classes[i] for i in (-row).argsort()]
        assert line["true_label"] == photo.parent.name
    assert "not a JPEG or PNG or WEBP image" in by_path[folder / "a" / "notes.txt"]["error"]
    assert "truncated or corrupt" in by_path[folder / "b" / "broken.jpg"]["error"]
    for bad in (folder / "a" / "notes.txt", folder / "b" / "broken.jpg"):
        assert by_path[bad]["label"] == by_path[bad]["score"] == ""


def test_a_folder_gets_evaluations_labels_and_rows_for_the_files_it_cannot_read(trained, folder, tmp_path):
    root, _, uri = trained
    expected = evaluation_probabilities(f"models:/{MODEL}/1", uri)
    result = predict(tmp_path / "here", f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}",
                     f"input={folder}", "predict.batch_size=5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Labelled 12 of 14 files (2 with an error)" in result.stdout
    found = rows(tmp_path / "here")
    assert_evaluations_labels(found, folder, expected)

    # Class folders: the evaluation of the 12 photos, as task=evaluate writes it.
    metrics = json.loads((tmp_path / "here" / "metrics.json").read_text())
    assert metrics["num_images"] == 12
    right = [r["label"] == r["true_label"] for r in found if not r["error"]]
    assert metrics["top1"] == pytest.approx(sum(right) / len(right))
    for plot in ("confusion_matrix.png", "roc_curves.png", "pr_curves.png"):
        assert (tmp_path / "here" / plot).stat().st_size > 1000


def test_through_a_running_server_the_labels_are_the_same(trained, folder, tmp_path):
    root, _, uri = trained
    expected = evaluation_probabilities(f"models:/{MODEL}/1", uri)
    with ServerProcess([f"model_uri=models:/{MODEL}@candidate", f"logger.tracking_uri={uri}"], tmp_path / "served",
                       env={"LETTUCIFY_API_KEY": SECRET}, api_key=SECRET) as server:
        refused = predict(tmp_path / "no-key", f"input={folder}", f"predict.endpoint_url={server.url}/predict",
                          env={"LETTUCIFY_API_KEY": ""})
        result = predict(tmp_path / "remote", f"input={folder}", f"predict.endpoint_url={server.url}/score",
                         env={"LETTUCIFY_API_KEY": SECRET})
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("the endpoint refused the API key (set it in $LETTUCIFY_API_KEY)")
    assert "Traceback" not in refused.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert_evaluations_labels(rows(tmp_path / "remote"), folder, expected)
    assert (tmp_path / "remote" / "metrics.json").is_file()
    assert SECRET not in (tmp_path / "remote" / "lettucify.log").read_text()


class Flaky(BaseHTTPRequestHandler):
    """A /predict that answers every image's first request 503 (Retry-After: 0), and
    counts requests and the most of them in flight at once."""

    seen: Dict[str, int] = {}
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            Flaky.in_flight += 1
            Flaky.most_in_flight = max(Flaky.most_in_flight, Flaky.in_flight)
            tries = self.seen[body["image"]] = self.seen.get(body["image"], 0) + 1
        time.sleep(0.02)
        with self.lock:
            Flaky.in_flight -= 1
        name = base64.b64decode(body["image"]).decode()
        if tries == 1:
            self.answer(503, {"error": "busy"}, {"Retry-After": "0"})
        else:
            self.answer(200, {"predictions": [{"label": name, "score": 0.9, "top_k": [
                {"label": name, "score": 0.9}, {"label": "other", "score": 0.1}]}]})

    def answer(self, status: int, payload: Dict, headers: Dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_an_endpoint_that_is_busy_is_retried_with_a_bounded_number_of_requests_in_flight(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(20):  # the stand-in labels each "photo" with its own text
        (photos / f"{n:02d}.jpg").write_text(f"label-{n:02d}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = predict(tmp_path / "run", f"input={photos}/*.jpg", "predict.concurrency=3",
                         f"predict.endpoint_url=http://127.0.0.1:{server.server_address[1]}/predict")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["path"], r["label"]) for r in rows(tmp_path / "run")] == [
        (str(photos / f"{n:02d}.jpg"), f"label-{n:02d}") for n in range(20)]
    assert sorted(Flaky.seen.values()) == [2] * 20  # each: a 503, then its answer
    assert 1 < Flaky.most_in_flight <= 3


@pytest.mark.parametrize("overrides, message", [
    (["input=/nonexistent/photos"], "input=/nonexistent/photos is no folder or file, and no file matches it as a glob"),
    ([], "task=predict needs input=<folder, photo or glob>"),
    (["input=."], "task=predict needs exactly one of checkpoint=<file>, model_uri=models:/<name>@<alias> or predict.endpoint_url=<URL>"),
    (["input=.", "predict.endpoint_url=localhost:8080"], "predict.endpoint_url=localhost:8080: must be an http:// or https:// URL"),
    (["input=.", "predict.endpoint_url=http://127.0.0.1:9/predict", "predict.retries=0"],
     "no answer from http://127.0.0.1:9/predict (ConnectionError) after 1 try: is the server running at predict.endpoint_url?"),
])
def test_a_wrong_call_is_one_line_that_says_what_to_do(tmp_path, overrides, message):
    result = predict(tmp_path / "run", *overrides)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr
