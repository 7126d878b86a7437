"""The health gate between traffic steps: a colour's error rate and p99 latency over the
step, read from its own ``/metrics`` (lettucify_requests_total and the
lettucify_request_duration_seconds histogram) before and after.

Errors are answers with a 5xx status (503 from a full queue and 504 timeouts among them):
a 4xx is the client's mistake, not the deployment's. The p99 is the upper bound of the
histogram bucket that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import requests
from prometheus_client.parser import text_string_to_metric_families

from lettucify.deploy.target import Endpoint

# Routes that answer predictions: what the gate judges (not probes or /metrics itself).
SCORED_ROUTES = frozenset({"/predict", "/score", "/v2/models/{model_name}/infer"})


@dataclass(frozen=True)
class Counts:
    requests: float
    errors: float
    # Cumulative count of requests at or under each bucket's upper bound (seconds).
    buckets: Mapping[float, float]


def read(endpoint: Endpoint) -> Counts:
    response = requests.get(f"{endpoint.base_url}/metrics", headers=dict(endpoint.headers), timeout=30)
    response.raise_for_status()
    return parse(response.text)


def parse(exposition: str) -> Counts:
    """The counts of the scored routes in a server's Prometheus text."""
    total = errors = 0.0
    buckets: Dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("route") not in SCORED_ROUTES:
                continue
            if sample.name == "lettucify_requests_total":
                total += sample.value
                errors += sample.value if sample.labels["status"].startswith("5") else 0
            elif sample.name == "lettucify_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Counts(total, errors, buckets)


@dataclass(frozen=True)
class Verdict:
    requests: int
    error_rate: float
    p99_ms: Optional[float]  # None: no request in the step
    problem: Optional[str]  # None: healthy


def judge(before: Counts, after: Counts, max_error_rate: float, max_p99_ms: float) -> Verdict:
    count = after.requests - before.requests
    if count <= 0:
        return Verdict(0, 0.0, None, None)
    rate = (after.errors - before.errors) / count
    p99_ms = None
    for bound in sorted(after.buckets):
        if after.buckets[bound] - before.buckets.get(bound, 0.0) >= 0.99 * count:
            p99_ms = bound * 1000
            break
    problems = []
    if rate > max_error_rate:
        problems.append(f"error rate {rate:.1%} over deploy.max_error_rate={max_error_rate:g}")
    if p99_ms is not None and p99_ms > max_p99_ms:
        shown = "over 10 s" if p99_ms == float("inf") else f"{p99_ms:g} ms"
        problems.append(f"p99 latency {shown} over deploy.max_p99_ms={max_p99_ms:g}")
    return Verdict(int(count), rate, p99_ms, "; ".join(problems) or None)
