"""task=deploy deploy=local end to end: real server processes behind the real front, the
real CLI, and a stream of real requests from another process across every swap.

Two versions of a small cnn16 are registered once (generated images). Each test deploys
into a state folder and a port of its own.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import requests

from serving import MODEL, copied_version, evaluation_probabilities, registered_model

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """(images, tracking URI, a photo and its label): MODEL versions 1 and 2 registered (the
    same network), and the test photo the model is surest of, so no rounding flips it."""
    _, images, uri = registered_model(tmp_path_factory.mktemp("deploy"))
    assert copied_version(uri) == "2"
    photos = sorted((images / "test").rglob("*.jpg"))
    evaluate = evaluation_probabilities(f"models:/{MODEL}/1", uri)
    probs = np.sort(evaluate(photos), axis=1)
    best = int((probs[:, -1] - probs[:, -2]).argmax())
    return images, uri, photos[best], evaluate.classes[int(evaluate(photos[best:best + 1])[0].argmax())]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Deployment:
    """One local deployment: its state folder, its front's port, and the CLI to drive it."""

    def __init__(self, root: Path, images: Path, uri: str, photo: Path, label: str) -> None:
        self.root, self.images, self.uri, self.photo, self.label = root, images, uri, photo, label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self.runs = 0
        self.streams: List[Traffic] = []

    def cli(self, *overrides: str) -> subprocess.CompletedProcess:
        self.runs += 1
        return subprocess.run(
            [sys.executable, "-m", "lettucify", "task=deploy", "deploy=local", f"deploy.local.port={self.port}",
             f"deploy.local.state_dir={self.root / 'state'}", f"logger.tracking_uri={self.uri}", "data=imagefolder",
             f"data.root={self.images}", f"deploy.smoke_photo={self.photo}", "compute.num_threads=1",
             # The torch backend starts sooner (no ONNX export); the flow is the same.
             "deploy.local.serve_overrides=['serve.backend=torch']", f"hydra.run.dir={self.root / f'run{self.runs}'}",
             *overrides],
            capture_output=True, text=True, timeout=300,
        )

    def deploy(self, version: str, *overrides: str) -> subprocess.CompletedProcess:
        return self.cli(f"model_uri=models:/{MODEL}/{version}", *overrides)

    def status(self) -> List[str]:
        result = self.cli("deploy.action=status")
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()

    def traffic(self, min_requests: int, concurrency: int = 8) -> "Traffic":
        self.streams.append(Traffic(self, min_requests, concurrency))
        return self.streams[-1]


@pytest.fixture
def deployment(versions, tmp_path):
    """A deployment of its own, taken down whatever the test did."""
    made = Deployment(tmp_path, *versions)
    yield made
    for stream in made.streams:
        stream.flag.touch()
        stream.process.wait(60)
    if (tmp_path / "state").exists():
        made.cli("deploy.action=stop")


class Traffic:
    """tests/traffic.py against the front, from its own process, until stopped."""

    def __init__(self, deployment: Deployment, min_requests: int, concurrency: int) -> None:
        self.flag = deployment.root / f"stop-{deployment.runs}"
        self.out = deployment.root / f"traffic-{deployment.runs}.json"
        self.process = subprocess.Popen([
            sys.executable, str(TESTS / "traffic.py"), deployment.url, str(deployment.photo), str(self.out),
            "--concurrency", str(concurrency), "--min-requests", str(min_requests), "--until", str(self.flag)])
        time.sleep(2)  # under way before anything changes

    def stop(self) -> List[Dict]:
        self.flag.touch()
        assert self.process.wait(300) == 0
        return json.loads(self.out.read_text())


def percentiles(latencies: Sequence[float]) -> str:
    if len(latencies) < 2:
        return "n/a"
    cuts = statistics.quantiles(latencies, n=100)
    return f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms over {len(latencies)}"


def test_a_canary_swap_under_load_loses_no_request_and_changes_the_version(deployment):
    first = deployment.deploy("1")
    assert first.returncode == 0, first.stderr[-3000:]

    traffic = deployment.traffic(min_requests=2000)
    started = time.time()
    swap = deployment.deploy("2", "deploy.step_wait_s=2", f"deploy.smoke_label={deployment.label}")
    ended = time.time()
    time.sleep(1)
    records = traffic.stop()
    assert swap.returncode == 0, swap.stderr[-3000:]

    assert len(records) >= 2000
    lost = [r for r in records if r["status"] != 200]
    assert lost == [], f"{len(lost)} of {len(records)} requests lost: {lost[:3]}"
    before = [r for r in records if r["t"] < started]
    during = [r for r in records if started <= r["t"] <= ended]
    after = [r for r in records if r["t"] > ended]
    assert {(r["colour"], r["version"]) for r in before} == {("blue", "1")}
    assert {(r["colour"], r["version"]) for r in during} == {("blue", "1"), ("green", "2")}
    assert after and {(r["colour"], r["version"]) for r in after} == {("green", "2")}
    print(f"\nsteady: {percentiles([r['latency_ms'] for r in before])}; "
          f"during the swap: {percentiles([r['latency_ms'] for r in during])}; {len(lost)} lost of {len(records)}")

    assert deployment.status() == [
        f"local blue: {MODEL} version 1, traffic 0%, ready", f"local green: {MODEL} version 2, traffic 100%, ready"]
    from lettucify.tracking.store import client

    registry = client(deployment.uri)
    assert str(registry.get_model_version_by_alias(MODEL, "live").version) == "2"
    assert registry.get_model_version(MODEL, "1").tags["lettucify.deploy.local.traffic"] == "0"

    # The endpoint suite, as a user runs it, against the deployment.
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "endpoint"),
         f"--endpoint-url={deployment.url}", f"--photo={deployment.photo}", f"--label={deployment.label}",
         "--model-version=2"],
        capture_output=True, text=True, timeout=120,
    )
    assert suite.returncode == 0 and "5 passed" in suite.stdout, suite.stdout[-3000:]

    rolled = deployment.cli("deploy.action=rollback")
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert requests.post(deployment.url, data=deployment.photo.read_bytes(),
                         headers={"Content-Type": "image/jpeg"}, timeout=30).json()["model"]["version"] == "1"
    stopped = deployment.cli("deploy.action=stop")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{deployment.port}/health", timeout=5)


def test_a_bad_green_never_takes_over_and_blue_serves_throughout(deployment):
    assert deployment.deploy("1").returncode == 0
    traffic = deployment.traffic(min_requests=300, concurrency=2)

    # A smoke test that fails: green never gets live traffic.
    smoke_started = time.time()
    smoke = deployment.deploy("2", "deploy.smoke_label=nothing-like-it")
    smoke_ended = time.time()
    assert smoke.returncode == 2
    line = smoke.stderr.strip().splitlines()[-1]
    assert f"smoke: known photo: {deployment.photo.name} got the label {deployment.label!r}, not 'nothing-like-it'" in line, line
    assert line.endswith("rolled back: blue keeps 100%, green has 0%")
    assert deployment.status() == [
        f"local blue: {MODEL} version 1, traffic 100%, ready", f"local green: {MODEL} version 2, traffic 0%, ready"]

    # A gate that trips at the first canary step (no green answers within 1 microsecond).
    gate = deployment.deploy("2", "deploy.step_wait_s=2", "deploy.max_p99_ms=0.001", f"deploy.smoke_label={deployment.label}")
    assert gate.returncode == 2
    line = gate.stderr.strip().splitlines()[-1]
    assert "gate at 10%: p99 latency" in line and line.endswith("rolled back: blue keeps 100%, green has 0%"), line
    records = traffic.stop()

    assert [r for r in records if r["status"] != 200] == []
    assert {r["colour"] for r in records if smoke_started <= r["t"] <= smoke_ended} == {"blue"}
    green = [r for r in records if r["colour"] == "green"]
    assert 0 < len(green) < 0.3 * len(records)  # only in the gate's 10% step
    assert deployment.status()[0] == f"local blue: {MODEL} version 1, traffic 100%, ready"
