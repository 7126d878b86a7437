"""The endpoint suite: what any Lettucify deployment must answer, run from here.

    python -m lettucify.deploy.smoke http://127.0.0.1:8080/predict --photo apple.jpg --label apple
    pytest tests/endpoint --endpoint-url=https://<endpoint>.<region>.inference.ml.azure.com/score

The deploy flow runs the same checks on a new colour, directly (not through the traffic
split), before it gets any traffic: readiness, a known photo's label, a batch, a malformed
request's 4xx, and the model in the answer. Each check returns None or what was wrong.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import requests

from lettucify.deploy.target import Endpoint

TIMEOUT_S = 60


@dataclass
class Deployment:
    """A deployment to check: its endpoint, the API key, a photo and the label it must get,
    and the model version it must report (None: any)."""

    endpoint: Endpoint
    photo: Path
    label: str
    api_key: Optional[str] = None
    version: Optional[str] = None
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, **kwargs) -> requests.Response:
        headers = {**kwargs.pop("headers", {})}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.endpoint.headers)  # a target's own key (Azure's) comes with its endpoint
        return self.session.post(self.endpoint.scoring_url, headers=headers, timeout=TIMEOUT_S, **kwargs)


def _answer(response: requests.Response, what: str) -> Tuple[Optional[dict], Optional[str]]:
    if response.status_code != 200:
        return None, f"{what} got {response.status_code}: {response.text[:200]}"
    try:
        return response.json(), None
    except ValueError:
        return None, f"{what} got 200 but no JSON"


def check_ready(d: Deployment) -> Optional[str]:
    if d.endpoint.base_url is None:
        return None  # only the scoring route is reachable (Azure): readiness is the platform's
    response = d.session.get(f"{d.endpoint.base_url}/ready", headers=dict(d.endpoint.headers), timeout=TIMEOUT_S)
    # 404: a gateway in front that routes only the scoring path; readiness is then its own.
    return None if response.status_code in (200, 404) else f"/ready answered {response.status_code}"


def check_known_photo(d: Deployment) -> Optional[str]:
    body, problem = _answer(d.post(data=d.photo.read_bytes(), headers={"Content-Type": "image/jpeg"}), d.photo.name)
    if problem:
        return problem
    label = body["predictions"][0]["label"]
    return None if label == d.label else f"{d.photo.name} got the label {label!r}, not {d.label!r}"


def check_batch(d: Deployment) -> Optional[str]:
    image = base64.b64encode(d.photo.read_bytes()).decode("ascii")
    body, problem = _answer(d.post(json={"images": [image] * 3}), "a batch of 3")
    if problem:
        return problem
    labels = [p["label"] for p in body["predictions"]]
    return None if labels == [d.label] * 3 else f"a batch of 3 copies of {d.photo.name} got {labels}"


def check_malformed(d: Deployment) -> Optional[str]:
    response = d.post(data=b"this is not a photo\n" * 4, headers={"Content-Type": "image/jpeg"})
    if not 400 <= response.status_code < 500:
        return f"text sent as image/jpeg got {response.status_code}, not a 4xx"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"text sent as image/jpeg got {response.status_code} without an error message"
    return None if isinstance(error, str) and error else "the 4xx's error message is empty"


def check_model(d: Deployment) -> Optional[str]:
    body, problem = _answer(d.post(data=d.photo.read_bytes(), headers={"Content-Type": "image/jpeg"}), d.photo.name)
    if problem:
        return problem
    model = body.get("model") or {}
    if not model.get("name"):
        return f"the answer names no model: {body.get('model')!r}"
    if d.version is not None and model.get("version") != d.version:
        return f"the answer comes from version {model.get('version')!r}, not {d.version!r}"
    return None


CHECKS: Dict[str, Callable[[Deployment], Optional[str]]] = {
    "ready": check_ready,
    "known photo": check_known_photo,
    "batch": check_batch,
    "malformed request": check_malformed,
    "model info": check_model,
}


def run_check(name: str, d: Deployment) -> Optional[str]:
    try:
        return CHECKS[name](d)
    except requests.RequestException as err:
        return f"no answer from {d.endpoint.scoring_url} ({type(err).__name__})"


def failures(d: Deployment) -> List[str]:
    """``"<check>: <what was wrong>"`` for each check that failed; [] when all passed."""
    return [f"{name}: {problem}" for name in CHECKS if (problem := run_check(name, d))]


def parse_headers(pairs: List[str]) -> Mapping[str, str]:
    return {name.strip(): value.strip() for name, value in (pair.split(":", 1) for pair in pairs)}


def endpoint_of(scoring_url: str, headers: Mapping[str, str]) -> Endpoint:
    """A scoring URL's endpoint: /ready and /metrics are looked for beside the scoring route."""
    return Endpoint(scoring_url, base_url=scoring_url.rsplit("/", 1)[0], headers=headers)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the scoring URL: .../predict or .../score")
    parser.add_argument("--photo", type=Path, required=True, help="a photo the model labels as --label")
    parser.add_argument("--label", required=True)
    parser.add_argument("--api-key-env", default="LETTUCIFY_API_KEY", help="the variable that holds the API key")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                        help="sent with every request, e.g. azureml-model-deployment:green")
    parser.add_argument("--version", help="the model version the answers must report")
    args = parser.parse_args(argv)
    endpoint = endpoint_of(args.url, parse_headers(args.header))
    found = failures(Deployment(endpoint, args.photo, args.label, os.environ.get(args.api_key_env) or None, args.version))
    for line in found:
        print(f"FAILED {line}")
    print(f"{len(CHECKS) - len(found)} of {len(CHECKS)} checks passed against {args.url}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
