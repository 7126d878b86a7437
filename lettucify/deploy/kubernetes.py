"""``deploy=kubernetes``: blue and green as Deployments behind Azure's Application Gateway for
Containers (a Gateway and a weighted HTTPRoute), rendered as manifests and, with
``deploy.kubernetes.apply=true``, applied with the Kubernetes Python client.

Everything lives in ``deploy.kubernetes.manifests_dir`` from one command to the next::

    manifests/        00-namespace.yaml 10-gateway.yaml 20-<colour>.yaml 30-httproute.yaml:
                      the current manifests, what `kubectl apply -f manifests/` takes
    images/<colour>/  Dockerfile, project/ (Lettucify's source) and model/ (the version's
                      MLflow folder): the build context of the colour's image
    state.json        each colour's version, the traffic split and the mirror

and each command leaves a copy of the manifests, the Dockerfiles and state.json in its run
folder (``kubernetes/``). The model is baked into the image (``/model``), one image per
version (``manifests.image``): the cluster needs no access to the MLflow store. With
``apply=false`` the commands that build, push and apply are printed (stdout), and nothing
can be waited on or reached from here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml

from lettucify.config import REPO_ROOT, KubernetesTargetConf
from lettucify.deploy import manifests
from lettucify.deploy.kubernetes_api import Rollout
from lettucify.deploy.target import COLOURS, ColourState, DeployError, Endpoint, ModelRef, traffic_split
from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

# What of Lettucify's source tree `pip install` needs (README.md is setup.cfg's long description).
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "README.md")
# Seconds between two looks at a rollout.
POLL_S = 2.0


@dataclass
class _State:
    """state.json: what is on each colour, and the split."""

    versions: Dict[str, Dict[str, str]] = field(default_factory=dict)  # colour -> {model, version}
    traffic: Dict[str, int] = field(default_factory=dict)
    mirror: Dict[str, int] = field(default_factory=dict)

    def deployed(self) -> List[str]:
        return [c for c in COLOURS if c in self.versions]


def _write_text(path: Path, text: str) -> None:
    """Whole or not at all: a crash leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _yaml(objects: List[manifests.Manifest]) -> str:
    header = "# Rendered by `lettucify task=deploy deploy=kubernetes`; `kubectl apply -f` this folder.\n"
    return header + yaml.safe_dump_all(objects, sort_keys=False)


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


class KubernetesTarget:
    name = "kubernetes"

    def __init__(self, *, run_dir: Path, tracking_uri: Optional[str], **settings: Any) -> None:
        del tracking_uri  # each ModelRef names its own store
        self.conf = KubernetesTargetConf(**settings)
        self.folder = Path(self.conf.manifests_dir).expanduser().resolve()
        self.manifests = self.folder / "manifests"
        self.images = self.folder / "images"
        self.state_file = self.folder / "state.json"
        self.record = Path(run_dir) / "kubernetes"
        self._cluster: Optional[Any] = None

    # ------------------------------------------------------------------ files
    def _colour_file(self, colour: str) -> Path:
        return self.manifests / f"20-{colour}.yaml"

    def _load(self) -> _State:
        if not self.state_file.is_file():
            return _State()
        saved = json.loads(self.state_file.read_text())
        return _State(saved["versions"], saved["traffic"], saved["mirror"])

    def _save(self, state: _State, route: manifests.Manifest) -> None:
        """Write the shared manifests and state.json, then copy what is current into the run folder."""
        _write_text(self.manifests / "00-namespace.yaml", _yaml([manifests.namespace(self.conf)]))
        _write_text(self.manifests / "10-gateway.yaml", _yaml([manifests.gateway(self.conf)]))
        _write_text(self.manifests / "30-httproute.yaml", _yaml([route]))
        _write_text(self.state_file, json.dumps(
            {"versions": state.versions, "traffic": state.traffic, "mirror": state.mirror}, indent=2) + "\n")
        shutil.rmtree(self.record, ignore_errors=True)
        shutil.copytree(self.manifests, self.record / "manifests")
        shutil.copy2(self.state_file, self.record / "state.json")
        for dockerfile in self.images.glob("*/Dockerfile"):
            copy = self.record / "images" / dockerfile.parent.name / "Dockerfile"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dockerfile, copy)

    def _applied(self, colour: str) -> List[manifests.Manifest]:
        """The colour's objects as they were last rendered (and applied)."""
        path = self._colour_file(colour)
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc] if path.is_file() else []

    def _route(self, state: _State) -> manifests.Manifest:
        return manifests.http_route(self.conf, state.deployed(), state.traffic, state.mirror)

    def _build_context(self, colour: str, model: ModelRef) -> Path:
        """images/<colour>/: the Dockerfile, Lettucify's source and the version's MLflow folder."""
        if not all((REPO_ROOT / name).is_file() for name in PROJECT_FILES):
            raise LettucifyError(
                f"deploy=kubernetes builds the serving image from Lettucify's source tree, and {REPO_ROOT} is "
                f"not one (no {', '.join(PROJECT_FILES)}): run from a checkout of the repository"
            )
        context = self.images / colour
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        project = context / "project"
        shutil.copytree(
            REPO_ROOT / "lettucify", project / "lettucify", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        for name in PROJECT_FILES:
            shutil.copy2(REPO_ROOT / name, project / name)
        downloads = context / "download"
        shutil.move(str(model.download(downloads)), str(context / "model"))
        shutil.rmtree(downloads, ignore_errors=True)
        _write_text(context / "Dockerfile", manifests.dockerfile(self.conf, model))
        return context

    # ------------------------------------------------------------------ cluster
    def _api(self) -> Any:
        """The cluster (kubernetes_api.Cluster), connected on first use: only apply=true needs one."""
        if self._cluster is None:
            from lettucify.deploy import kubernetes_api

            self._cluster = kubernetes_api.Cluster()
        return self._cluster

    def _print_apply(self) -> None:
        print(f"kubectl apply -f {self.manifests}", flush=True)

    def _print_delete(self, objects: List[manifests.Manifest], selector: str) -> None:
        kinds = ",".join(dict.fromkeys(doc["kind"].lower() for doc in objects))
        print(f"kubectl delete {kinds} -n {self.conf.namespace} -l {selector}", flush=True)

    def _health(self, colour: str) -> str:
        if not self.conf.apply:
            return "unknown"
        rollout = self._api().rollout(self.conf.namespace, manifests.name(colour))
        if rollout is None:
            return "down"
        return "ready" if rollout.available > 0 else "not ready"

    def _rolled_out(self, rollout: Rollout) -> bool:
        """As `kubectl rollout status` has it, with at least min_pods available."""
        return (
            rollout.observed_generation >= rollout.generation
            and rollout.updated == rollout.replicas
            and rollout.available >= max(rollout.replicas, self.conf.min_pods)
        )

    # ------------------------------------------------------------------ Target
    def state(self) -> Dict[str, ColourState]:
        saved = self._load()
        return {
            colour: ColourState(
                colour=colour,
                model=saved.versions.get(colour, {}).get("model"),
                version=saved.versions.get(colour, {}).get("version"),
                traffic=saved.traffic.get(colour, 0),
                mirror=saved.mirror.get(colour, 0),
                health=self._health(colour),
            )
            for colour in COLOURS
        }

    @staticmethod
    def _check_colour(colour: str) -> None:
        if colour not in COLOURS:
            raise LettucifyError(f"kubernetes: no colour {colour!r}; the colours are {', '.join(COLOURS)}")

    def _check_alb(self) -> None:
        # Here, not in __init__: hydra.utils.instantiate would wrap the error in its own.
        if self.conf.alb_id and not self.conf.alb_frontend:
            raise LettucifyError(
                "deploy.kubernetes.alb_id is set: name its frontend too (deploy.kubernetes.alb_frontend)"
            )
        if not self.conf.alb_id and not (self.conf.alb_namespace and self.conf.alb_name):
            raise LettucifyError(
                "deploy.kubernetes: name the ALB, alb_namespace and alb_name (managed by the ALB controller) "
                "or alb_id and alb_frontend (an existing one)"
            )

    def put(self, colour: str, model: ModelRef) -> None:
        self._check_colour(colour)
        self._check_alb()
        state = self._load()
        if state.traffic.get(colour, 0):
            raise LettucifyError(
                f"kubernetes: {colour} has {state.traffic[colour]}% of live traffic; "
                "a version goes on the idle colour only"
            )
        context = self._build_context(colour, model)
        objects = manifests.colour_objects(self.conf, colour, model)
        state.versions[colour] = {"model": model.name, "version": str(model.version)}
        route = self._route(state)
        if self.conf.apply:
            for doc in [manifests.namespace(self.conf), manifests.gateway(self.conf), *objects, route]:
                self._api().apply(doc)
        _write_text(self._colour_file(colour), _yaml(objects))
        self._save(state, route)
        log.info("kubernetes: %s on %s, rendered in %s%s", model.uri, colour, self.manifests,
                 ", applied" if self.conf.apply else "")
        # Applied or not, the pods start only once the version's image is where the cluster pulls from.
        image = manifests.image(self.conf, model)
        print(f"docker build -t {image} {context}", flush=True)
        print(f"docker push {image}", flush=True)
        if not self.conf.apply:
            self._print_apply()

    def wait_ready(self, colour: str, timeout_s: float) -> None:
        self._check_colour(colour)
        if not self.conf.apply:
            log.info("kubernetes: %s is rendered, not applied (deploy.kubernetes.apply=false): nothing to wait for; "
                     "`kubectl apply -f %s` applies it", colour, self.manifests)
            return
        if colour not in self._load().versions:
            raise DeployError("ready", f"nothing is deployed on {colour}")
        name = manifests.name(colour)
        deadline = time.monotonic() + timeout_s
        while True:
            rollout = self._api().rollout(self.conf.namespace, name)
            if rollout is not None and self._rolled_out(rollout):
                log.info("kubernetes: %s ready, %d pods available", colour, rollout.available)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(POLL_S, left))
        available = rollout.available if rollout else 0
        wanted = max(rollout.replicas if rollout else 0, self.conf.min_pods)
        problems = self._api().pod_problems(self.conf.namespace, _selector(manifests.colour_labels(colour)))
        reason = f"{colour}: {available} of {wanted} pods available after {timeout_s:g} s"
        raise DeployError("ready", reason + "".join(f"; {problem}" for problem in problems[:3]))

    def direct(self, colour: str) -> Optional[Endpoint]:
        self._check_colour(colour)
        if not (self.conf.apply and self.conf.hostname) or colour not in self._load().versions:
            return None
        base = f"http://{self.conf.hostname}"
        return Endpoint(scoring_url=f"{base}/score", base_url=base, headers={manifests.COLOUR_HEADER: colour})

    def set_traffic(self, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        state = self._load()
        split, copied = traffic_split(traffic, mirror)
        missing = [colour for colour in COLOURS if (split[colour] or copied[colour]) and colour not in state.versions]
        if missing:
            raise DeployError("traffic", f"nothing is deployed on {missing[0]}")
        state.traffic, state.mirror = split, copied
        route = self._route(state)
        if self.conf.apply:
            try:
                self._api().apply(route)
            except LettucifyError as err:
                raise DeployError("traffic", str(err)) from None
        self._save(state, route)
        log.info("kubernetes: traffic %s%s", ", ".join(f"{c} {p}%" for c, p in split.items()),
                 "".join(f"; {c} mirrors {p}%" for c, p in copied.items() if p))
        if not self.conf.apply:
            self._print_apply()

    def remove(self, colour: str) -> None:
        self._check_colour(colour)
        state = self._load()
        if state.traffic.get(colour, 0):
            raise LettucifyError(f"kubernetes: {colour} has {state.traffic[colour]}% of live traffic; move it first")
        if colour not in state.versions:
            log.info("kubernetes: nothing on %s to remove", colour)
            return
        objects = self._applied(colour)
        del state.versions[colour]
        if state.mirror.get(colour, 0):
            log.info("kubernetes: %s was mirrored; the mirror stops with it", colour)
        state.mirror[colour] = 0
        route = self._route(state)
        if self.conf.apply:
            self._api().apply(route)  # first, so that nothing routes to what goes next
            for doc in reversed(objects):
                self._api().delete(doc)
        self._colour_file(colour).unlink(missing_ok=True)
        shutil.rmtree(self.images / colour, ignore_errors=True)
        self._save(state, route)
        log.info("kubernetes: %s removed", colour)
        if not self.conf.apply:
            self._print_apply()
            self._print_delete(objects, _selector(manifests.colour_labels(colour)))

    def stop(self) -> None:
        state = self._load()
        shared = [self._route(state), manifests.gateway(self.conf)]
        objects = [*shared, *(doc for colour in COLOURS for doc in reversed(self._applied(colour)))]
        if self.conf.apply:
            for doc in objects:
                self._api().delete(doc)
        else:
            self._print_delete(objects, _selector({manifests.LABEL_NAME: manifests.APP}))
        for path in (self.manifests, self.images):
            shutil.rmtree(path, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        log.info("kubernetes: the deployment is down%s; namespace %s is kept",
                 "" if self.conf.apply else " once the printed command has run", self.conf.namespace)
