"""The Kubernetes objects of ``deploy=kubernetes``, as dicts: config and model in, manifests out.

Per colour: a Deployment of the Lettucify server (non-root, read-only root filesystem, its
model baked into the image), its Service, a HorizontalPodAutoscaler on CPU, a
PodDisruptionBudget and the HealthCheckPolicy Azure's Application Gateway for Containers
probes it by. Shared: the Namespace, the Gateway (the ALB's listener) and the HTTPRoute
that splits live traffic between the colours' Services by weight, mirrors a share of it
to one colour, and sends a request carrying ``x-lettucify-colour: <colour>`` to that colour
only. And the Dockerfile that builds a colour's image. Nothing here reads or writes files
(lettucify/deploy/kubernetes.py does).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Sequence

from lettucify.config import KubernetesTargetConf, ServeConf
from lettucify.deploy.target import ModelRef

Manifest = Dict[str, Any]

APP = "lettucify"
PORT = 8080
# The header that picks a colour at the gateway, bypassing the weights (smoke tests).
COLOUR_HEADER = "x-lettucify-colour"
# Where the image holds the model (the version's MLflow folder), and the server run on it.
MODEL_DIR = "/model"
SERVER_COMMAND = (
    "python", "-m", "lettucify", "task=serve", f"model_uri={MODEL_DIR}",
    "serve.host=0.0.0.0", f"serve.port={PORT}", "hydra.run.dir=/tmp/run",
)


def server_command(model: ModelRef) -> List[str]:
    """The server on the baked-in folder, answering with the version's registered name."""
    return [*SERVER_COMMAND, f"serve.model_name={model.name}", f"serve.model_version={model.version}"]


# The image's user; the pod asks for it by number (runAsUser) so runAsNonRoot can check it.
UID = 10001
# The key of the api_key_secret Secret that holds the API key.
API_KEY_SECRET_KEY = "api-key"
# The pod's one writable folder (the server's run folder, the ONNX export, caches).
SCRATCH = "/tmp"
# Seconds between the pod leaving the Service's endpoints and SIGTERM, so that the ALB
# stops sending it requests first; then the server finishes those in flight.
PRE_STOP_S = 5
GRACE_S = PRE_STOP_S + int(ServeConf.graceful_shutdown_s) + 10
# Until the model is loaded, exported and warmed up: 60 x 5 s.
STARTUP_PERIOD_S, STARTUP_FAILURES = 5, 60

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COLOUR = "lettucify.io/colour"
LABEL_VERSION = "lettucify.io/model-version"
ANNOTATION_MODEL = "lettucify.io/model-uri"


def name(colour: str) -> str:
    """The colour's Deployment, Service, autoscaler, budget and health check policy."""
    return f"{APP}-{colour}"


def image(conf: KubernetesTargetConf, model: ModelRef) -> str:
    """``conf.image``'s repository tagged ``<model>-<version>``: the image of that version."""
    repository = re.sub(r":[^:/]*$", "", conf.image.split("@", 1)[0])
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{model.name}-{model.version}")[:128]
    return f"{repository}:{tag}"


def _metadata(conf: KubernetesTargetConf, name: str, labels: Mapping[str, str], **extra: Any) -> Dict[str, Any]:
    return {"name": name, "namespace": conf.namespace, "labels": dict(labels), **extra}


def colour_labels(colour: str) -> Dict[str, str]:
    """What selects the colour's pods (whatever their version)."""
    return {LABEL_NAME: APP, LABEL_COLOUR: colour}


def _probe(path: str, period_s: int, failures: int) -> Dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s,
            "timeoutSeconds": 3, "failureThreshold": failures}


def _env(conf: KubernetesTargetConf, colour: str) -> List[Dict[str, Any]]:
    env: List[Dict[str, Any]] = [
        # Reported in every answer and metric (serve.deployment).
        {"name": "LETTUCIFY_DEPLOYMENT", "value": colour},
        # The root filesystem is read-only: whatever writes under $HOME writes to the scratch folder.
        {"name": "HOME", "value": SCRATCH},
    ]
    if conf.api_key_secret:
        env.append({"name": ServeConf.api_key_env, "valueFrom": {
            "secretKeyRef": {"name": conf.api_key_secret, "key": API_KEY_SECRET_KEY}}})
    return env


def deployment(conf: KubernetesTargetConf, colour: str, model: ModelRef) -> Manifest:
    labels = {**colour_labels(colour), LABEL_VERSION: str(model.version)}
    container = {
        "name": "server",
        "image": image(conf, model),
        "imagePullPolicy": "IfNotPresent",
        "command": server_command(model),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": _env(conf, colour),
        "resources": {
            "requests": {"cpu": conf.cpu_request, "memory": conf.memory_request},
            "limits": {"cpu": conf.cpu_limit, "memory": conf.memory_limit},
        },
        "startupProbe": _probe("/ready", STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": _probe("/ready", 5, 2),
        "livenessProbe": _probe("/health", 10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(conf, name(colour), labels, annotations={ANNOTATION_MODEL: model.uri}),
        "spec": {
            # No replicas: the autoscaler owns the count, and applying again must not reset it.
            "selector": {"matchLabels": colour_labels(colour)},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_MODEL: model.uri}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": GRACE_S,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
                },
            },
        },
    }


def service(conf: KubernetesTargetConf, colour: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(conf, name(colour), colour_labels(colour)),
        "spec": {
            "type": "ClusterIP",
            "selector": colour_labels(colour),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(conf: KubernetesTargetConf, colour: str) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(conf, name(colour), colour_labels(colour)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(colour)},
            "minReplicas": conf.min_pods,
            "maxReplicas": conf.max_pods,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": conf.cpu_target_percent}}}],
        },
    }


def disruption_budget(conf: KubernetesTargetConf, colour: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(conf, name(colour), colour_labels(colour)),
        # One pod at a time may be evicted (a node drain): with min_pods=1 that is the only
        # one, but a budget of none would block the drain for good.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": colour_labels(colour)}},
    }


def health_check_policy(conf: KubernetesTargetConf, colour: str) -> Manifest:
    """How the ALB probes the colour's pods (else it would use the readiness probe's path
    only when there is one, and / otherwise)."""
    return {
        "apiVersion": "alb.networking.azure.io/v1",
        "kind": "HealthCheckPolicy",
        "metadata": _metadata(conf, name(colour), colour_labels(colour)),
        "spec": {
            "targetRef": {"group": "", "kind": "Service", "name": name(colour), "namespace": conf.namespace},
            "default": {
                "interval": "5s",
                "timeout": "3s",
                "healthyThreshold": 1,
                "unhealthyThreshold": 3,
                "port": PORT,
                "http": {"path": "/ready", "match": {"statusCodes": [{"start": 200, "end": 299}]}},
                "useTLS": False,
            },
        },
    }


def colour_objects(conf: KubernetesTargetConf, colour: str, model: ModelRef) -> List[Manifest]:
    """What ``model`` on ``colour`` is, in the order to apply it."""
    return [
        deployment(conf, colour, model),
        service(conf, colour),
        autoscaler(conf, colour),
        disruption_budget(conf, colour),
        health_check_policy(conf, colour),
    ]


def namespace(conf: KubernetesTargetConf) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        # The pods meet the restricted Pod Security Standard; the namespace holds them to it.
        "metadata": {
            "name": conf.namespace,
            "labels": {LABEL_NAME: APP, "pod-security.kubernetes.io/enforce": "restricted"},
        },
    }


def gateway(conf: KubernetesTargetConf) -> Manifest:
    """The ALB's listener: the ALB the controller manages (alb_namespace/alb_name), or an
    existing one (alb_id) and its frontend."""
    spec: Dict[str, Any] = {
        "gatewayClassName": conf.gateway_class,
        "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}
        ],
    }
    if conf.alb_id:
        annotations = {"alb.networking.azure.io/alb-id": conf.alb_id}
        spec["addresses"] = [{"type": "alb.networking.azure.io/alb-frontend", "value": conf.alb_frontend}]
    else:
        annotations = {
            "alb.networking.azure.io/alb-namespace": conf.alb_namespace,
            "alb.networking.azure.io/alb-name": conf.alb_name,
        }
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": _metadata(conf, APP, {LABEL_NAME: APP}, annotations=annotations),
        "spec": spec,
    }


def _backend(colour: str, **extra: Any) -> Dict[str, Any]:
    return {"name": name(colour), "port": PORT, **extra}


def http_route(
    conf: KubernetesTargetConf, deployed: Sequence[str], traffic: Mapping[str, int], mirror: Mapping[str, int]
) -> Manifest:
    """The deployed colours' Services behind the Gateway: the default rule splits by
    ``traffic`` (percent, as weights) and copies ``mirror``'s percent to the mirrored colour;
    one rule per deployed colour takes the requests whose colour header names it."""
    direct = [
        {"name": colour, "matches": [{"headers": [{"type": "Exact", "name": COLOUR_HEADER, "value": colour}]}],
         "backendRefs": [_backend(colour)]}
        for colour in deployed
    ]
    live: Dict[str, Any] = {
        "name": "live", "backendRefs": [_backend(c, weight=int(traffic.get(c, 0))) for c in deployed]
    }
    mirrored = [(c, int(p)) for c, p in mirror.items() if p]
    if mirrored:
        [(colour, percent)] = mirrored
        live["filters"] = [
            {"type": "RequestMirror", "requestMirror": {"backendRef": _backend(colour), "percent": percent}}
        ]
    spec: Dict[str, Any] = {"parentRefs": [{"name": APP}], "rules": [*direct, live]}
    if conf.hostname:
        spec["hostnames"] = [conf.hostname]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _metadata(conf, APP, {LABEL_NAME: APP}),
        "spec": spec,
    }


def dockerfile(conf: KubernetesTargetConf, model: ModelRef) -> str:
    """The image of ``model``: Lettucify installed from ``project/``, the version's MLflow
    folder ``model/`` under /model; both beside this file in its build context."""
    return f"""\
# The Lettucify server with {model.uri} baked in under {MODEL_DIR}. From this folder:
#   docker build -t {image(conf, model)} .
# For a CPU-only PyTorch, a far smaller image: --build-arg PIP_EXTRA_INDEX_URL=<PyTorch's CPU wheel index>
FROM python:3.11-slim
ARG PIP_EXTRA_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The pod runs as this user by number (runAsUser); it has no shell, and its home is the scratch folder.
RUN useradd --system --uid {UID} --user-group --no-create-home --home-dir {SCRATCH} --shell /usr/sbin/nologin {APP}
COPY project/ /opt/lettucify/
RUN pip install /opt/lettucify && rm -rf /opt/lettucify
# Owned by root, readable by all: the server cannot change its model.
COPY model/ {MODEL_DIR}/
ENV HOME={SCRATCH}
WORKDIR {SCRATCH}
USER {UID}:{UID}
EXPOSE {PORT}
CMD {json.dumps(server_command(model))}
"""
