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

import pytest
import requests

from serving import MODEL, registered_model, train

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """(images, tracking URI): MODEL versions 1 and 2 registered."""
    root, images, uri = registered_model(tmp_path_factory.mktemp("deploy"))
    train(root / "v2", images, uri, "seed=1")
    return images, uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Deployment:
    """One local deployment: its state folder, its front's port, and the CLI to drive it."""

    def __init__(self, root: Path, images: Path, uri: str) -> None:
        self.root, self.images, self.uri = root, images, uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self.photo = sorted((images / "test" / "b").glob("*.jpg"))[0]
        self.runs = 0

    def cli(self, *overrides: str) -> subprocess.CompletedProcess:
        self.runs += 1
        return subprocess.run(
            [sys.executable, "-m", "lettucify", "task=deploy", "deploy=local", f"deploy.local.port={self.port}",
             f"deploy.local.state_dir={self.root / 'state'}", f"logger.tracking_uri={self.uri}", "data=imagefolder",
             f"data.root={self.images}", "compute.num_threads=1", f"hydra.run.dir={self.root / f'run{self.runs}'}",
             *overrides],
            capture_output=True, text=True, timeout=300,
        )

    def deploy(self, version: str, *overrides: str) -> subprocess.CompletedProcess:
        return self.cli(f"model_uri=models:/{MODEL}/{version}", *overrides)

    def status(self) -> List[str]:
        result = self.cli("deploy.action=status")
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()

    def traffic(self, min_requests: int) -> "Traffic":
        return Traffic(self, min_requests)


class Traffic:
    """tests/traffic.py against the front, from its own process, until stopped."""

    def __init__(self, deployment: Deployment, min_requests: int) -> None:
        self.flag = deployment.root / f"stop-{deployment.runs}"
        self.out = deployment.root / f"traffic-{deployment.runs}.json"
        self.process = subprocess.Popen([
            sys.executable, str(TESTS / "traffic.py"), deployment.url, str(deployment.photo), str(self.out),
            "--concurrency", "8", "--min-requests", str(min_requests), "--until", str(self.flag)])
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


def test_a_canary_swap_under_load_loses_no_request_and_changes_the_version(versions, tmp_path):
    deployment = Deployment(tmp_path, *versions)
    first = deployment.deploy("1")
    assert first.returncode == 0, first.stderr[-3000:]

    traffic = deployment.traffic(min_requests=2000)
    started = time.time()
    swap = deployment.deploy("2", "deploy.step_wait_s=2")
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
         f"--endpoint-url={deployment.url}", f"--photo={deployment.photo}", "--label=b", "--model-version=2"],
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


def test_a_bad_green_never_takes_over_and_blue_serves_throughout(versions, tmp_path):
    deployment = Deployment(tmp_path, *versions)
    assert deployment.deploy("1").returncode == 0
    traffic = deployment.traffic(min_requests=300)

    # A smoke test that fails: green never gets live traffic.
    smoke_started = time.time()
    smoke = deployment.deploy("2", "deploy.smoke_label=nothing-like-it")
    smoke_ended = time.time()
    assert smoke.returncode == 2
    line = smoke.stderr.strip().splitlines()[-1]
    assert "smoke: known photo: 0.jpg got the label 'b', not 'nothing-like-it'" in line, line
    assert line.endswith("rolled back: blue keeps 100%, green has 0%")
    assert deployment.status() == [
        f"local blue: {MODEL} version 1, traffic 100%, ready", f"local green: {MODEL} version 2, traffic 0%, ready"]

    # A gate that trips at the first canary step (no green answers within 1 microsecond).
    gate = deployment.deploy("2", "deploy.step_wait_s=2", "deploy.max_p99_ms=0.001")
    assert gate.returncode == 2
    line = gate.stderr.strip().splitlines()[-1]
    assert "gate at 10%: p99 latency" in line and line.endswith("rolled back: blue keeps 100%, green has 0%"), line
    records = traffic.stop()

    assert [r for r in records if r["status"] != 200] == []
    assert {r["colour"] for r in records if smoke_started <= r["t"] <= smoke_ended} == {"blue"}
    green = [r for r in records if r["colour"] == "green"]
    assert 0 < len(green) < 0.3 * len(records)  # only in the gate's 10% step
    assert deployment.status()[0] == f"local blue: {MODEL} version 1, traffic 100%, ready"
    assert deployment.cli("deploy.action=stop").returncode == 0
