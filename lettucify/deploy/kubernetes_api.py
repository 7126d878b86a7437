"""The Kubernetes API as ``deploy=kubernetes`` needs it, through the official Python client
(the ``kubernetes`` extra, imported here only): apply a manifest, delete one, read a
Deployment's rollout and what keeps its pods from starting. Tests swap in a fake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from lettucify.errors import LettucifyError

# Who owns the fields Lettucify applies (server-side apply).
FIELD_MANAGER = "lettucify"


@dataclass(frozen=True)
class Rollout:
    """A Deployment's status: the pods it wants, those of its current template, those available."""

    generation: int
    observed_generation: int
    replicas: int
    updated: int
    available: int


def _describe(manifest: Dict[str, Any]) -> str:
    meta = manifest["metadata"]
    return f"{manifest['kind']} {meta['namespace'] + '/' if 'namespace' in meta else ''}{meta['name']}"


class Cluster:
    """The cluster of the current kubeconfig context, else the one this process runs in."""

    def __init__(self) -> None:
        try:
            from kubernetes import client, config, dynamic
        except ImportError:
            raise LettucifyError(
                "deploy.kubernetes.apply=true needs the Kubernetes client: pip install 'lettucify[kubernetes]'"
            ) from None
        try:
            config.load_kube_config()
        except config.ConfigException:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise LettucifyError(
                    "deploy.kubernetes.apply=true: no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod; "
                    "get credentials (az aks get-credentials) or set apply=false"
                ) from None
        self._api = client.ApiClient()
        self._dynamic = dynamic.DynamicClient(self._api)
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        # What a call can fail with: the API's answer, or no answer (urllib3's errors).
        import urllib3

        self._errors = (client.exceptions.ApiException, urllib3.exceptions.HTTPError)

    def _resource(self, manifest: Dict[str, Any]) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        except self._errors as err:
            raise LettucifyError(f"kubernetes: cannot reach the cluster: {_reason(err)}") from None
        except ResourceNotFoundError:
            raise LettucifyError(
                f"the cluster does not know {manifest['kind']} ({manifest['apiVersion']}): install its CRDs "
                "(Gateway API; the ALB controller of Application Gateway for Containers)"
            ) from None

    def apply(self, manifest: Dict[str, Any]) -> None:
        """Create or update ``manifest`` (server-side apply, taking over fields others set)."""
        resource = self._resource(manifest)
        try:
            self._dynamic.server_side_apply(
                resource, body=manifest, namespace=manifest["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER, force_conflicts=True,
            )
        except self._errors as err:
            raise LettucifyError(f"kubernetes: applying {_describe(manifest)} failed: {_reason(err)}") from None

    def delete(self, manifest: Dict[str, Any]) -> None:
        """Delete ``manifest``'s object; one that is not there is fine."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self._resource(manifest)
        try:
            meta = manifest["metadata"]
            self._dynamic.delete(resource, name=meta["name"], namespace=meta.get("namespace"))
        except NotFoundError:
            pass
        except self._errors as err:
            raise LettucifyError(f"kubernetes: deleting {_describe(manifest)} failed: {_reason(err)}") from None

    def rollout(self, namespace: str, name: str) -> Optional[Rollout]:
        """The Deployment's rollout; None when there is no such Deployment."""
        try:
            found = self._apps.read_namespaced_deployment(name, namespace)
        except self._errors as err:
            if getattr(err, "status", None) == 404:
                return None
            raise LettucifyError(f"kubernetes: reading Deployment {namespace}/{name} failed: {_reason(err)}") from None
        status = found.status
        return Rollout(
            generation=found.metadata.generation or 0,
            observed_generation=status.observed_generation or 0,
            replicas=status.replicas or 0,
            updated=status.updated_replicas or 0,
            available=status.available_replicas or 0,
        )

    def pod_problems(self, namespace: str, selector: str) -> List[str]:
        """Why the selected pods' containers are waiting or restarting (ImagePullBackOff, ...)."""
        try:
            pods = self._core.list_namespaced_pod(namespace, label_selector=selector).items
        except self._errors as err:
            return [f"listing its pods failed: {_reason(err)}"]
        problems = []
        for pod in pods:
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                if waiting and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
                    problems.append(f"{pod.metadata.name}: {waiting.reason}: {waiting.message or ''}".rstrip(": "))
        return problems


def _reason(err: Exception) -> str:
    """One line: the API's status and message, or why there was no answer."""
    status = getattr(err, "status", None)
    if status is None:
        return str(err).splitlines()[0]
    try:
        message = json.loads(err.body).get("message")  # type: ignore[attr-defined]
    except (TypeError, ValueError, AttributeError):
        message = None
    return f"{status} {err.reason}" + (f": {message}" if message else "")  # type: ignore[attr-defined]
