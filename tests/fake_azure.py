"""A fake ``azure.ai.ml.MLClient`` that records what Lettucify would send to Azure ML.

Tests put it behind the one seam (``lettucify.azure.client.make_ml_client``); every
entity it receives is the real azure-ai-ml object that would have gone out.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

from azure.core.exceptions import ResourceNotFoundError


class FakeJobs:
    def __init__(self, owner: "FakeMLClient") -> None:
        self.owner = owner
        self.submitted: List[Any] = []
        self.cancelled: List[str] = []
        self.streamed: List[str] = []
        self._lock = threading.Lock()

    def create_or_update(self, job: Any) -> Any:
        if self.owner.fail_submission(job):
            raise RuntimeError(f"(fake) the service refused job {job.display_name}")
        with self._lock:
            self.submitted.append(job)
            name = f"fake-job-{len(self.submitted)}"
        self.owner.names[name] = job
        return SimpleNamespace(name=name, studio_url=f"https://ml.azure.com/runs/{name}", status="Queued")

    def get(self, name: str) -> Any:
        return SimpleNamespace(name=name, status=self.owner.status_of(name))

    def stream(self, name: str) -> None:
        self.streamed.append(name)

    def begin_cancel(self, name: str) -> Any:
        self.cancelled.append(name)
        return SimpleNamespace(result=lambda: None)

    def download(self, name: str, download_path: str, output_name: Optional[str] = None, all: bool = False) -> None:
        folder = Path(download_path) / "named-outputs" / str(output_name)
        folder.mkdir(parents=True, exist_ok=True)
        self.owner.write_output(name, self.owner.names[name], folder)


class FakeCompute:
    def __init__(self, existing: Dict[str, Any]) -> None:
        self.existing = dict(existing)
        self.created: List[Any] = []

    def get(self, name: str) -> Any:
        if name not in self.existing:
            raise ResourceNotFoundError(f"(fake) no compute {name}")
        return self.existing[name]

    def begin_create_or_update(self, cluster: Any) -> Any:
        self.created.append(cluster)
        self.existing[cluster.name] = cluster
        return SimpleNamespace(result=lambda: cluster)


class FakeMLClient:
    """Records submissions; says every job ends with ``final_status``."""

    def __init__(
        self,
        *,
        existing_clusters: Optional[Dict[str, Any]] = None,
        fail_submission: Callable[[Any], bool] = lambda job: False,
        final_status: str = "Completed",
        write_output: Callable[[str, Any, Path], None] = lambda name, job, folder: None,
    ) -> None:
        self.jobs = FakeJobs(self)
        self.compute = FakeCompute(existing_clusters or {})
        self.fail_submission = fail_submission
        self.final_status = final_status
        self.write_output = write_output
        self.names: Dict[str, Any] = {}

    def status_of(self, name: str) -> str:
        return "Canceled" if name in self.jobs.cancelled else self.final_status
