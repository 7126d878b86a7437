"""azure-ai-ml entities for ``deploy=azure_online``, built offline, and the traffic rules
Azure holds an online endpoint's maps to.

One ManagedOnlineEndpoint (key auth) holds a deployment per colour, named by the colour
and tagged with the registered model's name and version, so that the endpoint itself
says which version is where. A deployment ships the version one of two ways:

* ``mlflow``: the version's MLflow folder as an ``mlflow_model``, Azure ML's no-code
  deployment: Azure's inference server and an environment built from the version's
  pinned requirements; no environment or scoring script of ours.
* ``container``: the Lettucify server image as a custom container, the version's folder
  mounted as a custom model. A managed deployment has no command of its own (a container
  runs its image's), so the environment is a two-line build on the image whose command
  starts ``task=serve`` on that folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from lettucify.azure.entities import spec_yaml
from lettucify.config import AzureShip
from lettucify.deploy.target import MAX_MIRROR
from lettucify.errors import LettucifyError

# Deployment tags that state() reads back.
TAG_MODEL = "lettucify.model"
TAG_VERSION = "lettucify.version"
TAG_COLOUR = "lettucify.colour"
ENDPOINT_TAGS = {"lettucify.target": "azure_online"}

# ship=container: the server's port and the routes Azure probes and forwards /score to.
PORT = 8080
ROUTES = {
    "liveness_route": {"port": PORT, "path": "/health"},
    "readiness_route": {"port": PORT, "path": "/ready"},
    "scoring_route": {"port": PORT, "path": "/score"},
}
# Azure's defaults, written out: a probe every 10 s, and 30 failures (5 minutes, time to
# load and warm the model) before an instance is restarted (liveness) or left out (readiness).
LIVENESS_PROBE = {"initial_delay": 10, "period": 10, "timeout": 2, "success_threshold": 1, "failure_threshold": 30}
READINESS_PROBE = {"initial_delay": 10, "period": 10, "timeout": 10, "success_threshold": 1, "failure_threshold": 30}

Shares = Mapping[str, int]


@dataclass(frozen=True)
class DeploymentSettings:
    """What every deployment of the endpoint shares (deploy.azure_online's settings)."""

    endpoint_name: str
    instance_type: str
    instance_count: int
    ship: AzureShip
    image: Optional[str]
    max_concurrent_requests_per_instance: int
    request_timeout_ms: int


def endpoint(name: str) -> Any:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=name, auth_mode="key", tags=dict(ENDPOINT_TAGS),
                                 description="Lettucify's blue/green deployments (task=deploy)")


def server_dockerfile(image: str, model_folder: str) -> str:
    """The container's command: the server on the mounted version ($AZUREML_MODEL_DIR holds
    the uploaded folder under its own name), whatever entrypoint the image has."""
    command = (f'exec python -m lettucify task=serve "model_uri=$AZUREML_MODEL_DIR/{model_folder}" '
               f"serve.host=0.0.0.0 serve.port={PORT}")
    return (f"# Written by Lettucify's azure_online target: {image}, started as the deployment's server.\n"
            f"FROM {image}\n"
            'ENTRYPOINT ["/bin/sh", "-c"]\n'
            f"CMD {json.dumps([command])}\n")


def server_environment(image: str, model_folder: str, context: Path) -> Any:
    """ship=container's environment; writes its build context (a Dockerfile) into ``context``."""
    from azure.ai.ml.entities import BuildContext, Environment

    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(server_dockerfile(image, model_folder))
    return Environment(build=BuildContext(path=str(context)), inference_config=ROUTES,
                       description=f"the Lettucify server ({image})")


def deployment(settings: DeploymentSettings, colour: str, model_name: str, model_version: str,
               model_dir: Path, context: Path) -> Any:
    """The colour's deployment of ``model_dir`` (the version's MLflow folder); ship=container
    writes its environment's build context into ``context``."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import ManagedOnlineDeployment, Model, OnlineRequestSettings, ProbeSettings

    ship = settings.ship
    model = Model(path=str(model_dir), name=model_name, version=str(model_version),
                  type=AssetTypes.MLFLOW_MODEL if ship is AzureShip.mlflow else AssetTypes.CUSTOM_MODEL,
                  description=f"models:/{model_name}/{model_version}, registered by Lettucify")
    container: Dict[str, Any] = {}
    if ship is AzureShip.container:
        if not settings.image:
            raise LettucifyError("deploy.azure_online.ship=container needs deploy.azure_online.image: "
                                 "the Lettucify server image, in a registry the workspace can pull from")
        container = {"environment": server_environment(settings.image, model_dir.name, context),
                     "environment_variables": {"LETTUCIFY_DEPLOYMENT": colour, "LETTUCIFY_MODEL_NAME": model_name,
                                               "LETTUCIFY_MODEL_VERSION": str(model_version)}}
    return ManagedOnlineDeployment(
        name=colour,
        endpoint_name=settings.endpoint_name,
        model=model,
        instance_type=settings.instance_type,
        instance_count=settings.instance_count,
        liveness_probe=ProbeSettings(**LIVENESS_PROBE),
        readiness_probe=ProbeSettings(**READINESS_PROBE),
        request_settings=OnlineRequestSettings(
            max_concurrent_requests_per_instance=settings.max_concurrent_requests_per_instance,
            request_timeout_ms=settings.request_timeout_ms,
        ),
        tags={TAG_MODEL: model_name, TAG_VERSION: str(model_version), TAG_COLOUR: colour, "lettucify.ship": ship.value},
        **container,
    )


def write_yaml(entity: Any, path: Path) -> Path:
    """The endpoint or deployment as YAML that load_online_endpoint / load_online_deployment read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_yaml(entity._to_dict()))
    return path


# --------------------------------------------------------------------------- traffic rules
def shown(shares: Shares) -> str:
    return ", ".join(f"{name} {share}%" for name, share in sorted(shares.items())) or "none"


def check_traffic(traffic: Shares, mirror: Shares, deployments: Collection[str]) -> None:
    """Azure's rules for an endpoint's live and mirror maps, checked before they are sent:
    whole percents of existing deployments, live traffic summing to 0 or 100, mirroring to
    one deployment at most, at most 50%, and never to one with live traffic."""
    for kind, shares in (("traffic", traffic), ("mirror traffic", mirror)):
        unknown = sorted(set(shares) - set(deployments))
        if unknown:
            raise LettucifyError(f"{kind} names {', '.join(unknown)}, which the endpoint has no deployment of "
                                 f"(it has {', '.join(sorted(deployments)) or 'none'})")
        for name, share in sorted(shares.items()):  # sorted: the same map always gets the same message
            if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
                raise LettucifyError(f"{kind} of {name} is {share!r}: Azure takes whole percents from 0 to 100")
    total = sum(traffic.values())
    if total not in (0, 100):
        raise LettucifyError(f"traffic sums to {total}% ({shown(traffic)}): Azure takes 0 or 100")
    mirrored = {name: share for name, share in mirror.items() if share}
    if len(mirrored) > 1:
        raise LettucifyError(f"mirror traffic goes to {shown(mirrored)}: Azure mirrors to one deployment at most")
    for name, share in mirrored.items():
        if share > MAX_MIRROR:
            raise LettucifyError(f"mirror traffic of {name} is {share}%: Azure mirrors at most {MAX_MIRROR}%")
        if traffic.get(name):
            raise LettucifyError(f"mirror traffic goes to {name}, which has {traffic[name]}% live traffic: "
                                 "Azure mirrors only to a deployment without live traffic")


def check_removable(name: str, traffic: Shares, mirror: Shares) -> None:
    """Azure deletes no deployment that takes live or mirrored traffic."""
    if traffic.get(name) or mirror.get(name):
        raise LettucifyError(f"deployment {name} still takes {traffic.get(name, 0)}% live and {mirror.get(name, 0)}% "
                             "mirrored traffic: move its traffic to the other colour before removing it")


def obeys(traffic: Shares, mirror: Shares, deployments: Collection[str]) -> bool:
    try:
        check_traffic(traffic, mirror, deployments)
    except LettucifyError:
        return False
    return True


def live(shares: Shares) -> Dict[str, int]:
    """The shares that are not 0: a deployment left out of a map has 0%."""
    return {name: share for name, share in shares.items() if share}


def traffic_updates(current: Tuple[Shares, Shares], wanted: Tuple[Shares, Shares],
                    deployments: Collection[str]) -> List[Tuple[Dict[str, int], Dict[str, int]]]:
    """The endpoint updates, in order, that take its (live, mirror) maps from ``current`` to
    ``wanted``, each obeying the rules; none when nothing changes. When both maps change, the
    mirror changes in an update of its own first (as Azure's safe rollout does: a deployment
    leaves mirroring before it takes live traffic), or the live map first when only that
    order keeps to the rules."""
    check_traffic(*wanted, deployments)
    (traffic, mirror), (new_traffic, new_mirror) = current, wanted
    steps: List[Tuple[Shares, Shares]] = []
    if live(traffic) != live(new_traffic) and live(mirror) != live(new_mirror):
        steps += [step for step in ((traffic, new_mirror), (new_traffic, mirror)) if obeys(*step, deployments)][:1]
    steps.append(wanted)
    if live(new_traffic) == live(traffic) and live(new_mirror) == live(mirror):
        return []
    return [(dict(t), dict(m)) for t, m in steps]
