"""The one seam between Lettucify and the Azure ML service.

Everything that would reach Azure goes through :class:`AzureML`, which wraps an
``azure.ai.ml.MLClient``. Tests hand it a fake client that records what would be
sent; :func:`connect` is the only place that builds a real one.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional

from omegaconf import DictConfig

from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)
# The SDK logs every credential probe and HTTP request at INFO.
logging.getLogger("azure").setLevel(logging.WARNING)

# Terminal states of an Azure ML job.
COMPLETED = "Completed"
FINAL_STATES = {COMPLETED, "Failed", "Canceled", "NotResponding"}


@dataclass(frozen=True)
class Submitted:
    name: str
    studio_url: Optional[str]


def require_sdk() -> None:
    try:
        import azure.ai.ml  # noqa: F401
    except ImportError:
        raise LettucifyError(
            "Azure ML needs azure-ai-ml and azure-identity: pip install -e '.[azure]'"
        ) from None


@contextmanager
def service_errors(action: str) -> Iterator[None]:
    """Azure's failures (sign-in, permissions, quota, the network) as one actionable line."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    try:
        yield
    except ClientAuthenticationError as err:
        raise LettucifyError(
            f"{action}: Azure sign-in failed ({first_line(err)}); run `az login` or set the "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET environment variables"
        ) from None
    except AzureError as err:
        raise LettucifyError(f"{action}: {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def make_ml_client(workspace: DictConfig) -> Any:
    """An MLClient on Azure's credential chain; nothing secret is ever configured."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    if workspace.subscription_id and workspace.resource_group and workspace.name:
        return MLClient(credential, workspace.subscription_id, workspace.resource_group, workspace.name)
    try:
        return MLClient.from_config(credential, path=workspace.config_path)
    except Exception as err:  # azure-ai-ml raises its own ValidationException types here
        raise LettucifyError(
            "no Azure ML workspace: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and "
            "AZUREML_WORKSPACE_NAME (or compute.azure.workspace.*), or put the workspace's "
            f"config.json in this folder or compute.azure.workspace.config_path ({first_line(err)})"
        ) from None


def connect(workspace: DictConfig) -> "AzureML":
    require_sdk()
    return AzureML(make_ml_client(workspace))


def _found(get: Callable[[], Any]) -> Optional[Any]:
    """What ``get`` returns, or None when the service has no such resource."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return get()
    except ResourceNotFoundError:
        return None


class AzureML:
    """What Lettucify asks of a workspace: clusters, job submission, following, cancelling;
    online endpoints and their deployments (deploy=azure_online)."""

    def __init__(self, ml_client: Any) -> None:
        self.ml = ml_client
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def ensure_cluster(self, cluster: Any) -> None:
        """Create the cluster when missing, or update its scale settings; once per name."""
        with self._lock, service_errors(f"cluster {cluster.name}"):
            if cluster.name in self._ready:
                return
            existing = _found(lambda: self.ml.compute.get(cluster.name))
            if existing is not None and str(existing.size).lower() != str(cluster.size).lower():
                raise LettucifyError(
                    f"cluster {cluster.name} exists with size {existing.size}, not {cluster.size}; "
                    "a cluster's VM size cannot change: set compute.azure.cluster.name to a new name"
                )
            scale = ("min_instances", "max_instances", "idle_time_before_scale_down", "tier")
            if existing is None or any(getattr(existing, k) != getattr(cluster, k) for k in scale):
                log.info("%s cluster %s (%s, %d to %d nodes)", "creating" if existing is None else "updating",
                         cluster.name, cluster.size, cluster.min_instances, cluster.max_instances)
                self.ml.compute.begin_create_or_update(cluster).result()
            self._ready.add(cluster.name)

    def submit(self, job: Any) -> Submitted:
        with service_errors(f"submitting {job.display_name}"):
            created = self.ml.jobs.create_or_update(job)
        return Submitted(created.name, getattr(created, "studio_url", None))

    def status(self, name: str) -> str:
        with service_errors(f"job {name}"):
            return self.ml.jobs.get(name).status

    def stream(self, name: str) -> None:
        with service_errors(f"job {name}"):
            self.ml.jobs.stream(name)

    def cancel(self, name: str) -> None:
        with service_errors(f"cancelling job {name}"):
            self.ml.jobs.begin_cancel(name)

    def download_output(self, name: str, output_name: str, path: Path) -> Path:
        """Download a named output; returns the folder that holds it."""
        with service_errors(f"job {name}"):
            self.ml.jobs.download(name, download_path=str(path), output_name=output_name)
        return path / "named-outputs" / output_name

    # ------------------------------------------------------------------ online endpoints
    def online_endpoint(self, name: str) -> Optional[Any]:
        """The endpoint, or None when the workspace has none of that name."""
        with service_errors(f"endpoint {name}"):
            return _found(lambda: self.ml.online_endpoints.get(name))

    def put_online_endpoint(self, endpoint: Any) -> Any:
        with service_errors(f"creating endpoint {endpoint.name}"):
            return self.ml.online_endpoints.begin_create_or_update(endpoint).result()

    def set_endpoint_traffic(self, name: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        """Send the endpoint's live and mirror traffic maps as they are (the caller keeps Azure's rules)."""
        with service_errors(f"traffic of endpoint {name}"):
            endpoint = self.ml.online_endpoints.get(name)
            endpoint.traffic, endpoint.mirror_traffic = dict(traffic), dict(mirror)
            self.ml.online_endpoints.begin_create_or_update(endpoint).result()

    def delete_online_endpoint(self, name: str) -> None:
        """Delete the endpoint and every deployment on it."""
        with service_errors(f"deleting endpoint {name}"):
            self.ml.online_endpoints.begin_delete(name=name).result()

    def endpoint_key(self, name: str) -> str:
        """The endpoint's primary key. A secret: for request headers only, never logged or written."""
        with service_errors(f"keys of endpoint {name}"):
            keys = self.ml.online_endpoints.get_keys(name)
        key = getattr(keys, "primary_key", None)
        if not key:
            raise LettucifyError(f"endpoint {name} has no key: its auth_mode is not key; "
                                 "deploy to an endpoint of Lettucify's own (deploy.azure_online.endpoint_name)")
        return key

    def online_deployments(self, endpoint_name: str) -> List[Any]:
        with service_errors(f"deployments of endpoint {endpoint_name}"):
            return list(self.ml.online_deployments.list(endpoint_name))

    def online_deployment(self, endpoint_name: str, name: str) -> Optional[Any]:
        """The deployment, or None when the endpoint has none of that name."""
        with service_errors(f"deployment {name} of endpoint {endpoint_name}"):
            return _found(lambda: self.ml.online_deployments.get(name, endpoint_name))

    def put_online_deployment(self, deployment: Any) -> Any:
        """Create or update the deployment (uploading its model, building its environment) and
        wait until Azure has provisioned it."""
        with service_errors(f"deployment {deployment.name} of endpoint {deployment.endpoint_name}"):
            return self.ml.online_deployments.begin_create_or_update(deployment).result()

    def delete_online_deployment(self, endpoint_name: str, name: str) -> None:
        with service_errors(f"deleting deployment {name} of endpoint {endpoint_name}"):
            self.ml.online_deployments.begin_delete(name, endpoint_name).result()

    def deployment_logs(self, endpoint_name: str, name: str, lines: int) -> str:
        """The last ``lines`` lines of the deployment's container log."""
        with service_errors(f"logs of deployment {name} of endpoint {endpoint_name}"):
            return self.ml.online_deployments.get_logs(name, endpoint_name, lines)
