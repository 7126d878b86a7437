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
from typing import Any, Iterator, Optional

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


class AzureML:
    """What Lettucify asks of a workspace: clusters, job submission, following, cancelling."""

    def __init__(self, ml_client: Any) -> None:
        self.ml = ml_client
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def ensure_cluster(self, cluster: Any) -> None:
        """Create the cluster when missing, or update its scale settings; once per name."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._lock, service_errors(f"cluster {cluster.name}"):
            if cluster.name in self._ready:
                return
            try:
                existing = self.ml.compute.get(cluster.name)
            except ResourceNotFoundError:
                existing = None
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
