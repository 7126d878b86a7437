"""``deploy=local``: blue and green as two ``task=serve`` processes, each on a free port of its
own, behind the front (``lettucify/deploy/front.py``) on ``deploy.local.port``.

Everything lives under ``state_dir`` and outlives the command that made it, so the next
``task=deploy`` finds it: ``state.json`` (each colour's model, version, URL, pid and process
start time; the front's; the traffic split and mirroring; a version counter the front
reports once it has applied it), ``<colour>.log`` and ``front.log`` (each process's stdout
and stderr; the log of a colour's previous server is kept as ``<colour>.previous.log``) and
``<colour>-run/`` (the server's run folder). The processes are detached (a session of their
own): Ctrl-C or the end of the command leaves them running. A recorded pid counts only
while a process with that pid and that start time lives (Linux's /proc): a pid the system
gave to another process since is down.

state.json is written whole, to a temporary file moved over it, by one command at a time:
two ``task=deploy`` commands on the same state_dir at once are not supported.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import requests

from lettucify.deploy.target import COLOURS, ColourState, DeployError, Endpoint, ModelRef, other, traffic_split
from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
# What task=serve prints once its socket is bound (lettucify/tasks/serve.py).
URL_LINE = re.compile(r"^Serving .*? at (http://\S+) ", re.MULTILINE)
POLL_S = 0.1
# The front polls state.json every 0.1 s: a new split is live well within this.
FRONT_SYNC_S = 5.0
# Python, uvicorn and httpx imported, the socket bound.
FRONT_START_S = 30.0
# After SIGKILL, how long the system gets to end a process.
KILL_WAIT_S = 5.0
PROBE_TIMEOUT_S = 2.0


def process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22);
    None when there is no such process or it has exited (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def empty_state() -> Dict[str, Any]:
    return {"version": 0, "front": None, "colours": {c: None for c in COLOURS},
            "traffic": {c: 0 for c in COLOURS}, "mirror": {c: 0 for c in COLOURS}}


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


class LocalTarget:
    """The Target of ``lettucify.deploy.target`` for local processes."""

    name = "local"

    def __init__(self, host: str, port: int, state_dir: str, drain_s: float, serve_overrides: Sequence[str], *,
                 run_dir: Path, tracking_uri: Optional[str]) -> None:
        # run_dir is the flow's run folder; the processes outlive it, so what they write goes
        # to state_dir instead.
        self.host = host
        self.port = int(port)
        self.dir = Path(state_dir).absolute()
        self.state_file = self.dir / STATE_FILE
        self.drain_s = float(drain_s)
        self.serve_overrides = [str(override) for override in serve_overrides]
        self.tracking_uri = tracking_uri
        self.front_url = f"http://{_url_host(host)}:{self.port}"
        # Processes this object started: polling them reaps them once they exit.
        self._children: Dict[int, subprocess.Popen] = {}

    # ------------------------------------------------------------------ the Target protocol
    def state(self) -> Dict[str, ColourState]:
        state = self._read()
        result = {}
        for colour in COLOURS:
            server = state["colours"][colour]
            found = ColourState(colour, traffic=state["traffic"][colour], mirror=state["mirror"][colour], health="down")
            if server is not None:
                found.model, found.version = server["model"], server["version"]
                if self._alive(server):
                    url = self._url(state, colour)
                    found.health = "ready" if url and self._ready(url) else "not ready"
            result[colour] = found
        return result

    def put(self, colour: str, model: ModelRef) -> None:
        state = self._read()
        self._refuse_live(state, colour, "replacing")
        self._ensure_front(state)
        self._take_down(state, colour)
        log_file = self._log(colour)
        if log_file.exists():
            os.replace(log_file, log_file.with_suffix(".previous.log"))
        tracking_uri = model.tracking_uri or self.tracking_uri
        command = [
            sys.executable, "-m", "lettucify", "task=serve", f"model_uri={model.uri}",
            *([f"logger.tracking_uri={tracking_uri}"] if tracking_uri else []),
            f"serve.host={self.host}", "serve.port=0", f"serve.deployment={colour}",
            f"hydra.run.dir={self.dir / f'{colour}-run'}", *self.serve_overrides,
        ]
        state["colours"][colour] = {"model": model.name, "version": model.version, "url": None, "port": None,
                                    **self._spawn(command, log_file)}
        self._write(state)
        log.info("deploy local: %s starting %s (log: %s)", colour, model.uri, log_file)

    def wait_ready(self, colour: str, timeout_s: float) -> None:
        state = self._read()
        server = state["colours"][colour]
        if server is None:
            raise DeployError("ready", f"nothing is deployed on {colour}")
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._alive(server):
                raise DeployError("ready", f"{colour}'s server exited: {self._last_line(colour)}")
            url = self._url(state, colour)
            if url and self._ready(url):
                return
            if time.monotonic() > deadline:
                raise DeployError("ready", f"{colour} was not ready after {timeout_s:g}s: {self._last_line(colour)}")
            time.sleep(POLL_S)

    def direct(self, colour: str) -> Optional[Endpoint]:
        state = self._read()
        server = state["colours"][colour]
        url = self._url(state, colour) if server is not None and self._alive(server) else None
        if url is None:
            raise DeployError("ready", f"{colour} has no server listening ({self._log(colour)})")
        return Endpoint(scoring_url=f"{url}/predict", base_url=url)

    def set_traffic(self, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        traffic, mirror = traffic_split(traffic, mirror)
        state = self._read()
        for colour in COLOURS:
            wanted = traffic[colour] or mirror[colour]
            server = state["colours"][colour]
            if wanted and not (server is not None and self._alive(server) and self._url(state, colour)):
                raise DeployError("traffic", f"{colour} has no server listening to take {wanted}% ({self._log(colour)})")
        self._ensure_front(state)
        state["traffic"], state["mirror"] = traffic, mirror
        if not self._front_takes(self._write(state)):
            raise DeployError("traffic", f"the front did not take the new split in {FRONT_SYNC_S:g}s: "
                                         f"{_last_line(self.dir / 'front.log')}")
        log.info("deploy local: traffic %s, mirror %s", state["traffic"], state["mirror"])

    def remove(self, colour: str) -> None:
        state = self._read()
        self._refuse_live(state, colour, "removing")
        self._take_down(state, colour)

    def stop(self) -> None:
        state = self._read()
        state["traffic"] = {c: 0 for c in COLOURS}
        state["mirror"] = {c: 0 for c in COLOURS}
        self._front_takes(self._write(state))
        for colour in COLOURS:
            self._drain(colour)
        self._terminate([server for server in state["colours"].values() if server is not None])
        state["colours"] = {c: None for c in COLOURS}
        self._write(state)
        if state["front"] is not None:
            self._terminate([state["front"]])
            state["front"] = None
            self._write(state)
        log.info("deploy local: stopped; nothing runs from %s", self.dir)

    # ------------------------------------------------------------------ state.json
    def _read(self) -> Dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return empty_state()
        except ValueError as err:
            raise LettucifyError(f"{self.state_file} is not valid JSON ({err}): stop its processes and delete it") from None

    def _write(self, state: Dict[str, Any]) -> int:
        """Write ``state`` with the next version, atomically; return that version."""
        state["version"] += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(f".{STATE_FILE}.{os.getpid()}")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(partial, self.state_file)
        return state["version"]

    def _url(self, state: Dict[str, Any], colour: str) -> Optional[str]:
        """The colour's base URL: recorded, else from its log once the server printed it (then recorded)."""
        server = state["colours"][colour]
        if server["url"] is None:
            try:
                found = URL_LINE.search(self._log(colour).read_text(errors="replace"))
            except FileNotFoundError:
                found = None
            if found is None:
                return None
            server["url"] = found[1]
            server["port"] = int(found[1].rsplit(":", 1)[1])
            self._write(state)
        return server["url"]

    def _refuse_live(self, state: Dict[str, Any], colour: str, doing: str) -> None:
        if state["traffic"][colour]:
            raise DeployError("traffic", f"{colour} has {state['traffic'][colour]}% of live traffic: move it to "
                                         f"{other(colour)} before {doing} {colour}")

    # ------------------------------------------------------------------ processes
    def _log(self, colour: str) -> Path:
        return self.dir / f"{colour}.log"

    def _last_line(self, colour: str) -> str:
        return _last_line(self._log(colour))

    def _spawn(self, command: List[str], log_file: Path) -> Dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._children[child.pid] = child
        return {"pid": child.pid, "started": process_start(child.pid)}

    def _alive(self, process: Optional[Dict[str, Any]]) -> bool:
        if not process:
            return False
        child = self._children.get(process["pid"])
        if child is not None and child.poll() is not None:
            return False
        return process_start(process["pid"]) == process["started"]

    def _terminate(self, processes: List[Dict[str, Any]]) -> None:
        """SIGTERM each live one (a server finishes its requests, then exits), wait; SIGKILL what is
        left after drain_s, with its process group (serve.workers' processes)."""
        live = [p for p in processes if self._alive(p)]
        for process in live:
            os.kill(process["pid"], signal.SIGTERM)
        if _wait(lambda: not any(self._alive(p) for p in live), self.drain_s):
            return
        for process in live:
            if self._alive(process):
                log.warning("deploy local: pid %s did not stop in %gs after SIGTERM; killing it", process["pid"], self.drain_s)
                os.killpg(process["pid"], signal.SIGKILL)
        _wait(lambda: not any(self._alive(p) for p in live), KILL_WAIT_S)

    def _take_down(self, state: Dict[str, Any], colour: str) -> None:
        """Stop what runs on the colour: no new requests go there, those in flight finish, the
        server stops; the colour is recorded empty."""
        server = state["colours"][colour]
        if server is None:
            return
        server["url"] = None
        state["mirror"][colour] = 0
        self._front_takes(self._write(state))
        self._drain(colour)
        self._terminate([server])
        state["colours"][colour] = None
        self._write(state)
        log.info("deploy local: %s stopped (%s version %s)", colour, server["model"], server["version"])

    # ------------------------------------------------------------------ the front
    def _front(self) -> Optional[Dict[str, Any]]:
        """What the running front reports (GET /-/front), or None when nothing answers."""
        try:
            answer = requests.get(f"{self.front_url}/-/front", timeout=PROBE_TIMEOUT_S)
            return answer.json() if answer.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def _front_takes(self, version: int) -> bool:
        """Wait until the front applies state ``version``; True at once when no front runs."""
        if not self._alive(self._read()["front"]):
            return True
        return _wait(lambda: (self._front() or {}).get("state_version", -1) >= version, FRONT_SYNC_S)

    def _drain(self, colour: str) -> None:
        if not self._alive(self._read()["front"]):
            return
        if not _wait(lambda: (self._front() or {}).get("in_flight", {}).get(colour, 0) == 0, self.drain_s):
            log.warning("deploy local: %s still had requests in flight after %gs; stopping it anyway", colour, self.drain_s)

    def _ensure_front(self, state: Dict[str, Any]) -> None:
        """Start the front on host:port unless it runs there already (one on another port is
        stopped: the config moved it)."""
        front = state["front"]
        if self._alive(front) and (front["host"], front["port"]) == (self.host, self.port):
            return
        if front is not None:
            self._terminate([front])
        self._refuse_taken_port()
        command = [sys.executable, "-m", "lettucify.deploy.front", "--state", str(self.state_file),
                   "--host", self.host, "--port", str(self.port), "--graceful-s", f"{self.drain_s:g}"]
        front = state["front"] = {"host": self.host, "port": self.port, **self._spawn(command, self.dir / "front.log")}
        self._write(state)
        if not _wait(lambda: not self._alive(front) or (self._front() or {}).get("pid") == front["pid"], FRONT_START_S) \
                or not self._alive(front):
            self._terminate([front])
            raise LettucifyError(f"the front did not start on {self.host}:{self.port} (deploy.local.port): "
                                 f"{_last_line(self.dir / 'front.log')}")
        log.info("deploy local: front at %s (log: %s)", self.front_url, self.dir / "front.log")

    def _refuse_taken_port(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
            try:
                probe.bind((self.host, self.port))
            except OSError as err:
                raise LettucifyError(f"deploy.local.port: {self.host}:{self.port} is taken by another program "
                                     f"({err.strerror or err}); stop it or choose another deploy.local.port") from None

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            return requests.get(f"{url}/ready", timeout=PROBE_TIMEOUT_S).status_code == 200
        except requests.RequestException:
            return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return f"{path} does not exist"
    return lines[-1][-500:] if lines else f"{path} is empty"
