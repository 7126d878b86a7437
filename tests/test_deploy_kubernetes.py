"""deploy=kubernetes, offline: the manifests the target writes validate (kubernetes-validate,
the Gateway API CRDs), the HTTPRoute follows the canary, the pods run non-root and
read-only, no secret is written, the Dockerfile's build context is complete; with
apply=true, a fake cluster stands in for the Kubernetes API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lettucify.config import REPO_ROOT, KubernetesTargetConf
from lettucify.deploy import kubernetes_api, manifests
from lettucify.deploy.kubernetes_api import Rollout
from lettucify.deploy.target import DeployError, ModelRef
from lettucify.errors import LettucifyError

GATEWAY_API = REPO_ROOT.parent / "shared" / "schemas" / "gateway-api"
CORE_KINDS = {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
# The oldest Kubernetes minor AKS supported when this was written, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


class FakeModel(ModelRef):
    """A registered version without a store: its "MLflow folder" is two small files."""

    def download(self, folder: Path) -> Path:
        model = folder / f"{self.name}-{self.version}"
        (model / "data").mkdir(parents=True)
        (model / "MLmodel").write_text(f"name: {self.name}\n")
        (model / "data" / "model.onnx").write_bytes(b"onnx")
        return model


BLUE_MODEL = FakeModel("lettucify-food16", "3", None)
GREEN_MODEL = FakeModel("lettucify-food16", "4", None)


def make_target(tmp_path: Path, **settings: Any):
    """As the flow builds it: instantiate(cfg.deploy.kubernetes, run_dir=..., tracking_uri=...)."""
    conf = OmegaConf.structured(KubernetesTargetConf(manifests_dir=str(tmp_path / "k8s"), **settings))
    return instantiate(conf, run_dir=tmp_path / "run", tracking_uri=None)


def documents(folder: Path) -> List[Dict[str, Any]]:
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(docs: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(target, kind: str, name: str) -> Dict[str, Any]:
    [found] = [doc for doc in of_kind(documents(target.manifests), kind) if doc["metadata"]["name"] == name]
    return found


def route(target) -> Dict[str, Any]:
    [found] = of_kind(documents(target.manifests), "HTTPRoute")
    return found


def live_rule(target) -> Dict[str, Any]:
    [rule] = [r for r in route(target)["spec"]["rules"] if r["name"] == "live"]
    return rule


def weights(target) -> Dict[str, int]:
    return {ref["name"]: ref["weight"] for ref in live_rule(target)["backendRefs"]}


@pytest.fixture
def deployed(tmp_path: Path):
    """blue live with version 3, green put with version 4 and idle."""
    target = make_target(tmp_path, api_key_secret="lettucify-api-key")
    target.put("blue", BLUE_MODEL)
    target.set_traffic({"blue": 100, "green": 0}, {})
    target.put("green", GREEN_MODEL)
    return target


# --------------------------------------------------------------------------- validity
def test_core_manifests_validate_strictly_with_kubernetes_validate(deployed):
    docs = [doc for doc in documents(deployed.manifests) if doc["kind"] in CORE_KINDS]
    assert {doc["kind"] for doc in docs} == CORE_KINDS
    assert len(of_kind(docs, "Deployment")) == 2
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field(deployed):
    """The check above can fail: a field Kubernetes does not know is refused."""
    service = named(deployed, "Service", "lettucify-blue")
    service["spec"]["port"] = 8080
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[-1], strict=True)


def _closed(schema: Any) -> Any:
    """The CRD's schema, refusing unknown fields as `kubectl apply` (strict field validation)
    does; branches of oneOf/anyOf only constrain, so they stay open."""
    if isinstance(schema, dict):
        schema = {key: value if key in ("oneOf", "anyOf", "allOf", "not") else _closed(value)
                  for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def gateway_api_validators() -> Dict[str, jsonschema.protocols.Validator]:
    """Kind -> a validator of the served, stored version's openAPIV3Schema."""
    if not GATEWAY_API.is_dir():
        pytest.skip(f"no Gateway API CRDs in {GATEWAY_API} (shared/schemas/gateway-api)")
    validators = {}
    for name in ("gateways.yaml", "httproutes.yaml"):
        crd = yaml.load((GATEWAY_API / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        [version] = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        assert version["name"] == "v1"
        schema = _closed(version["schema"]["openAPIV3Schema"])
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    return validators


def _valid(validators, doc: Dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[doc["kind"]].iter_errors(doc)]
    assert not errors, errors


def test_gateway_and_route_validate_against_the_gateway_api_crds(deployed, gateway_api_validators, tmp_path):
    _valid(gateway_api_validators, of_kind(documents(deployed.manifests), "Gateway")[0])
    _valid(gateway_api_validators, route(deployed))
    deployed.set_traffic({"blue": 100}, {"green": 25})  # with the mirror filter
    _valid(gateway_api_validators, route(deployed))
    existing_alb = make_target(tmp_path / "byo", alb_id="/subscriptions/s/resourceGroups/g/providers/"
                               "Microsoft.ServiceNetworking/trafficControllers/alb", alb_frontend="frontend",
                               hostname="food.example.com")
    existing_alb.put("blue", BLUE_MODEL)
    for doc in of_kind(documents(existing_alb.manifests), "Gateway") + [route(existing_alb)]:
        _valid(gateway_api_validators, doc)
    bad = route(deployed)
    bad["spec"]["rules"][-1]["filters"][0]["requestMirror"]["percentage"] = 5  # can fail
    assert list(gateway_api_validators["HTTPRoute"].iter_errors(bad))


def test_gateway_names_the_alb_the_controller_manages_or_an_existing_one(deployed, tmp_path):
    [managed] = of_kind(documents(deployed.manifests), "Gateway")
    assert managed["spec"]["gatewayClassName"] == "azure-alb-external"
    assert managed["metadata"]["annotations"] == {
        "alb.networking.azure.io/alb-namespace": "alb-infra", "alb.networking.azure.io/alb-name": "lettucify-alb"}
    assert "addresses" not in managed["spec"]
    existing = make_target(tmp_path / "byo", alb_id="/subscriptions/s/x/alb", alb_frontend="front-1")
    existing.put("green", GREEN_MODEL)
    [gateway] = of_kind(documents(existing.manifests), "Gateway")
    assert gateway["metadata"]["annotations"] == {"alb.networking.azure.io/alb-id": "/subscriptions/s/x/alb"}
    assert gateway["spec"]["addresses"] == [{"type": "alb.networking.azure.io/alb-frontend", "value": "front-1"}]
    with pytest.raises(LettucifyError, match="alb_frontend"):
        make_target(tmp_path / "no-frontend", alb_id="/subscriptions/s/x/alb").put("blue", BLUE_MODEL)
    with pytest.raises(LettucifyError, match="alb_namespace and alb_name"):
        make_target(tmp_path / "no-alb", alb_name=None).put("blue", BLUE_MODEL)


def test_each_colour_has_a_health_check_policy_on_ready_for_its_service(deployed):
    docs = documents(deployed.manifests)
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    policies = of_kind(docs, "HealthCheckPolicy")
    assert sorted(p["metadata"]["name"] for p in policies) == ["lettucify-blue", "lettucify-green"]
    for policy in policies:
        assert policy["apiVersion"] == "alb.networking.azure.io/v1"
        target_ref, probe = policy["spec"]["targetRef"], policy["spec"]["default"]
        assert target_ref == {"group": "", "kind": "Service", "name": policy["metadata"]["name"], "namespace": "lettucify"}
        assert probe["port"] == services[target_ref["name"]]["spec"]["ports"][0]["port"]
        assert probe["http"]["path"] == "/ready"
        assert probe["http"]["match"]["statusCodes"] == [{"start": 200, "end": 299}]
        assert all(re.fullmatch(r"\d+s", probe[key]) for key in ("interval", "timeout"))
        assert probe["healthyThreshold"] >= 1 and probe["unhealthyThreshold"] >= 1


# --------------------------------------------------------------------------- the canary
def test_a_canary_through_the_target_moves_the_route_weights_step_by_step(deployed, capsys):
    assert weights(deployed) == {"lettucify-blue": 100, "lettucify-green": 0}
    deployed.set_traffic({"blue": 100, "green": 0}, {"green": 20})
    [mirror] = live_rule(deployed)["filters"]
    assert mirror == {"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "lettucify-green", "port": 8080}, "percent": 20}}
    assert deployed.state()["green"].mirror == 20
    for blue, green in [(90, 10), (50, 50), (0, 100)]:
        deployed.set_traffic({"blue": blue, "green": green}, {})
        assert weights(deployed) == {"lettucify-blue": blue, "lettucify-green": green}
        assert "filters" not in live_rule(deployed)
        state = deployed.state()
        assert (state["blue"].traffic, state["green"].traffic, state["green"].mirror) == (blue, green, 0)
        recorded = json.loads((deployed.record / "state.json").read_text())
        assert recorded["traffic"] == {"blue": blue, "green": green}
    # Each colour stays reachable on its own through the gateway, whatever the weights.
    direct = {r["name"]: r for r in route(deployed)["spec"]["rules"] if r["name"] != "live"}
    for colour in ("blue", "green"):
        header = {"type": "Exact", "name": "x-lettucify-colour", "value": colour}
        assert direct[colour]["matches"] == [{"headers": [header]}]
        assert direct[colour]["backendRefs"] == [{"name": f"lettucify-{colour}", "port": 8080}]
    assert f"kubectl apply -f {deployed.manifests}" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("traffic, mirror, problem", [
    ({"blue": 90, "green": 20}, {}, "traffic must add up to 100"),
    ({"blue": 101, "green": -1}, {}, "traffic of blue must be a whole percent from 0 to 100, got 101"),
    ({"blue": 90, "green": 10}, {"green": 10}, "green has live traffic; only a colour without it"),
    ({"blue": 100}, {"blue": 5, "green": 5}, "one colour at most"),
    ({"blue": 100}, {"green": 60}, "mirror of green must be at most 50%"),
    ({"blue": 100}, {"purple": 5}, "no colour 'purple'"),
])
def test_set_traffic_refuses_a_split_that_cannot_be_and_changes_nothing(deployed, traffic, mirror, problem):
    before = (deployed.manifests / "30-httproute.yaml").read_text(), deployed.state_file.read_text()
    with pytest.raises(DeployError, match=re.escape(problem)) as err:
        deployed.set_traffic(traffic, mirror)
    assert err.value.step == "traffic"
    assert ((deployed.manifests / "30-httproute.yaml").read_text(), deployed.state_file.read_text()) == before


def test_traffic_goes_only_to_a_deployed_colour_and_a_live_colour_is_not_replaced_or_removed(tmp_path, deployed):
    fresh = make_target(tmp_path / "fresh")
    fresh.put("blue", BLUE_MODEL)
    with pytest.raises(DeployError, match="nothing is deployed on green"):
        fresh.set_traffic({"green": 100}, {})
    with pytest.raises(LettucifyError, match="blue has 100% of live traffic"):
        deployed.put("blue", GREEN_MODEL)
    with pytest.raises(LettucifyError, match="blue has 100% of live traffic"):
        deployed.remove("blue")
    assert deployed.state()["blue"].version == "3"


def test_the_state_lives_across_commands_in_manifests_dir(deployed, tmp_path):
    deployed.set_traffic({"blue": 50, "green": 50}, {})
    later = make_target(tmp_path, api_key_secret="lettucify-api-key")  # the next task=deploy
    state = later.state()
    assert [(s.model, s.version, s.traffic, s.health) for s in state.values()] == [
        ("lettucify-food16", "3", 50, "unknown"), ("lettucify-food16", "4", 50, "unknown")]


# --------------------------------------------------------------------------- the pods
def test_the_pods_run_the_server_non_root_on_a_read_only_root_with_probes(deployed):
    green = named(deployed, "Deployment", "lettucify-green")
    labels = green["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "lettucify", "lettucify.io/colour": "green", "lettucify.io/model-version": "4"}
    pod = green["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [server] = pod["containers"]
    security = server["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert server["command"] == ["python", "-m", "lettucify", "task=serve", "model_uri=/model",
                                 "serve.host=0.0.0.0", "serve.port=8080", "hydra.run.dir=/tmp/run",
                                 "serve.model_name=lettucify-food16", "serve.model_version=4"]
    [scratch] = server["volumeMounts"]
    assert scratch["mountPath"] == "/tmp"
    assert {"name": scratch["name"], "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    assert {(p, server[p]["httpGet"]["path"]) for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        ("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")}
    assert {"name": "LETTUCIFY_DEPLOYMENT", "value": "green"} in server["env"]
    assert server["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    assert server["image"] == "lettucify-serve:lettucify-food16-4"
    hpa = named(deployed, "HorizontalPodAutoscaler", "lettucify-green")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_no_secret_is_written_the_api_key_comes_from_the_secret(tmp_path, monkeypatch, capsys):
    key = "k8s-test-api-key-4f1d9a7c"
    monkeypatch.setenv("LETTUCIFY_API_KEY", key)
    target = make_target(tmp_path, api_key_secret="lettucify-api-key")
    target.put("blue", BLUE_MODEL)
    target.set_traffic({"blue": 100}, {})
    [deployment] = of_kind(documents(target.manifests), "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    [api_key] = [e for e in env if e["name"] == "LETTUCIFY_API_KEY"]
    assert api_key == {"name": "LETTUCIFY_API_KEY",
                       "valueFrom": {"secretKeyRef": {"name": "lettucify-api-key", "key": "api-key"}}}
    assert not [d for d in documents(target.manifests) if d["kind"] == "Secret"]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "project" not in p.relative_to(tmp_path).parts]
    assert written and not [p for p in written if key.encode() in p.read_bytes()]
    assert key not in capsys.readouterr().out
    without = make_target(tmp_path / "open")
    without.put("blue", BLUE_MODEL)
    [deployment] = of_kind(documents(without.manifests), "Deployment")
    assert "LETTUCIFY_API_KEY" not in {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


# --------------------------------------------------------------------------- the image
def test_the_dockerfile_runs_non_root_and_its_build_context_is_complete(capsys, deployed):
    context = deployed.images / "green"
    dockerfile = (context / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    [user] = [args for op, args in instructions if op == "USER"]
    green = named(deployed, "Deployment", "lettucify-green")
    assert user.split(":")[0] not in ("0", "root")
    assert user.split(":")[0] == str(green["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    copies = [args.split() for op, args in instructions if op == "COPY"]
    assert copies and all((context / source).exists() for source, _ in copies)
    assert ["model/", "/model/"] in copies
    assert (context / "model" / "MLmodel").read_text() == "name: lettucify-food16\n"
    assert (context / "project" / "setup.cfg").is_file() and (context / "project" / "lettucify" / "cli.py").is_file()
    assert not list((context / "project").rglob("__pycache__"))
    [cmd] = [args for op, args in instructions if op == "CMD"]
    assert json.loads(cmd) == [*manifests.SERVER_COMMAND, "serve.model_name=lettucify-food16", "serve.model_version=4"]
    assert (deployed.record / "images" / "green" / "Dockerfile").read_text() == dockerfile
    assert f"docker build -t lettucify-serve:lettucify-food16-4 {context}" in capsys.readouterr().out.splitlines()


def test_the_build_context_project_is_installable(deployed, tmp_path):
    """`pip install project/` is what the image runs: the copied source builds a wheel."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
         str(deployed.images / "blue" / "project")],
        capture_output=True, text=True, timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert [p.name for p in (tmp_path / "wheel").glob("lettucify-*.whl")]


# --------------------------------------------------------------------------- apply=false
def test_rendered_only_there_is_nothing_to_wait_on_or_reach(deployed, caplog):
    with caplog.at_level("INFO"):
        deployed.wait_ready("green", timeout_s=0.01)
    assert f"kubectl apply -f {deployed.manifests}" in caplog.text
    assert deployed.direct("green") is None
    assert {s.health for s in deployed.state().values()} == {"unknown"}


def test_remove_and_stop_take_the_manifests_away(deployed, capsys):
    deployed.set_traffic({"blue": 100}, {"green": 10})
    deployed.remove("green")
    assert not (deployed.manifests / "20-green.yaml").exists() and not (deployed.images / "green").exists()
    assert weights(deployed) == {"lettucify-blue": 100}
    assert "filters" not in live_rule(deployed) and deployed.state()["green"].mirror == 0
    assert [r["name"] for r in route(deployed)["spec"]["rules"]] == ["blue", "live"]
    out = capsys.readouterr().out.splitlines()
    assert ("kubectl delete deployment,service,horizontalpodautoscaler,poddisruptionbudget,healthcheckpolicy "
            "-n lettucify -l app.kubernetes.io/name=lettucify,lettucify.io/colour=green") in out
    deployed.stop()
    assert not deployed.manifests.exists() and not deployed.images.exists() and not deployed.state_file.exists()
    assert {s.model for s in deployed.state().values()} == {None}
    assert capsys.readouterr().out.strip().endswith("-n lettucify -l app.kubernetes.io/name=lettucify")


# --------------------------------------------------------------------------- apply=true
class FakeCluster:
    """The Kubernetes API: objects by (kind, name); each Deployment's rollout as a test sets it."""

    def __init__(self) -> None:
        self.objects: Dict[tuple, Dict[str, Any]] = {}
        self.calls: List[tuple] = []
        self.rollouts: Dict[str, Rollout] = {}

    def apply(self, manifest: Dict[str, Any]) -> None:
        self.calls.append(("apply", manifest["kind"], manifest["metadata"]["name"]))
        self.objects[manifest["kind"], manifest["metadata"]["name"]] = manifest

    def delete(self, manifest: Dict[str, Any]) -> None:
        self.calls.append(("delete", manifest["kind"], manifest["metadata"]["name"]))
        self.objects.pop((manifest["kind"], manifest["metadata"]["name"]), None)

    def rollout(self, namespace: str, name: str) -> Optional[Rollout]:
        if ("Deployment", name) not in self.objects:
            return None
        return self.rollouts.get(name, Rollout(generation=1, observed_generation=0, replicas=0, updated=0, available=0))

    def pod_problems(self, namespace: str, selector: str) -> List[str]:
        return [f"{selector.split('=')[-1]}-pod: ImagePullBackOff: not found"]


@pytest.fixture
def cluster(monkeypatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(kubernetes_api, "Cluster", lambda: fake)
    return fake


def test_applied_put_waits_for_the_rollout_and_reaches_the_colour_through_the_gateway(tmp_path, cluster, capsys):
    target = make_target(tmp_path, apply=True, hostname="food.example.com", min_pods=2)
    target.put("blue", BLUE_MODEL)
    assert [c[1] for c in cluster.calls] == ["Namespace", "Gateway", "Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget", "HealthCheckPolicy", "HTTPRoute"]
    printed = capsys.readouterr().out
    assert "kubectl" not in printed and "docker push lettucify-serve:lettucify-food16-3" in printed.splitlines()
    assert target.state()["blue"].health == "not ready"
    cluster.rollouts["lettucify-blue"] = Rollout(generation=2, observed_generation=2, replicas=2, updated=2, available=1)
    assert target.state()["blue"].health == "ready" and target.state()["green"].health == "down"
    with pytest.raises(DeployError, match=r"blue: 1 of 2 pods available after 0.05 s; blue-pod: ImagePullBackOff") as err:
        target.wait_ready("blue", timeout_s=0.05)
    assert err.value.step == "ready"
    cluster.rollouts["lettucify-blue"] = Rollout(generation=2, observed_generation=2, replicas=2, updated=2, available=2)
    target.wait_ready("blue", timeout_s=0.05)
    endpoint = target.direct("blue")
    assert endpoint.scoring_url == "http://food.example.com/score" and endpoint.base_url == "http://food.example.com"
    assert dict(endpoint.headers) == {"x-lettucify-colour": "blue"}
    assert route(target)["spec"]["hostnames"] == ["food.example.com"]
    assert target.direct("green") is None  # nothing there
    assert make_target(tmp_path / "nohost", apply=True).direct("blue") is None


def test_applied_traffic_remove_and_stop_change_the_cluster(tmp_path, cluster):
    target = make_target(tmp_path, apply=True)
    target.put("blue", BLUE_MODEL)
    target.set_traffic({"blue": 100}, {})
    target.put("green", GREEN_MODEL)
    target.set_traffic({"blue": 90, "green": 10}, {})
    applied_route = cluster.objects["HTTPRoute", "lettucify"]
    assert {r["name"]: r["weight"] for r in applied_route["spec"]["rules"][-1]["backendRefs"]} == {
        "lettucify-blue": 90, "lettucify-green": 10}
    target.set_traffic({"blue": 100}, {})
    cluster.calls.clear()
    target.remove("green")
    assert cluster.calls[0] == ("apply", "HTTPRoute", "lettucify")  # the route lets go first
    assert {kind for op, kind, name in cluster.calls if op == "delete" and name == "lettucify-green"} == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "HealthCheckPolicy"}
    target.stop()
    assert set(cluster.objects) == {("Namespace", "lettucify")}


def test_a_missing_kubernetes_client_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(LettucifyError, match=r"pip install 'lettucify\[kubernetes\]'"):
        kubernetes_api.Cluster()
