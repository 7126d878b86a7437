"""deploy=local: blue and green as real server processes behind the real front, called over
real HTTP. One deployment (a cnn16 registered as two versions) is shared by the module;
each test first brings back whatever colour an earlier one took down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List
from unittest import mock

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from lettucify.deploy.front import Split
from lettucify.deploy.local import LocalTarget, process_start
from lettucify.deploy.target import COLOURS, DeployError, ModelRef, other
from lettucify.errors import LettucifyError
from serving import MODEL, STARTUP_S, copied_version, registered_model

SECRET = "dEpLoY-kEy-31c7"
AUTH = {"Authorization": f"Bearer {SECRET}"}
JPEG = {"Content-Type": "image/jpeg"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Deployment:
    """The module's LocalTarget, its settings (to build a second one, as a new command does)
    and the registered versions each colour gets."""

    def __init__(self, root: Path, uri: str) -> None:
        self.settings = dict(host="127.0.0.1", port=free_port(), state_dir=str(root / "local"), drain_s=10.0,
                             serve_overrides=["serve.backend=torch"])  # no ONNX export: a quicker start
        self.root, self.uri = root, uri
        self.models = {"blue": ModelRef(MODEL, "1", uri), "green": ModelRef(MODEL, copied_version(uri), uri)}
        self.target = self.new_target()
        self.front = f"http://127.0.0.1:{self.settings['port']}"

    def new_target(self) -> LocalTarget:
        return LocalTarget(**self.settings, run_dir=self.root / "run", tracking_uri=self.uri)

    def both_ready(self) -> None:
        """Blue and green ready (traffic wherever it was, unless a colour had to be put again)."""
        down = [c for c, s in self.target.state().items() if s.health != "ready"]
        if len(down) == 2:
            self.target.stop()
        elif down:
            self.target.set_traffic({other(down[0]): 100, down[0]: 0}, {})
        with mock.patch.dict(os.environ, {"LETTUCIFY_API_KEY": SECRET}):  # the servers read it at start
            for colour in down:
                self.target.put(colour, self.models[colour])
        for colour in down:
            self.target.wait_ready(colour, STARTUP_S)

    def recorded(self) -> Dict:
        return json.loads((Path(self.settings["state_dir"]) / "state.json").read_text())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root, _, uri = registered_model(tmp_path_factory.mktemp("deploy"))
    running = Deployment(root, uri)
    yield running
    running.target.stop()


@pytest.fixture(scope="module")
def photo(deployment) -> bytes:
    return next((deployment.root / "images" / "test").rglob("*.jpg")).read_bytes()


def predict(url: str, photo: bytes, session=requests) -> requests.Response:
    return session.post(f"{url}/predict", data=photo, headers={**JPEG, **AUTH}, timeout=30)


def answered_by(answer: requests.Response) -> str:
    """The colour the front says answered, checked against what the server itself says."""
    assert answer.status_code == 200, answer.text
    colour = answer.headers["X-Lettucify-Colour"]
    assert answer.json()["model"]["deployment"] == colour
    return colour


class Stream:
    """Threads sending requests to the front until stopped; every answer that is not a 200 is kept."""

    def __init__(self, url: str, photo: bytes, threads: int = 2) -> None:
        self.answered: Counter = Counter()
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(url, photo)) for _ in range(threads)]

    def _send(self, url: str, photo: bytes) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                answer = predict(url, photo, session)
                if answer.status_code == 200:
                    self.answered[answer.headers["X-Lettucify-Colour"]] += 1
                else:
                    self.failures.append(f"{answer.status_code} {answer.text}")
            except requests.RequestException as err:
                self.failures.append(repr(err))

    def __enter__(self) -> "Stream":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def predictions_served(base_url: str) -> float:
    text = requests.get(f"{base_url}/metrics", headers=AUTH, timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "lettucify_requests_total" and s.labels["route"] == "/predict")


def test_smooth_weighted_round_robin_gives_each_colour_its_exact_share():
    split = Split({"traffic": {"blue": 90, "green": 10}, "mirror": {"green": 0}})
    picks = [split.pick() for _ in range(100)]
    assert picks.count("green") == 10
    assert all(picks[i:i + 10].count("green") == 1 for i in range(0, 100, 10))  # spread, not bunched
    # A new state file with the same weights (a URL changed) keeps the round robin's place.
    before, after = Split({"traffic": {"blue": 90, "green": 10}}), Split({"traffic": {"blue": 90, "green": 10}})
    first = [before.pick() for _ in range(5)]
    after.continue_from(before)
    assert (first + [after.pick() for _ in range(5)]).count("green") == 1
    mirrored = Split({"traffic": {"blue": 100}, "mirror": {"green": 30}})
    assert [mirrored.mirror_to() for _ in range(100)].count("green") == 30
    assert Split({"traffic": {"blue": 0, "green": 0}}).pick() is None


def test_the_front_refuses_what_it_cannot_send_and_stops_cleanly_on_sigterm(tmp_path):
    state_file = tmp_path / "state.json"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    state = {"version": 1, "colours": {"blue": {"url": dead}, "green": None},
             "traffic": {"blue": 100, "green": 0}, "mirror": {"blue": 0, "green": 0}}
    state_file.write_text(json.dumps(state))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    front = subprocess.Popen([sys.executable, "-m", "lettucify.deploy.front", "--state", str(state_file),
                              "--host", "127.0.0.1", "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                report = requests.get(f"{url}/-/front", timeout=2).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and front.poll() is None, "the front did not start"
                time.sleep(0.1)
        assert report["weights"] == {"blue": 100, "green": 0} and report["state_version"] == 1
        refused = requests.post(f"{url}/predict", data=b"x", timeout=10)
        assert refused.status_code == 502 and "blue" in refused.json()["error"]
        too_big = requests.post(f"{url}/predict", data=b"x" * (17 << 20), timeout=30)
        assert too_big.status_code == 413 and "error" in too_big.json()

        state.update(version=2, traffic={"blue": 0, "green": 0})
        (tmp_path / "next.json").write_text(json.dumps(state))
        os.replace(tmp_path / "next.json", state_file)
        deadline = time.monotonic() + 5
        while requests.get(f"{url}/-/front", timeout=2).json()["state_version"] != 2:
            assert time.monotonic() < deadline, "the front did not read the new state"
            time.sleep(0.05)
        unrouted = requests.get(f"{url}/health", timeout=10)
        assert unrouted.status_code == 503 and unrouted.json() == {"error": "no colour has live traffic"}
    finally:
        front.send_signal(signal.SIGTERM)
        assert front.wait(30) == 0, front.stderr.read()[-2000:]


def test_a_colour_with_all_the_traffic_answers_through_the_front(deployment, photo):
    deployment.both_ready()
    target = deployment.target
    target.set_traffic({"blue": 100, "green": 0}, {})
    answers = [predict(deployment.front, photo) for _ in range(5)]
    assert [answered_by(a) for a in answers] == ["blue"] * 5
    assert {a.json()["model"]["version"] for a in answers} == {"1"}
    # The Authorization header reaches the server: without it, the server's own 401.
    assert requests.post(f"{deployment.front}/predict", data=photo, headers=JPEG, timeout=30).status_code == 401

    states = target.state()
    assert (states["blue"].model, states["blue"].version, states["blue"].traffic, states["blue"].health) == (MODEL, "1", 100, "ready")
    assert (states["green"].version, states["green"].traffic, states["green"].health) == (deployment.models["green"].version, 0, "ready")
    blue = target.direct("blue")
    assert requests.get(f"{blue.base_url}/ready", timeout=5).status_code == 200
    assert blue.scoring_url == f"{blue.base_url}/predict" and blue.base_url != deployment.front
    with pytest.raises(DeployError, match="blue has 100% of live traffic") as refused:
        target.put("blue", deployment.models["blue"])
    assert refused.value.step == "traffic"
    with pytest.raises(DeployError, match="blue has 100% of live traffic"):
        target.remove("blue")


def test_a_ten_percent_step_sends_one_request_in_ten_and_mirroring_copies_its_share(deployment, photo):
    deployment.both_ready()
    target = deployment.target
    target.set_traffic({"blue": 90, "green": 10}, {})
    session = requests.Session()
    answers = [predict(deployment.front, photo, session) for _ in range(100)]
    assert Counter(answered_by(a) for a in answers) == {"blue": 90, "green": 10}
    assert {a.json()["model"]["version"] for a in answers if a.headers["X-Lettucify-Colour"] == "green"} == \
        {deployment.models["green"].version}

    target.set_traffic({"blue": 100, "green": 0}, {"green": 50})
    green = target.direct("green").base_url
    before = predictions_served(green)
    assert {answered_by(predict(deployment.front, photo, session)) for _ in range(20)} == {"blue"}
    deadline = time.monotonic() + 10
    while predictions_served(green) - before < 10:
        assert time.monotonic() < deadline, "green did not get its mirrored copies"
        time.sleep(0.1)
    time.sleep(0.5)
    assert predictions_served(green) - before == 10
    assert requests.get(f"{deployment.front}/-/front", timeout=5).json()["mirror"] == {"blue": 0, "green": 50}


def test_weights_move_while_requests_stream_without_a_failure(deployment, photo):
    deployment.both_ready()
    target = deployment.target
    target.set_traffic({"blue": 100, "green": 0}, {})
    with Stream(deployment.front, photo) as stream:
        for green in (10, 50, 100, 0, 50):
            target.set_traffic({"blue": 100 - green, "green": green}, {})
            report = requests.get(f"{deployment.front}/-/front", timeout=5).json()
            assert report["weights"] == {"blue": 100 - green, "green": green}
            time.sleep(0.7)
    assert stream.failures == []
    assert stream.answered["blue"] > 5 and stream.answered["green"] > 5


def test_a_second_command_finds_the_same_deployment(deployment):
    deployment.both_ready()
    deployment.target.set_traffic({"blue": 30, "green": 70}, {})
    again = deployment.new_target()
    assert again.state() == deployment.target.state()
    assert {c: s.traffic for c, s in again.state().items()} == {"blue": 30, "green": 70}
    assert all(again.direct(c) == deployment.target.direct(c) for c in COLOURS)


def test_a_killed_colour_with_traffic_has_its_requests_retried_on_the_other(deployment, photo):
    deployment.both_ready()
    target = deployment.target
    target.set_traffic({"blue": 50, "green": 50}, {})
    os.kill(deployment.recorded()["colours"]["green"]["pid"], signal.SIGKILL)
    session = requests.Session()
    assert Counter(answered_by(predict(deployment.front, photo, session)) for _ in range(30)) == {"blue": 30}
    assert target.state()["green"].health == "down"
    assert deployment.new_target().state()["green"].health == "down"  # a command that did not start it
    with pytest.raises(DeployError, match="green has no server listening"):
        target.set_traffic({"blue": 0, "green": 100}, {})


def test_removing_a_colour_after_its_traffic_moved_fails_no_request(deployment, photo):
    deployment.both_ready()
    target = deployment.target
    target.set_traffic({"blue": 100, "green": 0}, {})
    blue = deployment.recorded()["colours"]["blue"]
    with Stream(deployment.front, photo) as stream:
        time.sleep(0.5)
        target.set_traffic({"blue": 0, "green": 100}, {})
        target.remove("blue")
        time.sleep(0.5)
    assert stream.failures == []
    assert stream.answered["blue"] > 0 and stream.answered["green"] > 0
    assert process_start(blue["pid"]) != blue["started"]
    states = target.state()
    assert (states["blue"].model, states["blue"].health) == (None, "down")
    assert deployment.recorded()["colours"]["blue"] is None


def test_stop_leaves_no_process(deployment, photo):
    target = deployment.target
    ready = [c for c, s in target.state().items() if s.health == "ready"]
    if not ready:  # run on its own; after the tests above, one colour is enough
        deployment.both_ready()
        ready = list(COLOURS)
    target.set_traffic({c: 100 if c == ready[0] else 0 for c in COLOURS}, {})
    assert answered_by(predict(deployment.front, photo)) == ready[0]
    recorded = deployment.recorded()
    processes = [recorded["front"], *(p for p in recorded["colours"].values() if p is not None)]
    target.stop()
    assert all(process_start(p["pid"]) != p["started"] for p in processes)
    with pytest.raises(requests.ConnectionError):
        predict(deployment.front, photo)
    after = deployment.recorded()
    assert after["front"] is None and after["colours"] == {"blue": None, "green": None}
    assert {c: (s.model, s.traffic, s.health) for c, s in deployment.new_target().state().items()} == \
        {c: (None, 0, "down") for c in COLOURS}


def test_a_port_taken_by_another_program_and_a_split_that_cannot_be_are_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        target = LocalTarget("127.0.0.1", taken.getsockname()[1], str(tmp_path / "local"), 5.0, [],
                             run_dir=tmp_path, tracking_uri=None)
        with pytest.raises(LettucifyError, match=r"deploy.local.port: 127.0.0.1:\d+ is taken"):
            target.put("blue", ModelRef(MODEL, "1", None))
    assert target.state()["blue"].model is None  # nothing was started
    for traffic, mirror, message in [
        ({"blue": 60, "green": 30}, {}, "add up to 100"),
        ({"blue": 100, "purple": 0}, {}, "no colour 'purple'; the colours are blue, green"),
        ({"blue": 100.0}, {}, "traffic of blue must be a whole percent from 0 to 100, got 100.0"),
        ({"blue": 100, "green": 0}, {"green": 60}, "at most 50%"),
        ({"blue": 50, "green": 50}, {"green": 10}, "only a colour without it"),
        ({"blue": 100, "green": 0}, {}, "blue has no server listening"),
    ]:
        with pytest.raises(DeployError, match=message):
            target.set_traffic(traffic, mirror)
