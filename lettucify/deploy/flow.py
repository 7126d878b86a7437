"""The deploy flow, the same for every target: the idle colour gets the version, is
tested directly, then takes the traffic step by step; any failure rolls back.

    put -> ready -> smoke test (directly) -> [mirror] -> traffic steps, each followed
    by the health gate -> done; on any failure (or Ctrl-C, SIGTERM): the old colour
    back to 100%, the new one to 0, and a DeployError naming the step.

What a target cannot observe (a rendered-only Kubernetes deployment, an Azure
deployment's metrics) is skipped with a log line that says so. After every traffic
change the registry is told where each version is (``lettucify.deploy.record``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import requests

from lettucify.deploy import gate
from lettucify.deploy.smoke import Deployment, failures
from lettucify.deploy.target import COLOURS, ColourState, DeployError, Endpoint, ModelRef, Target, other

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """How the traffic moves: percent steps for the new colour (the last is 100), how long
    each runs before the gate, the gate's limits and the share mirrored first."""

    steps: List[int]
    step_wait_s: float
    max_error_rate: float
    max_p99_ms: float
    mirror_percent: int
    ready_timeout_s: float


# What the smoke test needs of a colour's endpoint: the photo, its label, the key.
SmokeSpec = Callable[[Endpoint], Deployment]
Record = Callable[[Dict[str, ColourState]], None]


def live_colour(states: Dict[str, ColourState]) -> Optional[str]:
    """The colour with (most of) the live traffic; None when nothing serves yet."""
    serving = [c for c in COLOURS if states[c].traffic > 0]
    return max(serving, key=lambda c: states[c].traffic) if serving else None


def _shift(target: Target, record: Record, traffic: Dict[str, int], mirror: Optional[Dict[str, int]] = None) -> None:
    target.set_traffic(traffic, mirror or {})
    record(target.state())


def _gate(endpoint: Optional[Endpoint], plan: Plan, what: str) -> None:
    """Wait the step out, then judge the new colour's requests in it."""
    if endpoint is None or endpoint.base_url is None:
        log.info("deploy: %s: no health gate (the new colour's metrics cannot be read from here)", what)
        time.sleep(plan.step_wait_s)
        return
    before = _read(endpoint, what)
    time.sleep(plan.step_wait_s)
    verdict = gate.judge(before, _read(endpoint, what), plan.max_error_rate, plan.max_p99_ms)
    log.info("deploy: %s: %d requests, error rate %.2f%%, p99 %s", what, verdict.requests, 100 * verdict.error_rate,
             "-" if verdict.p99_ms is None else f"{verdict.p99_ms:g} ms")
    if verdict.problem:
        raise DeployError(f"gate at {what}", verdict.problem)


def _read(endpoint: Endpoint, what: str) -> gate.Counts:
    try:
        return gate.read(endpoint)
    except requests.RequestException as err:  # the new colour died or hangs: that is a failed gate
        raise DeployError(f"gate at {what}", f"{endpoint.base_url}/metrics did not answer ({type(err).__name__})") from None


def deploy(target: Target, model: ModelRef, plan: Plan, smoke: SmokeSpec, record: Record) -> str:
    """Put ``model`` on the idle colour and move the traffic to it; return that colour."""
    states = target.state()
    live = live_colour(states)
    new = other(live) if live else COLOURS[0]
    if live and states[new].traffic:  # an earlier deploy stopped half way: start from the live colour
        log.info("deploy: %s still has %d%%: back to %s 100%% first", new, states[new].traffic, live)
        _shift(target, record, {live: 100, new: 0})
    log.info("deploy: %s version %s to %s on %s%s", model.name, model.version, new, target.name,
             f" ({live} serves now)" if live else "")
    step = "put"
    try:
        target.put(new, model)
        record(target.state())
        step = "ready"
        target.wait_ready(new, plan.ready_timeout_s)
        step = "smoke"
        endpoint = target.direct(new)
        if endpoint is None:
            log.info("deploy: smoke test skipped: %s's %s cannot be reached from here", target.name, new)
        else:
            problems = failures(smoke(endpoint))
            if problems:
                raise DeployError("smoke", "; ".join(problems))
            log.info("deploy: smoke test of %s passed", new)
        if plan.mirror_percent and live:
            step = f"mirror {plan.mirror_percent}%"
            _shift(target, record, {live: 100, new: 0}, {new: plan.mirror_percent})
            _gate(endpoint, plan, step)
        steps = plan.steps if live else [100]
        for percent in steps:
            step = f"{percent}%"
            _shift(target, record, {new: percent, other(new): 100 - percent})
            log.info("deploy: %s has %d%% of the traffic", new, percent)
            if plan.step_wait_s:
                _gate(endpoint, plan, step)
    except BaseException as err:  # a failed step, or Ctrl-C / SIGTERM half way: nothing left half shifted
        reason = err.reason if isinstance(err, DeployError) else (str(err) or type(err).__name__)
        _roll_back(target, record, live, new)
        if isinstance(err, DeployError):
            kept = f"{live} keeps 100%" if live else "nothing serves"
            raise DeployError(err.step, f"{reason}; rolled back: {kept}, {new} has 0%") from None
        raise
    log.info("deploy: done: %s serves %s version %s", new, model.name, model.version)
    return new


def _roll_back(target: Target, record: Record, live: Optional[str], new: str) -> None:
    try:
        if live:
            _shift(target, record, {live: 100, new: 0})
        else:
            target.remove(new)
            record(target.state())
    except Exception as err:  # the rollback itself failed: say so beside the first error
        log.error("deploy: rolling back failed too: %s", err)


def rollback(target: Target, record: Record) -> str:
    """All traffic back to the other colour; return it."""
    states = target.state()
    live = live_colour(states)
    if live is None:
        raise DeployError("rollback", "nothing serves: no colour to roll back from")
    back = other(live)
    if states[back].model is None or states[back].health not in ("ready", "unknown"):
        raise DeployError("rollback", f"{back} has no model ready to take the traffic ({states[back].health})")
    _shift(target, record, {back: 100, live: 0})
    log.info("deploy: rolled back: %s (%s version %s) has 100%%", back, states[back].model, states[back].version)
    return back


def status_lines(target: Target) -> List[str]:
    states = target.state()
    lines = []
    for colour in COLOURS:
        s = states[colour]
        model = f"{s.model} version {s.version}" if s.model else "nothing deployed"
        mirror = f", mirror {s.mirror}%" if s.mirror else ""
        lines.append(f"{target.name} {colour}: {model}, traffic {s.traffic}%{mirror}, {s.health}")
    return lines
