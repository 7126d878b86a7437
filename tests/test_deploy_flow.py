"""The deploy flow's decisions, on a target kept in memory, and what it records on a real
(SQLite) registry. The targets themselves, with real processes, files and the Azure fake,
are tested in tests/test_deploy_*.py."""

from __future__ import annotations

from typing import Dict, List

import pytest

from lettucify.deploy import flow
from lettucify.deploy.record import RegistryRecord
from lettucify.deploy.target import COLOURS, ColourState, DeployError, ModelRef

PLAN = flow.Plan(steps=[10, 50, 100], step_wait_s=0, max_error_rate=0.01, max_p99_ms=1000, mirror_percent=0,
                 ready_timeout_s=5)


class MemoryTarget:
    """A target with nothing behind it: it keeps what it is told and logs each call."""

    name = "memory"

    def __init__(self, ready: bool = True) -> None:
        self.colours: Dict[str, ColourState] = {c: ColourState(c, health="down") for c in COLOURS}
        self.ready = ready
        self.calls: List[tuple] = []

    def state(self) -> Dict[str, ColourState]:
        return {c: ColourState(**vars(s)) for c, s in self.colours.items()}

    def put(self, colour: str, model: ModelRef) -> None:
        assert self.colours[colour].traffic == 0, "put on a colour with live traffic"
        self.calls.append(("put", colour, model.version))
        self.colours[colour] = ColourState(colour, model.name, model.version, health="not ready")

    def wait_ready(self, colour: str, timeout_s: float) -> None:
        self.calls.append(("wait_ready", colour))
        if not self.ready:
            raise DeployError("ready", f"{colour} did not get ready in {timeout_s:g} s")
        self.colours[colour].health = "ready"

    def direct(self, colour: str) -> None:
        return None  # nothing to reach: smoke test and gate are skipped

    def set_traffic(self, traffic: Dict[str, int], mirror: Dict[str, int]) -> None:
        assert sum(traffic.values()) == 100 and set(traffic) == set(COLOURS)
        self.calls.append(("traffic", dict(traffic), dict(mirror)))
        for colour in COLOURS:
            self.colours[colour].traffic = traffic[colour]
            self.colours[colour].mirror = mirror.get(colour, 0)

    def remove(self, colour: str) -> None:
        assert self.colours[colour].traffic == 0, "removed a colour with live traffic"
        self.calls.append(("remove", colour))
        self.colours[colour] = ColourState(colour, health="down")

    def stop(self) -> None:
        for colour in COLOURS:
            self.colours[colour] = ColourState(colour, health="down")


def no_smoke(endpoint):
    raise AssertionError("the smoke test ran with no endpoint")


def traffic_calls(target: MemoryTarget) -> List[Dict[str, int]]:
    return [call[1] for call in target.calls if call[0] == "traffic"]


def test_a_first_deploy_goes_to_blue_then_a_canary_moves_the_traffic_step_by_step_to_green():
    target, seen = MemoryTarget(), []
    assert flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, seen.append) == "blue"
    assert traffic_calls(target) == [{"blue": 100, "green": 0}]

    target.calls.clear()
    assert flow.deploy(target, ModelRef("m", "2", None), PLAN, no_smoke, seen.append) == "green"
    assert target.calls[:2] == [("put", "green", "2"), ("wait_ready", "green")]
    assert traffic_calls(target) == [{"green": 10, "blue": 90}, {"green": 50, "blue": 50}, {"green": 100, "blue": 0}]
    assert [s["green"].traffic for s in seen[-3:]] == [10, 50, 100]  # recorded after every step
    assert flow.status_lines(target) == [
        "memory blue: m version 1, traffic 0%, ready", "memory green: m version 2, traffic 100%, ready"]


def test_mirroring_comes_first_and_only_to_the_new_colour():
    target = MemoryTarget()
    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, lambda s: None)
    plan = flow.Plan(**{**vars(PLAN), "mirror_percent": 20, "steps": [100]})
    flow.deploy(target, ModelRef("m", "2", None), plan, no_smoke, lambda s: None)
    assert [c[1:] for c in target.calls if c[0] == "traffic"][-2:] == [
        ({"blue": 100, "green": 0}, {"green": 20}), ({"green": 100, "blue": 0}, {})]


def test_a_colour_that_never_gets_ready_is_rolled_back_and_the_error_names_the_step():
    target = MemoryTarget()
    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, lambda s: None)
    target.ready = False
    with pytest.raises(DeployError) as failed:
        flow.deploy(target, ModelRef("m", "2", None), PLAN, no_smoke, lambda s: None)
    assert str(failed.value) == "ready: green did not get ready in 5 s; rolled back: blue keeps 100%, green has 0%"
    state = target.state()
    assert (state["blue"].traffic, state["green"].traffic) == (100, 0)


def test_an_interrupted_deploy_rolls_back_too():
    target = MemoryTarget()
    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, lambda s: None)
    steps = []

    def interrupt_at_50(states):
        steps.append(states["green"].traffic)
        if states["green"].traffic == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        flow.deploy(target, ModelRef("m", "2", None), PLAN, no_smoke, interrupt_at_50)
    assert target.state()["blue"].traffic == 100


def test_a_half_shifted_deployment_is_set_straight_before_the_next_and_rollback_swaps_back():
    target = MemoryTarget()
    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, lambda s: None)
    flow.deploy(target, ModelRef("m", "2", None), PLAN, no_smoke, lambda s: None)
    target.set_traffic({"green": 60, "blue": 40}, {})  # as a deploy killed half way leaves it
    target.calls.clear()
    assert flow.deploy(target, ModelRef("m", "3", None), PLAN, no_smoke, lambda s: None) == "blue"
    assert target.calls[:2] == [("traffic", {"green": 100, "blue": 0}, {}), ("put", "blue", "3")]

    assert flow.rollback(target, lambda s: None) == "green"
    assert (target.state()["green"].version, target.state()["green"].traffic) == ("2", 100)


def test_rollback_with_nothing_to_roll_back_to_says_so():
    target = MemoryTarget()
    with pytest.raises(DeployError, match="rollback: nothing serves"):
        flow.rollback(target, lambda s: None)
    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, lambda s: None)
    with pytest.raises(DeployError, match="rollback: green has no model ready"):
        flow.rollback(target, lambda s: None)


def test_the_registry_records_colours_traffic_and_the_live_alias(tmp_path):
    from lettucify.tracking.store import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry = client(uri)
    registry.create_registered_model("m")
    for _ in range(3):
        registry.create_model_version("m", source=str(tmp_path))
    target = MemoryTarget()
    record = RegistryRecord("memory", uri, "live", ["m"])

    def tags(version: str) -> Dict[str, str]:
        found = registry.get_model_version("m", version).tags
        return {k.rsplit(".", 1)[1]: v for k, v in found.items() if k.startswith("lettucify.deploy.memory.")}

    flow.deploy(target, ModelRef("m", "1", None), PLAN, no_smoke, record)
    flow.deploy(target, ModelRef("m", "2", None), PLAN, no_smoke, record)
    assert tags("1") == {"colour": "blue", "traffic": "0"}
    assert tags("2") == {"colour": "green", "traffic": "100"}
    assert str(registry.get_model_version_by_alias("m", "live").version) == "2"

    flow.deploy(target, ModelRef("m", "3", None), PLAN, no_smoke, record)  # 3 replaces 1 on blue
    assert tags("1") == {}
    assert tags("3") == {"colour": "blue", "traffic": "100"}
    assert str(registry.get_model_version_by_alias("m", "live").version) == "3"
    flow.rollback(target, record)
    assert str(registry.get_model_version_by_alias("m", "live").version) == "2"


def test_the_gate_counts_server_errors_and_the_p99_of_the_scored_routes_only():
    from lettucify.deploy import gate
    from lettucify.serve.metrics import Metrics

    metrics = Metrics("m", "2", None, "green")
    before = gate.parse(metrics.exposition().decode())
    for _ in range(95):
        metrics.observe("/predict", 200, 0.02)
    for _ in range(3):
        metrics.observe("/score", 503, 0.001)
    metrics.observe("/predict", 415, 0.001)  # the client's mistake, not an error of the deployment
    metrics.observe("/v2/models/{model_name}/infer", 200, 3.0)  # the slow one in a hundred
    for _ in range(50):
        metrics.observe("/metrics", 500, 9.0)  # not a scored route
    after = gate.parse(metrics.exposition().decode())

    verdict = gate.judge(before, after, max_error_rate=0.05, max_p99_ms=5000)
    assert (verdict.requests, verdict.error_rate, verdict.p99_ms, verdict.problem) == (100, 0.03, 25.0, None)
    strict = gate.judge(before, after, max_error_rate=0.01, max_p99_ms=10)
    assert strict.problem == "error rate 3.0% over deploy.max_error_rate=0.01; p99 latency 25 ms over deploy.max_p99_ms=10"
    assert gate.judge(after, after, 0.01, 10) == gate.Verdict(0, 0.0, None, None)  # no request: nothing to judge
