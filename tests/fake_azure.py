"""A fake ``azure.ai.ml.MLClient`` that records what Lettucify would send to Azure ML.

Tests put it behind the one seam (``lettucify.azure.client.make_ml_client``); every
entity it receives is the real azure-ai-ml object that would have gone out. Its online
endpoints and deployments keep state as the service would, and record every call in
order in ``FakeMLClient.online_calls``.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence

from azure.ai.ml.entities import EndpointAuthKeys, ManagedOnlineEndpoint
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError


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


@dataclass
class Call:
    """One call to the fake's online endpoints or deployments: ``online_endpoints.get`` and the like."""

    name: str
    args: Dict[str, Any] = field(default_factory=dict)


def _done(value: Any = None) -> Any:
    return SimpleNamespace(result=lambda: value)


class FakeOnlineEndpoints:
    def __init__(self, owner: "FakeMLClient") -> None:
        self.owner = owner
        self.existing: Dict[str, ManagedOnlineEndpoint] = {}

    def get(self, name: str) -> ManagedOnlineEndpoint:
        self.owner.record("online_endpoints.get", name=name)
        if name not in self.existing:
            raise ResourceNotFoundError(f"(fake) no online endpoint {name}")
        stored = self.existing[name]
        return ManagedOnlineEndpoint(
            name=name, auth_mode=stored.auth_mode, tags=dict(stored.tags or {}), traffic=dict(stored.traffic or {}),
            mirror_traffic=dict(stored.mirror_traffic or {}), provisioning_state="Succeeded",
            scoring_uri=f"https://{name}.westeurope.inference.ml.azure.com/score",
        )

    def begin_create_or_update(self, endpoint: ManagedOnlineEndpoint) -> Any:
        """Records the maps sent and the deployments the endpoint had when they were."""
        self.owner.record("online_endpoints.begin_create_or_update", name=endpoint.name, auth_mode=endpoint.auth_mode,
                          traffic=dict(endpoint.traffic or {}), mirror_traffic=dict(endpoint.mirror_traffic or {}),
                          deployments=sorted(self.owner.online_deployments.of(endpoint.name)))
        self.existing[endpoint.name] = copy.deepcopy(endpoint)
        return _done(endpoint)

    def begin_delete(self, name: Optional[str] = None) -> Any:
        self.owner.record("online_endpoints.begin_delete", name=name)
        self.existing.pop(name, None)
        self.owner.online_deployments.existing.pop(name, None)
        return _done()

    def get_keys(self, name: str) -> EndpointAuthKeys:
        self.owner.record("online_endpoints.get_keys", name=name)
        return EndpointAuthKeys(primary_key=self.owner.endpoint_key, secondary_key=self.owner.endpoint_key[::-1])


class FakeOnlineDeployments:
    """Deployments per endpoint. A new one reports the states of ``provisioning`` (its name ->
    the states successive gets return, the last repeated; default Succeeded); one named in
    ``failing`` fails to provision (its create raises, it stays Failed) with that log."""

    def __init__(self, owner: "FakeMLClient", provisioning: Dict[str, Sequence[str]], failing: Dict[str, str]) -> None:
        self.owner = owner
        self.provisioning = provisioning
        self.failing = failing
        self.existing: Dict[str, Dict[str, Any]] = {}  # endpoint -> name -> deployment
        self.states: Dict[tuple, List[str]] = {}

    def of(self, endpoint_name: str) -> Dict[str, Any]:
        return self.existing.get(endpoint_name, {})

    def _reported(self, endpoint_name: str, name: str, advance: bool) -> Any:
        states = self.states[endpoint_name, name]
        state = states.pop(0) if advance and len(states) > 1 else states[0]
        reported = copy.deepcopy(self.existing[endpoint_name][name])
        reported._provisioning_state = state  # what the service's answers carry
        return reported

    def get(self, name: str, endpoint_name: str) -> Any:
        """The deployment in its next provisioning state."""
        self.owner.record("online_deployments.get", name=name, endpoint_name=endpoint_name)
        if name not in self.of(endpoint_name):
            raise ResourceNotFoundError(f"(fake) no deployment {name} of endpoint {endpoint_name}")
        return self._reported(endpoint_name, name, advance=True)

    def list(self, endpoint_name: str) -> List[Any]:
        self.owner.record("online_deployments.list", endpoint_name=endpoint_name)
        return [self._reported(endpoint_name, name, advance=False) for name in self.of(endpoint_name)]

    def begin_create_or_update(self, deployment: Any) -> Any:
        endpoint_name = deployment.endpoint_name
        self.owner.record("online_deployments.begin_create_or_update", name=deployment.name,
                          endpoint_name=endpoint_name, deployment=deployment)
        if endpoint_name not in self.owner.online_endpoints.existing:
            raise ResourceNotFoundError(f"(fake) no online endpoint {endpoint_name}")
        self.existing.setdefault(endpoint_name, {})[deployment.name] = copy.deepcopy(deployment)
        if deployment.name in self.failing:
            self.states[endpoint_name, deployment.name] = ["Failed"]
            return SimpleNamespace(result=self._fail)
        self.states[endpoint_name, deployment.name] = list(self.provisioning.get(deployment.name, ["Succeeded"]))
        return _done(deployment)

    @staticmethod
    def _fail() -> None:
        raise HttpResponseError("(fake) ResourceNotReady: User container has crashed or terminated.")

    def begin_delete(self, name: str, endpoint_name: str) -> Any:
        """Deletes it, and (as Azure does) its entries in the endpoint's maps."""
        self.owner.record("online_deployments.begin_delete", name=name, endpoint_name=endpoint_name)
        self.of(endpoint_name).pop(name, None)
        endpoint = self.owner.online_endpoints.existing.get(endpoint_name)
        for shares in (endpoint.traffic, endpoint.mirror_traffic) if endpoint else ():
            (shares or {}).pop(name, None)
        return _done()

    def get_logs(self, name: str, endpoint_name: str, lines: int, **kwargs: Any) -> str:
        self.owner.record("online_deployments.get_logs", name=name, endpoint_name=endpoint_name, lines=lines)
        return self.failing.get(name, "serve: ready (onnxruntime backend, 3 classes)\n")


class FakeMLClient:
    """Records submissions; says every job ends with ``final_status``. Online endpoints start
    empty; their key is ``endpoint_key``."""

    def __init__(
        self,
        *,
        existing_clusters: Optional[Dict[str, Any]] = None,
        fail_submission: Callable[[Any], bool] = lambda job: False,
        final_status: str = "Completed",
        write_output: Callable[[str, Any, Path], None] = lambda name, job, folder: None,
        endpoint_key: str = "fake-endpoint-key",
        provisioning: Optional[Dict[str, Sequence[str]]] = None,
        failing_deployments: Optional[Dict[str, str]] = None,
    ) -> None:
        self.jobs = FakeJobs(self)
        self.compute = FakeCompute(existing_clusters or {})
        self.online_calls: List[Call] = []
        self.endpoint_key = endpoint_key
        self.online_endpoints = FakeOnlineEndpoints(self)
        self.online_deployments = FakeOnlineDeployments(self, provisioning or {}, failing_deployments or {})
        self.fail_submission = fail_submission
        self.final_status = final_status
        self.write_output = write_output
        self.names: Dict[str, Any] = {}

    def status_of(self, name: str) -> str:
        return "Canceled" if name in self.jobs.cancelled else self.final_status

    def record(self, call: str, **args: Any) -> None:
        self.online_calls.append(Call(call, args))

    def calls(self, *names: str) -> List[Call]:
        """The recorded online calls of those names (all of them when none is given), in order."""
        return [call for call in self.online_calls if not names or call.name in names]
