"""deploy=azure_online: the endpoint and its blue/green deployments as real azure-ai-ml
entities, driven through the Target methods against the fake MLClient (tests/fake_azure.py),
and dry runs' YAML loaded back with azure.ai.ml's own loaders."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from azure.ai.ml import load_online_deployment, load_online_endpoint
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from fake_azure import FakeMLClient
from lettucify.azure import client as azure_client
from lettucify.azure import online
from lettucify.config import REPO_ROOT
from lettucify.deploy import azure_online
from lettucify.deploy.target import DeployError, ModelRef
from lettucify.errors import ConfigError, LettucifyError
from lettucify.validation import validate

SECRET = "AzureEndpointKey-5f4e3d2c1b0a-must-not-leak"
IMAGE = "lettucifyacr.azurecr.io/lettucify-serve:1.0"
ENDPOINT = "fridge-test"
MUTATIONS = ("online_endpoints.begin_create_or_update", "online_endpoints.begin_delete",
             "online_deployments.begin_create_or_update", "online_deployments.begin_delete")
# A model from code (nothing pickled), registered twice as versions 1 and 2 of "tiny".
REGISTER = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="model", python_model=sys.argv[2], pip_requirements=["mlflow"])
for _ in range(2):
    mlflow.register_model(info.model_uri, "tiny")
"""
ECHO_MODEL = """
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> Tuple[ModelRef, ModelRef]:
    """Versions 1 and 2 of a registered MLflow model (a pyfunc with pinned requirements)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    (root / "echo.py").write_text(ECHO_MODEL)
    result = subprocess.run([sys.executable, "-c", REGISTER, uri, str(root / "echo.py")], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return ModelRef("tiny", "1", uri), ModelRef("tiny", "2", uri)


@pytest.fixture
def fake(monkeypatch) -> FakeMLClient:
    client = FakeMLClient(endpoint_key=SECRET)
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: client)
    monkeypatch.setattr(azure_online, "POLL_S", 0.0)
    return client


def make_target(run_dir: Path, *overrides: str):
    """The target as the flow builds it: instantiated from the composed deploy.azure_online."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=deploy", "deploy=azure_online",
                                           f"deploy.azure_online.endpoint_name={ENDPOINT}", *overrides])
    return instantiate(cfg.deploy.azure_online, run_dir=run_dir, tracking_uri=None)


def mutations(fake: FakeMLClient) -> List[Tuple[str, str]]:
    return [(call.name, call.args["name"]) for call in fake.calls(*MUTATIONS)]


def sent_maps(fake: FakeMLClient) -> List[Tuple[dict, dict]]:
    return [(c.args["traffic"], c.args["mirror_traffic"]) for c in fake.calls("online_endpoints.begin_create_or_update")]


def assert_every_map_obeys_the_rules(fake: FakeMLClient) -> None:
    for call in fake.calls("online_endpoints.begin_create_or_update"):
        online.check_traffic(call.args["traffic"], call.args["mirror_traffic"], call.args["deployments"])


def shares(target) -> dict:
    return {colour: (s.version, s.traffic, s.mirror, s.health) for colour, s in target.state().items()}


def blue_live(target, versions) -> None:
    """Version 1 on blue with all live traffic, as a first deployment leaves it."""
    target.put("blue", versions[0])
    target.wait_ready("blue", 5)
    target.set_traffic({"blue": 100}, {})


# --------------------------------------------------------------------------- dry runs
@pytest.mark.parametrize("ship", ["mlflow", "container"])
def test_a_dry_run_writes_yaml_that_loads_back_and_calls_nothing(ship, versions, fake, tmp_path):
    target = make_target(tmp_path, f"deploy.azure_online.ship={ship}", f"deploy.azure_online.image={IMAGE}",
                         "deploy.azure_online.dry_run=true", "deploy.azure_online.instance_count=2")
    blue_live(target, versions)
    target.put("green", versions[1])
    target.set_traffic({"blue": 90, "green": 10}, {})

    assert fake.online_calls == []
    assert target.direct("green") is None
    assert shares(target) == {"blue": ("1", 90, 0, "unknown"), "green": ("2", 10, 0, "unknown")}
    endpoint = load_online_endpoint(tmp_path / "endpoint.yaml")
    assert (endpoint.name, endpoint.auth_mode, endpoint.traffic) == (ENDPOINT, "key", {"blue": 90, "green": 10})
    for colour, version in (("blue", "1"), ("green", "2")):
        deployment = load_online_deployment(tmp_path / f"deployment-{colour}.yaml")
        assert (deployment.name, deployment.endpoint_name) == (colour, ENDPOINT)
        assert (deployment.instance_type, deployment.instance_count) == ("Standard_DS3_v2", 2)
        assert deployment.tags[online.TAG_MODEL] == "tiny" and deployment.tags[online.TAG_VERSION] == version
        assert deployment.readiness_probe.failure_threshold == online.READINESS_PROBE["failure_threshold"]
        assert deployment.request_settings.request_timeout_ms == 30000
        model_dir = Path(deployment.model.path)
        assert (model_dir / "MLmodel").is_file() and (deployment.model.name, deployment.model.version) == ("tiny", version)
        if ship == "mlflow":  # Azure's no-code deployment: the version alone
            assert deployment.model.type == "mlflow_model"
            assert deployment.environment is None and deployment.code_configuration is None
        else:
            assert deployment.model.type == "custom_model"
            assert deployment.environment_variables == {"LETTUCIFY_DEPLOYMENT": colour, "LETTUCIFY_MODEL_NAME": "tiny",
                                                        "LETTUCIFY_MODEL_VERSION": version}
            routes = deployment.environment.inference_config
            assert {name: (r["port"], r["path"]) for name, r in routes.items()} == {
                "livenessRoute": (8080, "/health"), "readinessRoute": (8080, "/ready"), "scoringRoute": (8080, "/score")}
            dockerfile = (Path(deployment.environment.build.path) / "Dockerfile").read_text()
            assert f"FROM {IMAGE}\n" in dockerfile
            assert f'model_uri=$AZUREML_MODEL_DIR/{model_dir.name}' in dockerfile
            assert "task=serve" in dockerfile and "serve.host=0.0.0.0 serve.port=8080" in dockerfile

    with pytest.raises(LettucifyError, match="blue still takes 90% live"):
        target.remove("blue")
    target.set_traffic({"green": 100}, {})
    target.remove("blue")
    assert not (tmp_path / "deployment-blue.yaml").exists()
    assert load_online_endpoint(tmp_path / "endpoint.yaml").traffic == {"green": 100}


def test_ship_container_without_an_image_is_one_line(versions, fake, tmp_path):
    target = make_target(tmp_path, "deploy.azure_online.ship=container")
    with pytest.raises(LettucifyError, match="^deploy.azure_online.ship=container needs deploy.azure_online.image: "):
        target.put("green", versions[1])
    assert mutations(fake) == []


def test_out_of_range_request_settings_are_refused_at_composition(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=deploy", "deploy=azure_online", "deploy.azure_online.request_timeout_ms=200000"],
                      return_hydra_config=True)
    with pytest.raises(ConfigError, match=r"deploy.azure_online.request_timeout_ms=200000: must be in \[1, 180000\]"):
        validate(cfg)


# --------------------------------------------------------------------------- against the fake
def test_a_canary_goes_through_the_endpoint_in_order_and_every_map_keeps_the_rules(versions, fake, tmp_path):
    target = make_target(tmp_path)
    assert shares(target) == {"blue": (None, 0, 0, "down"), "green": (None, 0, 0, "down")}
    blue_live(target, versions)
    target.put("green", versions[1])
    target.wait_ready("green", 5)
    for step in (10, 50):
        target.set_traffic({"blue": 100 - step, "green": step}, {})
    with pytest.raises(LettucifyError, match="blue still takes 50% live"):
        target.remove("blue")
    target.set_traffic({"blue": 0, "green": 100}, {})
    assert shares(target) == {"blue": ("1", 0, 0, "ready"), "green": ("2", 100, 0, "ready")}
    target.remove("blue")

    assert mutations(fake) == [
        ("online_endpoints.begin_create_or_update", ENDPOINT),
        ("online_deployments.begin_create_or_update", "blue"),
        ("online_endpoints.begin_create_or_update", ENDPOINT),
        ("online_deployments.begin_create_or_update", "green"),
        *[("online_endpoints.begin_create_or_update", ENDPOINT)] * 3,
        ("online_deployments.begin_delete", "blue"),
    ]
    assert sent_maps(fake) == [({}, {}), ({"blue": 100}, {}), ({"blue": 90, "green": 10}, {}),
                               ({"blue": 50, "green": 50}, {}), ({"blue": 0, "green": 100}, {})]
    assert_every_map_obeys_the_rules(fake)
    assert fake.calls("online_endpoints.begin_create_or_update")[0].args["auth_mode"] == "key"
    green = fake.calls("online_deployments.begin_create_or_update")[1].args["deployment"]
    assert green.tags[online.TAG_VERSION] == "2" and green.model.type == "mlflow_model"
    assert shares(target) == {"blue": (None, 0, 0, "down"), "green": ("2", 100, 0, "ready")}


def test_a_rollback_moves_all_traffic_back_to_blue(versions, fake, tmp_path):
    target = make_target(tmp_path)
    blue_live(target, versions)
    target.put("green", versions[1])
    target.set_traffic({"blue": 0, "green": 100}, {})
    with pytest.raises(LettucifyError, match="green takes 100% of endpoint fridge-test's live traffic"):
        target.put("green", versions[0])
    target.set_traffic({"blue": 100, "green": 0}, {})
    assert sent_maps(fake)[-2:] == [({"blue": 0, "green": 100}, {}), ({"blue": 100, "green": 0}, {})]
    assert_every_map_obeys_the_rules(fake)
    assert shares(target)["blue"] == ("1", 100, 0, "ready")
    target.remove("green")
    assert mutations(fake)[-1] == ("online_deployments.begin_delete", "green")


def test_a_colour_with_live_traffic_gets_no_new_version(versions, fake, tmp_path):
    target = make_target(tmp_path)
    blue_live(target, versions)
    before = len(fake.online_calls)
    with pytest.raises(LettucifyError, match="blue takes 100% of endpoint fridge-test's live traffic"):
        target.put("blue", versions[1])
    assert mutations(fake)[-1] == ("online_endpoints.begin_create_or_update", ENDPOINT)
    assert [c.name for c in fake.online_calls[before:]] == ["online_endpoints.get"]


@pytest.mark.parametrize("traffic, mirror, refusal", [
    ({"blue": 100}, {"green": 60}, "mirror traffic of green is 60%: Azure mirrors at most 50%"),
    ({"blue": 100}, {"blue": 10}, "mirror traffic goes to blue, which has 100% live traffic"),
    ({"blue": 90, "green": 10}, {"green": 10}, "mirror traffic goes to green, which has 10% live traffic"),
    ({"blue": 100}, {"red": 10}, "mirror traffic names red, which the endpoint has no deployment of"),
    ({"blue": 90, "green": 20}, {}, "traffic sums to 110%"),
    ({"blue": 99.5, "green": 0.5}, {}, "traffic of blue is 99.5: Azure takes whole percents"),
])
def test_maps_that_break_azures_rules_are_refused_before_any_call(traffic, mirror, refusal, versions, fake, tmp_path):
    target = make_target(tmp_path)
    blue_live(target, versions)
    target.put("green", versions[1])
    sent = sent_maps(fake)
    with pytest.raises(LettucifyError, match=refusal) as refused:
        target.set_traffic(traffic, mirror)
    assert "\n" not in str(refused.value)
    assert sent_maps(fake) == sent


def test_mirroring_to_two_deployments_is_refused():
    with pytest.raises(LettucifyError, match="Azure mirrors to one deployment at most"):
        online.check_traffic({"blue": 100}, {"green": 10, "red": 10}, ["blue", "green", "red"])


def test_a_mirrored_colour_leaves_mirroring_in_an_update_of_its_own(versions, fake, tmp_path):
    target = make_target(tmp_path)
    blue_live(target, versions)
    target.put("green", versions[1])
    target.set_traffic({"blue": 100}, {"green": 20})
    assert shares(target)["green"] == ("2", 0, 20, "ready")
    with pytest.raises(LettucifyError, match="green still takes 0% live and 20% mirrored"):
        target.remove("green")
    target.set_traffic({"blue": 90, "green": 10}, {})
    assert sent_maps(fake)[-3:] == [({"blue": 100, "green": 0}, {"green": 20}),
                                    ({"blue": 100, "green": 0}, {"green": 0}),
                                    ({"blue": 90, "green": 10}, {"green": 0})]
    assert_every_map_obeys_the_rules(fake)
    target.set_traffic({"blue": 90, "green": 10}, {})
    assert len(sent_maps(fake)) == 5  # nothing changed, nothing sent


def test_traffic_updates_take_the_live_map_first_when_only_that_order_keeps_the_rules():
    deployments = ["blue", "green"]
    steps = online.traffic_updates(({"blue": 0, "green": 100}, {}), ({"blue": 100, "green": 0}, {"green": 10}),
                                   deployments)
    assert steps == [({"blue": 100, "green": 0}, {}), ({"blue": 100, "green": 0}, {"green": 10})]
    for step in steps:
        online.check_traffic(*step, deployments)


def test_a_deployment_that_fails_to_provision_is_a_ready_error_with_its_last_log_line(versions, monkeypatch, tmp_path):
    fake = FakeMLClient(failing_deployments={"green": "loading the model\nOSError: model_uri has no MLmodel\n\n"})
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: fake)
    target = make_target(tmp_path)
    blue_live(target, versions)
    target.put("green", versions[1])
    with pytest.raises(DeployError, match="green of endpoint fridge-test is Failed; its log ends: OSError: model_uri") as err:
        target.wait_ready("green", 5)
    assert err.value.step == "ready"
    assert shares(target)["green"] == ("2", 0, 0, "Failed")


def test_a_deployment_still_provisioning_after_the_timeout_is_a_ready_error(versions, monkeypatch, tmp_path):
    fake = FakeMLClient(provisioning={"blue": ["Creating"] * 3 + ["Succeeded"]})
    monkeypatch.setattr(azure_client, "make_ml_client", lambda workspace: fake)
    monkeypatch.setattr(azure_online, "POLL_S", 0.0)
    target = make_target(tmp_path)
    target.put("blue", versions[0])
    with pytest.raises(DeployError, match="blue of endpoint fridge-test is Creating still, after 0 s"):
        target.wait_ready("blue", 0)
    target.wait_ready("blue", 5)  # the next polls get past Creating
    assert [c.args["name"] for c in fake.calls("online_deployments.get")][-3:] == ["blue"] * 3


def test_another_instance_type_replaces_the_deployment(versions, fake, tmp_path):
    blue_live(make_target(tmp_path), versions)
    make_target(tmp_path).put("green", versions[1])
    make_target(tmp_path, "deploy.azure_online.instance_type=Standard_F4s_v2").put("green", versions[1])
    assert mutations(fake)[-3:] == [("online_deployments.begin_create_or_update", "green"),
                                    ("online_deployments.begin_delete", "green"),
                                    ("online_deployments.begin_create_or_update", "green")]


def test_direct_routes_to_the_colour_with_the_key_which_is_in_no_file_or_log(versions, fake, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    target = make_target(tmp_path, "deploy.azure_online.ship=container", f"deploy.azure_online.image={IMAGE}")
    blue_live(target, versions)
    target.put("green", versions[1])
    endpoint = target.direct("green")
    assert endpoint.scoring_url == f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
    assert endpoint.base_url is None
    assert dict(endpoint.headers) == {"azureml-model-deployment": "green", "Authorization": f"Bearer {SECRET}"}
    logging.getLogger("test").info("smoke test on %s (%s)", endpoint, endpoint.headers)

    assert SECRET not in repr(endpoint) and SECRET not in caplog.text
    assert SECRET not in "".join(capsys.readouterr())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "Dockerfile" for p in written) and any(p.name == "MLmodel" for p in written)
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]


def test_stop_deletes_only_an_endpoint_without_live_traffic(versions, fake, tmp_path):
    target = make_target(tmp_path)
    target.stop()  # no endpoint: nothing to do
    assert mutations(fake) == []
    blue_live(target, versions)
    with pytest.raises(LettucifyError, match="az ml online-endpoint delete --name fridge-test"):
        target.stop()
    target.set_traffic({"blue": 0}, {})
    target.stop()
    assert mutations(fake)[-1] == ("online_endpoints.begin_delete", ENDPOINT)
    assert shares(target) == {"blue": (None, 0, 0, "down"), "green": (None, 0, 0, "down")}


def test_an_azure_failure_is_one_line(versions, monkeypatch, fake, tmp_path):
    from azure.core.exceptions import HttpResponseError

    def refuse(endpoint):
        raise HttpResponseError("(QuotaExceeded) Not enough quota for Standard_DS3_v2.\nDetails: ...")

    monkeypatch.setattr(fake.online_endpoints, "begin_create_or_update", refuse)
    with pytest.raises(LettucifyError, match=r"^creating endpoint fridge-test: \(QuotaExceeded\)[^\n]*$"):
        make_target(tmp_path).put("blue", versions[0])


def test_the_workspace_settings_reach_a_real_client_built_offline(monkeypatch, tmp_path):
    workspace = {"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
                 "AZURE_RESOURCE_GROUP": "fridge-rg", "AZUREML_WORKSPACE_NAME": "fridge-ws"}
    for name, value in workspace.items():
        monkeypatch.setenv(name, value)
    ml = make_target(tmp_path).azure.ml
    assert (ml.subscription_id, ml.resource_group_name, ml.workspace_name) == tuple(workspace.values())


def test_the_target_meets_the_protocol(fake, tmp_path):
    import inspect

    from lettucify.deploy.target import Target

    target = make_target(tmp_path)
    assert target.name == "azure_online"
    for method in ("state", "put", "wait_ready", "direct", "set_traffic", "remove", "stop"):
        assert inspect.signature(getattr(target, method)).parameters.keys() == \
            {k: v for k, v in inspect.signature(getattr(Target, method)).parameters.items() if k != "self"}.keys()


def test_the_deploy_flow_canary_and_rollback_through_the_fake_client(versions, fake, tmp_path):
    """The flow itself (lettucify.deploy.flow) on this target: the calls of a first deploy, a
    canary and a rollback, in order, every traffic map within Azure's rules."""
    from lettucify.deploy import flow

    target = make_target(tmp_path)
    plan = flow.Plan(steps=[10, 50, 100], step_wait_s=0, max_error_rate=0.01, max_p99_ms=1000, mirror_percent=20,
                     ready_timeout_s=5)
    no_smoke = lambda endpoint: pytest.fail("ship=mlflow has no Lettucify smoke test")  # noqa: E731
    assert flow.deploy(target, versions[0], plan, no_smoke, lambda states: None) == "blue"
    assert flow.deploy(target, versions[1], plan, no_smoke, lambda states: None) == "green"
    assert flow.rollback(target, lambda states: None) == "blue"

    assert mutations(fake) == [
        ("online_endpoints.begin_create_or_update", ENDPOINT),  # the endpoint, no deployment yet
        ("online_deployments.begin_create_or_update", "blue"),
        ("online_endpoints.begin_create_or_update", ENDPOINT),  # blue 100
        ("online_deployments.begin_create_or_update", "green"),  # at 0%
        *[("online_endpoints.begin_create_or_update", ENDPOINT)] * 6,  # mirror on, mirror off, 3 steps, rollback
    ]
    assert sent_maps(fake)[1:] == [
        ({"blue": 100}, {}),
        ({"blue": 100, "green": 0}, {"green": 20}),  # mirrored first, no live traffic
        ({"blue": 100, "green": 0}, {"green": 0}),  # mirroring ends before green takes live traffic
        ({"blue": 90, "green": 10}, {"green": 0}), ({"blue": 50, "green": 50}, {}), ({"blue": 0, "green": 100}, {}),
        ({"blue": 100, "green": 0}, {}),
    ]
    assert_every_map_obeys_the_rules(fake)
    assert shares(target) == {"blue": ("1", 100, 0, "ready"), "green": ("2", 0, 0, "ready")}
