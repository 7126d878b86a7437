"""For the serving and prediction tests: a registered model to serve, what evaluation
says of photos, and the real server in a process of its own (start, wait until ready, stop).

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
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import requests
import torch

STARTUP_S = 120
# The registered model's name.
MODEL = "fridge-serve"
# Largest difference in a probability that still counts as the same answer.
TOLERANCE = 1e-4


def train(root: Path, images: Path, uri: str, *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "model=cnn16", "model.input_size=32", "data=imagefolder",
         f"data.root={images}", "data.batch_size=8", "trainer.epochs=3", "compute.num_threads=1",
         f"logger.tracking_uri={uri}", f"registry.name={MODEL}", f"hydra.run.dir={root / 'train'}", *extra],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def registered_model(root: Path) -> Tuple[Path, Path, str]:
    """``(root, images, tracking URI)``: generated images under root, and a cnn16 trained on
    them and registered as MODEL version 1 (@candidate) in a SQLite store there."""
    from helpers import make_image_folder

    images = make_image_folder(root / "images")
    uri = f"sqlite:///{root}/mlflow.db"
    train(root, images, uri)
    return root, images, uri


def copied_version(uri: str, version: str = "1") -> str:
    """A new version of MODEL holding ``version``'s files, registered without training: its number."""
    from lettucify.tracking.store import client

    return str(client(uri).copy_model_version(f"models:/{MODEL}/{version}", MODEL).version)


def evaluation_probabilities(model_uri: str, uri: str) -> Callable[[Sequence[Path]], np.ndarray]:
    """What evaluation computes for image files: its decoder, preprocessing, flip and softmax."""
    from lettucify.data.images import load_rgb
    from lettucify.data.transforms import eval_transform
    from lettucify.evaluate.metrics import softmax_probs
    from lettucify.models.build import load_trained
    from lettucify.models.tta import FlipAveraged

    model, classes, preprocess, _ = load_trained(None, model_uri, uri)
    transform = eval_transform(preprocess["input_size"], preprocess["mean"], preprocess["std"])
    net = FlipAveraged(model).eval()

    def probabilities(paths: Sequence[Path]) -> np.ndarray:
        with torch.no_grad():
            return softmax_probs(net(torch.stack([transform(load_rgb(p)) for p in paths])))

    probabilities.classes = classes
    return probabilities


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
