"""``deploy=azure_online``: blue and green as the deployments of one Azure ML managed online
endpoint (key auth), the traffic split being Azure's own.

Every call goes through the seam (``lettucify.azure.client.AzureML``); the entities are
``lettucify.azure.online``'s, and every traffic map is checked against Azure's rules before
it is sent. With ``dry_run`` a stand-in of the seam (``Rendered``) writes ``endpoint.yaml``
and ``deployment-<colour>.yaml`` into the run folder instead and calls nothing: ``state()``
then says what would be (health "unknown"), starting from an endpoint that does not exist
yet; ``wait_ready`` returns at once and ``direct`` returns None.

What each method does:

* ``put``: refuses a colour with live traffic; downloads the version into
  ``<run_dir>/model-<colour>/``; creates the endpoint when missing; creates or updates the
  colour's deployment (0% traffic) and waits for Azure to provision it. A deployment of
  another instance type is deleted first (Azure cannot change it in place). One that Azure
  fails to provision is left for ``wait_ready`` to report.
* ``wait_ready``: polls the deployment's provisioning state: Succeeded returns; Failed or
  Canceled, or still another state after ``timeout_s``, raises ``DeployError("ready", ...)``
  ending with its container log's last line.
* ``direct``: the endpoint's scoring URI, with the headers that route to the colour alone
  (``azureml-model-deployment``) and carry the endpoint key (``Authorization: Bearer``);
  the key is read from Azure on each call and is never logged or written.
* ``set_traffic``: every deployment of the endpoint gets its share (0 when not named; a 0 for
  a colour with no deployment is dropped); the mirror map names the deployments that were or
  will be mirrored (0 stops it). Nothing is sent when nothing changes. When both maps change,
  the mirror goes first in an update of its own (the live map first when only that order
  keeps to the rules).
* ``remove``: deletes the colour's deployment; refused while it takes live or mirrored traffic.
* ``stop``: deletes the endpoint and its deployments when no deployment takes live traffic;
  otherwise refused, naming the command that deletes it anyway.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Tuple

from lettucify.azure import client as azure_client
from lettucify.azure import online
from lettucify.config import AzureShip
from lettucify.deploy.target import COLOURS, ColourState, DeployError, Endpoint, ModelRef
from lettucify.errors import LettucifyError
from lettucify.tracking.secrets import MASK

log = logging.getLogger(__name__)

ENDPOINT_YAML = "endpoint.yaml"
# How often wait_ready asks for the provisioning state, and how much of the log it reads on failure.
POLL_S = 10.0
LOG_LINES = 50
SUCCEEDED = "Succeeded"
FAILED_STATES = frozenset({"Failed", "Canceled"})


def deployment_yaml(colour: str) -> str:
    return f"deployment-{colour}.yaml"


class KeyHeaders(dict):
    """Request headers that carry the endpoint key, shown (repr, str, a log line) with it masked."""

    def __repr__(self) -> str:
        return repr({name: MASK if name.lower() == "authorization" else value for name, value in self.items()})


class Rendered:
    """The seam's endpoint calls, answered from what a dry run would have sent: each entity is
    kept here and written as YAML into ``folder``; nothing reaches Azure, nothing is read from it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.endpoint: Optional[Any] = None
        self.deployments: Dict[str, Any] = {}

    def _write_endpoint(self) -> None:
        online.write_yaml(self.endpoint, self.folder / ENDPOINT_YAML)

    def online_endpoint(self, name: str) -> Optional[Any]:
        return self.endpoint

    def put_online_endpoint(self, endpoint: Any) -> Any:
        self.endpoint = endpoint
        self._write_endpoint()
        return endpoint

    def set_endpoint_traffic(self, name: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        self.endpoint.traffic, self.endpoint.mirror_traffic = dict(traffic), dict(mirror)
        self._write_endpoint()

    def delete_online_endpoint(self, name: str) -> None:
        for path in [self.folder / ENDPOINT_YAML, *map(self.folder.joinpath, map(deployment_yaml, self.deployments))]:
            path.unlink(missing_ok=True)
        self.endpoint, self.deployments = None, {}

    def online_deployments(self, endpoint_name: str) -> List[Any]:
        return list(self.deployments.values())

    def online_deployment(self, endpoint_name: str, name: str) -> Optional[Any]:
        return self.deployments.get(name)

    def put_online_deployment(self, deployment: Any) -> Any:
        self.deployments[deployment.name] = deployment
        online.write_yaml(deployment, self.folder / deployment_yaml(deployment.name))
        return deployment

    def delete_online_deployment(self, endpoint_name: str, name: str) -> None:
        """As Azure does, the endpoint's maps lose the deployment too."""
        self.deployments.pop(name, None)
        (self.folder / deployment_yaml(name)).unlink(missing_ok=True)
        if self.endpoint is not None:
            traffic, mirror = _maps(self.endpoint)
            traffic.pop(name, None), mirror.pop(name, None)
            self.set_endpoint_traffic(endpoint_name, traffic, mirror)


def health(provisioning_state: Optional[str]) -> str:
    if provisioning_state is None:
        return "unknown"  # rendered only
    return "ready" if provisioning_state == SUCCEEDED else provisioning_state


def _maps(endpoint: Any) -> Tuple[Dict[str, int], Dict[str, int]]:
    return dict(endpoint.traffic or {}), dict(endpoint.mirror_traffic or {})


def _as_sent(shares: Mapping[str, int], deployments: Collection[str], zeros: Iterable[str]) -> Dict[str, int]:
    """``shares`` as the endpoint gets them: ``zeros`` named at 0, then ``shares`` less a 0
    for a deployment the endpoint does not have (any other share is the rules' to refuse)."""
    return {**{name: 0 for name in zeros}, **{n: s for n, s in shares.items() if s or n in deployments}}


class AzureOnlineTarget:
    """The Target of ``deploy=azure_online``, built from ``deploy.azure_online``'s settings.

    ``tracking_uri`` is part of every target's construction; this one has no use for it, as
    each ModelRef names its own store.
    """

    name = "azure_online"

    def __init__(
        self,
        workspace: Any,
        endpoint_name: str,
        instance_type: str,
        instance_count: int,
        ship: AzureShip,
        image: Optional[str],
        max_concurrent_requests_per_instance: int,
        request_timeout_ms: int,
        dry_run: bool,
        *,
        run_dir: Path,
        tracking_uri: Optional[str] = None,
    ) -> None:
        self.settings = online.DeploymentSettings(
            endpoint_name, instance_type, instance_count, AzureShip(ship), image,
            max_concurrent_requests_per_instance, request_timeout_ms,
        )
        self.workspace = workspace
        self.run_dir = Path(run_dir)
        self.dry_run = dry_run

    @functools.cached_property
    def azure(self) -> Any:
        """The seam (or, in a dry run, its stand-in), made on first use: building the target
        (inside Hydra's instantiate, which would wrap an error) checks nothing and calls nothing."""
        azure_client.require_sdk()
        return Rendered(self.run_dir) if self.dry_run else azure_client.connect(self.workspace)

    @property
    def endpoint_name(self) -> str:
        return self.settings.endpoint_name

    def _endpoint(self, why: Optional[str] = None) -> Optional[Any]:
        """The endpoint; with ``why``, its absence is an error saying what needed it."""
        endpoint = self.azure.online_endpoint(self.endpoint_name)
        if endpoint is None and why:
            raise LettucifyError(f"there is no endpoint {self.endpoint_name} in the workspace to {why}: "
                                 "deploy a version first (task=deploy)")
        return endpoint

    def state(self) -> Dict[str, ColourState]:
        endpoint = self._endpoint()
        if endpoint is None:
            return {colour: ColourState(colour, health="down") for colour in COLOURS}
        traffic, mirror = _maps(endpoint)
        deployments = {d.name: d for d in self.azure.online_deployments(self.endpoint_name)}
        states = {}
        for colour in COLOURS:
            shares = {"traffic": traffic.get(colour, 0), "mirror": mirror.get(colour, 0)}
            deployment = deployments.get(colour)
            if deployment is None:
                states[colour] = ColourState(colour, health="down", **shares)
                continue
            tags = deployment.tags or {}
            states[colour] = ColourState(colour, model=tags.get(online.TAG_MODEL), version=tags.get(online.TAG_VERSION),
                                         health=health(deployment.provisioning_state), **shares)
        return states

    def put(self, colour: str, model: ModelRef) -> None:
        _check_colour(colour)
        endpoint = self._endpoint()
        traffic, mirror = _maps(endpoint) if endpoint is not None else ({}, {})
        if traffic.get(colour):
            raise LettucifyError(f"{colour} takes {traffic[colour]}% of endpoint {self.endpoint_name}'s live traffic: "
                                 "a version goes only to the colour without live traffic")
        model_dir = model.download(self.run_dir / f"model-{colour}")
        deployment = online.deployment(self.settings, colour, model.name, model.version, model_dir,
                                       self.run_dir / f"container-{colour}")
        if endpoint is None:
            log.info("creating endpoint %s", self.endpoint_name)
            self.azure.put_online_endpoint(online.endpoint(self.endpoint_name))
        existing = self.azure.online_deployment(self.endpoint_name, colour)
        if existing is not None and str(existing.instance_type).lower() != self.settings.instance_type.lower():
            online.check_removable(colour, traffic, mirror)
            log.info("deployment %s is on %s, not %s: Azure cannot change that in place, so it is deleted first",
                     colour, existing.instance_type, self.settings.instance_type)
            self.azure.delete_online_deployment(self.endpoint_name, colour)
        log.info("deploying %s to %s of endpoint %s (ship=%s, %d x %s)%s", model.uri, colour, self.endpoint_name,
                 self.settings.ship.value, self.settings.instance_count, self.settings.instance_type,
                 f": dry run, writing {deployment_yaml(colour)}" if self.dry_run else "")
        try:
            self.azure.put_online_deployment(deployment)
        except LettucifyError as err:
            if self._provisioning_state(colour) not in FAILED_STATES:
                raise
            log.warning("%s; wait_ready reports why", err)

    def _provisioning_state(self, colour: str) -> Optional[str]:
        deployment = self.azure.online_deployment(self.endpoint_name, colour)
        return None if deployment is None else deployment.provisioning_state

    def wait_ready(self, colour: str, timeout_s: float) -> None:
        if self.dry_run:
            log.info("dry run: %s was only rendered, nothing to wait for", colour)
            return
        deadline = time.monotonic() + timeout_s
        while True:
            deployment = self.azure.online_deployment(self.endpoint_name, colour)
            if deployment is None:
                raise DeployError("ready", f"endpoint {self.endpoint_name} has no deployment {colour}")
            state = deployment.provisioning_state
            if state == SUCCEEDED:
                log.info("deployment %s of endpoint %s is ready", colour, self.endpoint_name)
                return
            left = deadline - time.monotonic()
            if state in FAILED_STATES or left <= 0:
                still = "" if state in FAILED_STATES else f" still, after {timeout_s:g} s"
                raise DeployError("ready", f"deployment {colour} of endpoint {self.endpoint_name} is {state}{still}; "
                                           f"{self._last_log_line(colour)}")
            time.sleep(min(POLL_S, left))

    def _last_log_line(self, colour: str) -> str:
        try:
            text = self.azure.deployment_logs(self.endpoint_name, colour, LOG_LINES)
        except LettucifyError as err:
            return f"its log could not be read ({err})"
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        return f"its log ends: {lines[-1]}" if lines else "its log is empty"

    def direct(self, colour: str) -> Optional[Endpoint]:
        _check_colour(colour)
        if self.dry_run:
            return None
        if self.settings.ship is AzureShip.mlflow:
            # Azure's MLflow server speaks MLflow's JSON, not the Lettucify API the suite checks.
            log.info("endpoint %s: ship=mlflow answers in MLflow's format: the smoke test is for ship=container",
                     self.endpoint_name)
            return None
        endpoint = self._endpoint(f"reach {colour} on")
        key = self.azure.endpoint_key(self.endpoint_name)
        return Endpoint(scoring_url=endpoint.scoring_uri, base_url=None,
                        headers=KeyHeaders({"azureml-model-deployment": colour, "Authorization": f"Bearer {key}"}))

    def set_traffic(self, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        endpoint = self._endpoint("split traffic on")
        deployments = {d.name for d in self.azure.online_deployments(self.endpoint_name)}
        current = _maps(endpoint)
        mirrored = [name for name, share in current[1].items() if share and name in deployments]
        wanted = (_as_sent(traffic, deployments, deployments), _as_sent(mirror, deployments, mirrored))
        for step_traffic, step_mirror in online.traffic_updates(current, wanted, deployments):
            log.info("endpoint %s: live traffic %s; mirrored %s", self.endpoint_name,
                     online.shown(online.live(step_traffic)), online.shown(online.live(step_mirror)))
            self.azure.set_endpoint_traffic(self.endpoint_name, step_traffic, step_mirror)

    def remove(self, colour: str) -> None:
        _check_colour(colour)
        endpoint = self._endpoint()
        if endpoint is None or self.azure.online_deployment(self.endpoint_name, colour) is None:
            log.info("endpoint %s has no deployment %s: nothing to remove", self.endpoint_name, colour)
            return
        online.check_removable(colour, *_maps(endpoint))
        log.info("removing deployment %s of endpoint %s", colour, self.endpoint_name)
        self.azure.delete_online_deployment(self.endpoint_name, colour)

    def stop(self) -> None:
        endpoint = self._endpoint()
        if endpoint is None:
            log.info("there is no endpoint %s: nothing to stop", self.endpoint_name)
            return
        serving = online.live(_maps(endpoint)[0])
        if serving:
            raise LettucifyError(
                f"endpoint {self.endpoint_name} still serves live traffic ({online.shown(serving)}): deploy.action=stop "
                f"deletes only an endpoint that serves none; delete it with `az ml online-endpoint delete --name "
                f"{self.endpoint_name}` or in Azure ML studio"
            )
        log.info("deleting endpoint %s and its deployments", self.endpoint_name)
        self.azure.delete_online_endpoint(self.endpoint_name)


def _check_colour(colour: str) -> None:
    if colour not in COLOURS:
        raise LettucifyError(f"no colour {colour!r}: azure_online's deployments are {' and '.join(COLOURS)}")
