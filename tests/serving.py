"""The real server in a process of its own, for tests: start, wait until ready, stop.

    with ServerProcess(["model_uri=models:/x@candidate", ...], tmp_path) as server:
        server.post("/predict", data=jpeg, headers={"Content-Type": "image/jpeg"})
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import requests

STARTUP_S = 120


class ServerProcess:
    """``python -m lettucify task=serve serve.port=0 ...``, its URL read from its stdout."""

    def __init__(self, overrides: Sequence[str], run_dir: Path, env: Optional[Dict[str, str]] = None,
                 api_key: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.run_dir / "server.stderr"
        self.api_key = api_key
        self.session = requests.Session()
        command = [sys.executable, "-m", "lettucify", "task=serve", "serve.port=0", f"hydra.run.dir={run_dir}", *overrides]
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env={**os.environ, **(env or {})},
        )
        self.url = self._read_url()
        self._wait_ready()

    def _read_url(self) -> str:
        found: Dict[str, str] = {}

        def read() -> None:
            for line in self.process.stdout:
                match = re.search(r"at (http://\S+) ", line)
                if match:
                    found["url"] = match[1]
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(STARTUP_S)
        if "url" not in found:
            self.stop()
            raise RuntimeError(f"the server printed no URL; stderr:\n{self.stderr()[-3000:]}")
        return found["url"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.stderr()[-3000:]}")
            try:
                if requests.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready in {STARTUP_S}s:\n{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def request(self, method: str, route: str, key: Optional[str] = "default", session=None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        key = self.api_key if key == "default" else key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return (session or self.session).request(method, f"{self.url}{route}", headers=headers, timeout=60, **kwargs)

    def get(self, route: str, **kwargs) -> requests.Response:
        return self.request("GET", route, **kwargs)

    def post(self, route: str, **kwargs) -> requests.Response:
        return self.request("POST", route, **kwargs)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit status once it has stopped."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
