"""Label files through a running server or deployment: the HTTP client of ``/predict``.

Each file is one request (``{"image": <base64>}`` with ``?top_k=0``, every class's score),
``predict.concurrency`` at a time; the server batches them. A 429/502/503/504 or a lost
connection is retried (after ``Retry-After`` when the server sends one, else a growing
backoff), a refusal of the file (4xx) is that file's error, and a refusal of the client
(401, 403, 404, 405: wrong key or wrong URL) stops the run, since every request would get it;
so does an endpoint that has answered nothing by the time a file has used up its retries.
"""

from __future__ import annotations

import base64
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import requests

from lettucify.errors import LettucifyError
from lettucify.predict.results import Result

log = logging.getLogger(__name__)

RETRIED = {429, 502, 503, 504}
FATAL = {401: "the endpoint refused the API key (set it in $%s)", 403: "the API key may not call this endpoint ($%s)",
         404: "no such route: is predict.endpoint_url the scoring URL (.../predict or .../score)?",
         405: "the URL does not take POST: is predict.endpoint_url the scoring URL (.../predict or .../score)?"}
MAX_WAIT_S = 30.0


class EndpointPredictor:
    """``predict(files) -> results`` in order, each file sent to ``url``."""

    def __init__(self, url: str, api_key: Optional[str], api_key_env: str, *, concurrency: int, retries: int,
                 timeout_s: float) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.retries = retries
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._stopped = threading.Event()
        self.classes = None  # they come by name, with each answer
        self.answered = False  # once the endpoint has answered, a file it then fails is that file's error

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def predict(self, files: Sequence[Path]) -> Iterator[Result]:
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lettucify-client")
        try:
            yield from pool.map(self._one, files)
        finally:  # stopped (an error, Ctrl-C): no new request, and no retry waits on
            self._stopped.set()
            pool.shutdown(cancel_futures=True)

    def _one(self, path: Path) -> Result:
        try:
            body = {"image": base64.b64encode(path.read_bytes()).decode("ascii")}
        except OSError as err:
            return Result(path, error=f"unreadable ({err.strerror or err})")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt and self._stopped.wait(wait):
                break
            wait = min(MAX_WAIT_S, 0.5 * 2**attempt)
            try:
                answer = self._session().post(self.url, params={"top_k": 0}, json=body, headers=self.headers,
                                              timeout=self.timeout_s)
            except requests.RequestException as err:  # refused, reset or timed out: try again
                problem = f"no answer from {self.url} ({type(err).__name__})"
                continue
            self.answered = True
            if answer.status_code == 200:
                return self._result(path, answer)
            problem = f"{answer.status_code}: {_reason(answer)}"
            if answer.status_code in FATAL:
                message = FATAL[answer.status_code].replace("%s", self.api_key_env)
                raise LettucifyError(f"POST {self.url} answered {problem}: {message}")
            if answer.status_code not in RETRIED:
                return Result(path, error=problem)
            wait = _retry_after(answer) or wait
        tries = f"{self.retries + 1} {'try' if self.retries == 0 else 'tries'}"
        if not self.answered:
            raise LettucifyError(f"{problem} after {tries}: is the server running at predict.endpoint_url?")
        return Result(path, error=f"{problem} (after {tries})")

    def _result(self, path: Path, answer: requests.Response) -> Result:
        try:
            top = answer.json()["predictions"][0]["top_k"]
            scores: Dict[str, float] = {entry["label"]: float(entry["score"]) for entry in top}
        except (ValueError, KeyError, IndexError, TypeError):
            raise LettucifyError(
                f"POST {self.url} answered 200 but not with Lettucify's predictions: is it a Lettucify server?"
            ) from None
        return Result(path, scores)


def _reason(answer: requests.Response) -> str:
    try:
        return str(answer.json()["error"])
    except (ValueError, KeyError, TypeError):
        return answer.reason or answer.text[:200]


def _retry_after(answer: requests.Response) -> Optional[float]:
    try:
        return min(MAX_WAIT_S, float(answer.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None
