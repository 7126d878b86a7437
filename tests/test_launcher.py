"""hydra/launcher=azureml and azureml_local (launchers/hydra_azureml_launcher).

Hydra's own launcher suites run against the local backend, which runs each job's exact
command here. The azure backend is driven against the fake workspace, with Lettucify's
real app composing and pickling every sweep point; one sweep trains for real, locally.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

from fake_azure import FakeMLClient
from helpers import make_image_folder
from hydra_plugins.hydra_azureml_launcher.launcher import PAYLOAD_FILE, AzureMLLauncher
from lettucify.azure import client
from lettucify.azure.entities import project_requirements
from lettucify.azure.local import run_job_locally
from lettucify.config import REPO_ROOT
from lettucify.errors import LettucifyError
from lettucify import checkpoint as ckpt

pytestmark = [
    # azure-ai-ml's schemas, imported at the first job built.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:azure.ai.ml.*"),
]

LETTUCIFY = {"calling_file": str(REPO_ROOT / "lettucify" / "cli.py"), "calling_module": None,
             "config_path": str(REPO_ROOT / "conf"), "config_name": "config"}
# Hydra's own test app: a config with no Azure compute of its own.
HYDRA_APP = {"calling_file": None, "calling_module": "hydra.test_utils.a_module",
             "config_path": "configs", "config_name": "compose"}
ON_AZURE = ["hydra/launcher=azureml", "compute=azure_t4"]
SIX = ["optimizer.lr=1e-3,3e-3,1e-2", "model=cnn16,efficientnet_lite0"]
REMOTE = 'python -m hydra_plugins.hydra_azureml_launcher.remote "${{inputs.hydra_job}}" "${{outputs.run}}"'
NODE_WORDS = "compute.node_rank=$NODE_RANK compute.master_addr=$MASTER_ADDR compute.master_port=$MASTER_PORT"
# What Azure's credential chain reads from the environment: none of it may reach a file.
SECRETS = {"AZURE_CLIENT_SECRET": "s3cr3t-sentinel-1", "AZURE_CLIENT_ID": "client-sentinel-2",
           "AZURE_TENANT_ID": "tenant-sentinel-3"}


@pytest.fixture(autouse=True)
def hydra_default_version_base(hydra_restore_singletons):
    """Hydra's default version base, which Hydra's suites assume, whatever the session imported.

    Importing a hydra.main app (lettucify.cli sets 1.3) changes it for the whole process;
    hydra_restore_singletons puts Hydra's global state back after each test.
    """
    from hydra.version import VersionBase, __compat_version__

    VersionBase.instance().setbase(__compat_version__)


@pytest.fixture(autouse=True)
def default_ctrl_c():
    """Python's own Ctrl-C (KeyboardInterrupt), whatever handler an earlier test of the session left."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def tracking_store(monkeypatch, tmp_path):
    """A sweep's MLflow parent run goes to a store of the test's own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


# --------------------------------------------------------------------------- Hydra's suites
def test_discovery_finds_the_launcher_without_importing_anything_heavy():
    assert AzureMLLauncher.__name__ in [cls.__name__ for cls in Plugins.instance().discover(Launcher)]
    assert {"azureml.yaml", "azureml_local.yaml"} <= set(ConfigStore.instance().list("hydra/launcher"))
    # Hydra scans plugins at every start, so `lettucify --help` must stay quick.
    probe = ("import sys\nfrom hydra.core.plugins import Plugins\nfrom hydra.plugins.launcher import Launcher\n"
             "names = [c.__name__ for c in Plugins.instance().discover(Launcher)]\n"
             "print(names, sorted(m for m in ('torch', 'azure.ai.ml', 'cloudpickle') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['BasicLauncher', 'AzureMLLauncher'] []"


# A Hydra app of its own, in the same environment; discovery runs the plugin's modules.
BARE_APP = """
import json, sys
import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher

@hydra.main(config_path=None, version_base="1.3")
def main(cfg):
    Plugins.instance().discover(Launcher)
    repo = ConfigStore.instance().repo
    print(json.dumps({"store": sorted(repo), "launchers": sorted(repo["hydra"]["launcher"]),
                      "modules": sorted(m for m in sys.modules if m.split(".")[0] == "lettucify")}))

main()
"""


def test_other_hydra_apps_find_nothing_of_lettucify(tmp_path):
    (tmp_path / "app.py").write_text(BARE_APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # where this process finds the plugin
    out = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    seen = json.loads(out.splitlines()[-1])
    assert {"azureml.yaml", "azureml_local.yaml"} <= set(seen["launchers"])
    assert not {"lettucify_schema.yaml", "schema"} & set(seen["store"])
    assert seen["modules"] == []


@pytest.mark.parametrize("launcher_name, overrides", [("azureml_local", [])])
class TestLocalBackend(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [("azureml_local", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"])],
)
class TestLocalBackendBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", "hydra/launcher=azureml_local"])],
)
class TestLocalBackendIntegration(IntegrationTestSuite):
    pass


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def fake_workspace(monkeypatch):
    """Install a FakeMLClient behind the one seam to Azure; returns the installer."""

    def install(**kwargs: Any) -> FakeMLClient:
        fake = FakeMLClient(**kwargs)
        monkeypatch.setattr(client, "make_ml_client", lambda workspace: fake)
        return fake

    return install


@pytest.fixture
def launched(monkeypatch) -> List[JobReturn]:
    """Every JobReturn the launcher hands Hydra, even when Hydra's sweeper then raises a failed one's error."""
    returns: List[JobReturn] = []
    # Wrapped per instance: Hydra's plugin scan re-runs the launcher's module, making new classes.
    instantiate = Plugins.instantiate_launcher

    def recording_launcher(self, *args, **kwargs):
        launcher = instantiate(self, *args, **kwargs)
        launch = launcher.launch

        def recording(job_overrides, initial_job_idx):
            result = launch(job_overrides, initial_job_idx)
            returns.extend(result)
            return result

        launcher.launch = recording
        return launcher

    monkeypatch.setattr(Plugins, "instantiate_launcher", recording_launcher)
    return returns


@pytest.fixture
def lettucify_task(hydra_default_version_base):
    """Lettucify's task function, under the Hydra version base its hydra.main sets, for this test only."""
    from hydra import version

    from lettucify.cli import run_job

    version.setbase("1.3")
    return run_job.__wrapped__


def sweep(runner, app: dict, tmp_path: Path, overrides: List[str], task=None):
    return runner(**app, task_function=task, overrides=overrides, temp_dir=tmp_path / "sweep")


def job_dirs(sweep_dir: Path) -> List[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name))


def tag(job: Any, name: str) -> str:
    return job.tags[name]


def in_sweep_order(jobs: List[Any]) -> List[Any]:
    return sorted(jobs, key=lambda job: int(tag(job, "hydra.job.num")))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- azure backend
def test_a_sweep_submits_one_validated_job_per_point(
    lettucify_task, hydra_sweep_runner, fake_workspace, monkeypatch, tmp_path
):
    from azure.ai.ml import load_job

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    fake = fake_workspace()
    overrides = [*ON_AZURE, "compute.instance_count=2", "data.azure_input=azureml:food16:3",
                 "hydra.sweeper.max_batch_size=2", *SIX]
    with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task) as run:
        sweep_dir = Path(run.temp_dir)
        returns = [ret for batch in run.returns for ret in batch]
        jobs = in_sweep_order(fake.jobs.submitted)
        assert [len(batch) for batch in run.returns] == [2, 2, 2] and len(jobs) == 6  # three launches of two

        # One cluster for the sweep, created once.
        assert [(c.name, c.size) for c in fake.compute.created] == [("lettucify-t4", "STANDARD_NC4AS_T4_V3")]
        assert {tag(job, "hydra.sweep") for job in jobs} == {tag(jobs[0], "hydra.sweep")}
        # Hydra's own spelling of each point's overrides, in sweep order.
        expected = [["compute=azure_t4", "compute.instance_count=2", r"data.azure_input=azureml\:food16\:3",
                     f"optimizer.lr={lr}", f"model={model}"]
                    for lr in ("0.001", "0.003", "0.01") for model in ("cnn16", "efficientnet_lite0")]
        assert [tag(job, "hydra.overrides") for job in jobs] == [" ".join(words) for words in expected]
        for num, (job, ret, folder) in enumerate(zip(jobs, returns, job_dirs(sweep_dir))):
            assert job.command == f"{REMOTE} compute.backend=torchrun {NODE_WORDS} data.root=${{{{inputs.data}}}}"
            assert job.compute == "lettucify-t4"
            assert job.resources.instance_count == 2
            assert job.distribution.process_count_per_instance == 1
            assert job.experiment_name == "lettucify"  # the app's logger.experiment_name
            assert tag(job, "hydra.job.num") == str(num)
            # The job's MLflow run joins the sweep's parent run.
            parent = json.loads((sweep_dir / "sweep.json").read_text())["mlflow_run_id"]
            assert job.environment_variables["LETTUCIFY_PARENT_RUN_ID"] == parent
            assert job.environment.conda_file["dependencies"][-1] == {"pip": project_requirements()}
            assert job.inputs["hydra_job"].type == "uri_file"
            assert Path(job.inputs["hydra_job"].path) == folder / PAYLOAD_FILE
            assert job.inputs["data"].path == "azureml:food16:3"
            # Jobs run in their code snapshot, Lettucify's checkout: the plugin must be in it.
            plugin = REPO_ROOT / job.environment_variables["PYTHONPATH"]
            assert (plugin / "hydra_plugins" / "hydra_azureml_launcher" / "remote.py").is_file()

            spec = load_job(folder / "job.yaml")
            spec._validate()
            assert spec.command == job.command and spec.resources.instance_count == 2
            submitted = json.loads((folder / "azure_job.json").read_text())
            assert submitted == {"name": ret.return_value,
                                 "studio_url": f"https://ml.azure.com/runs/{ret.return_value}"}
            assert ret.status == JobStatus.COMPLETED and fake.names[ret.return_value] is job
            assert ret.overrides == expected[num] and ret.working_dir == str(folder)

        for path in sweep_dir.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert not [value for value in SECRETS.values() if value.encode() in content], path


def test_a_sweep_over_computes_uses_each_points_cluster(
    lettucify_task, hydra_sweep_runner, fake_workspace, capsys, tmp_path
):
    fake = fake_workspace()
    overrides = ["hydra/launcher=azureml", "compute=azure_t4,azure_nc6", "hydra.launcher.experiment_name=sweeps"]
    with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task):
        pass
    jobs = in_sweep_order(fake.jobs.submitted)
    assert [job.compute for job in jobs] == ["lettucify-t4", "lettucify-nc6"]
    assert sorted(c.name for c in fake.compute.created) == ["lettucify-nc6", "lettucify-t4"]
    assert {job.experiment_name for job in jobs} == {"sweeps"}
    assert [sorted(job.inputs) for job in jobs] == [["hydra_job"]] * 2  # no data.azure_input, no data input
    assert [job.command for job in jobs] == [f"{REMOTE} compute.backend=torchrun"] * 2  # one node each
    # Hydra's logging configuration sends the launcher's log to stdout.
    assert capsys.readouterr().err.count("STANDARD_NC6s_v3 is retired") == 1


def test_a_refused_submission_fails_its_own_point_only(
    lettucify_task, hydra_sweep_runner, fake_workspace, launched, tmp_path
):
    fake = fake_workspace(fail_submission=lambda job: tag(job, "hydra.job.num") == "2")
    # Hydra's sweeper raises the failed point's error once the launcher has returned them all.
    with pytest.raises(RuntimeError, match=r"\(fake\) the service refused job"):
        with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, [*ON_AZURE, *SIX], task=lettucify_task):
            pass
    assert [ret.status.name for ret in launched] == ["COMPLETED"] * 2 + ["FAILED"] + ["COMPLETED"] * 3
    assert isinstance(launched[2]._return_value, RuntimeError)
    assert sorted(ret.return_value for ret in launched if ret.status == JobStatus.COMPLETED) == sorted(fake.names)
    assert len(fake.jobs.submitted) == 5
    assert not (Path(launched[2].working_dir) / "azure_job.json").exists()
    assert (Path(launched[2].working_dir) / "job.yaml").is_file()


def test_ctrl_c_while_following_cancels_every_submitted_job(
    lettucify_task, hydra_sweep_runner, fake_workspace, tmp_path
):
    fake = fake_workspace()

    def interrupted(name: str) -> str:
        raise KeyboardInterrupt

    fake.status_of = interrupted
    overrides = [*ON_AZURE, *SIX, "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=0"]
    with pytest.raises(KeyboardInterrupt):
        with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task):
            pass
    assert len(fake.names) == 6
    assert sorted(fake.jobs.cancelled) == sorted(fake.names)


def test_ctrl_c_while_submitting_cancels_what_was_submitted(
    lettucify_task, hydra_sweep_runner, fake_workspace, tmp_path
):
    main_thread = threading.main_thread().ident

    def ctrl_c_during_the_fourth(job: Any) -> bool:
        if tag(job, "hydra.job.num") == "3":
            # A terminal's Ctrl-C reaches the main thread while a slow submission is in flight.
            signal.pthread_kill(main_thread, signal.SIGINT)
            time.sleep(1)
        return False

    fake = fake_workspace(fail_submission=ctrl_c_during_the_fourth)
    overrides = [*ON_AZURE, *SIX, "hydra.launcher.max_concurrent=1"]
    with pytest.raises(KeyboardInterrupt):
        with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task):
            pass
    # One at a time: the one in flight still went out, the two after it never did.
    assert [tag(job, "hydra.job.num") for job in fake.jobs.submitted] == ["0", "1", "2", "3"]
    assert sorted(fake.jobs.cancelled) == sorted(fake.names)


@pytest.mark.usefixtures("lettucify_task")  # Lettucify's config and version base, a stand-in task
def test_waiting_returns_what_each_task_returned_on_its_nodes(hydra_sweep_runner, fake_workspace, tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class_train=1, per_class_test=1)

    def run_as_azure_would(name: str, job: Any, folder: Path) -> None:
        # The job's command, one process per node, writing to the output Azure ML would download.
        assert run_job_locally(job, tmp_path / "nodes" / name, paths={"run": str(folder)}) == 0

    def stand_in(cfg):  # for Lettucify's training: what each node's config says
        return (cfg.optimizer.lr, cfg.compute.backend.value, cfg.compute.node_rank, cfg.compute.master_addr,
                cfg.data.root, HydraConfig.get().runtime.output_dir)

    fake = fake_workspace(write_output=run_as_azure_would)
    overrides = [*ON_AZURE, "optimizer.lr=1e-3,3e-3", "compute.instance_count=2", f"data.azure_input={photos}",
                 "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=0"]
    with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=stand_in) as run:
        assert len(run.returns[0]) == 2
        for lr, ret, folder in zip((1e-3, 3e-3), run.returns[0], job_dirs(Path(run.temp_dir))):
            output = folder / "azure" / "named-outputs" / "run"
            assert ret.status == JobStatus.COMPLETED
            assert ret.return_value == (lr, "torchrun", 0, "127.0.0.1", str(photos), str(output))
            assert (output / "node1" / ".hydra" / "config.yaml").is_file()  # node 1 ran it too, in its own folder
    assert fake.jobs.cancelled == []


def test_other_apps_run_on_the_launchers_compute_and_failures_name_the_job(
    hydra_sweep_runner, fake_workspace, launched, tmp_path
):
    fake = fake_workspace(final_status="Failed")
    overrides = ["hydra/launcher=azureml", "group1=file1,file2", "hydra.launcher.wait=true",
                 "hydra.launcher.poll_interval_s=0", "hydra.launcher.compute.azure.cluster.name=cpu-cluster",
                 "hydra.launcher.compute.azure.cluster.size=STANDARD_D4S_V3",
                 "+hydra.launcher.compute.instance_count=2"]  # beyond the plugin's defaults: added
    failed = r"Azure ML job fake-job-\d \(#\d, https://ml.azure.com/runs/fake-job-\d\) ended Failed"
    with pytest.raises(LettucifyError, match=failed):
        with sweep(hydra_sweep_runner, HYDRA_APP, tmp_path, overrides, task=lambda cfg: cfg.foo):
            pass
    jobs = in_sweep_order(fake.jobs.submitted)
    assert [job.command for job in jobs] == [REMOTE] * 2  # no Lettucify overrides for another app
    assert [job.compute for job in jobs] == ["cpu-cluster"] * 2
    assert [job.resources.instance_count for job in jobs] == [2, 2]
    assert [(c.name, c.size) for c in fake.compute.created] == [("cpu-cluster", "STANDARD_D4S_V3")]
    assert {job.experiment_name for job in jobs} == {"a_module"}  # hydra.job.name
    assert [ret.status for ret in launched] == [JobStatus.FAILED] * 2
    for num, ret in enumerate(launched):
        name = re.search(r"fake-job-\d+", str(ret._return_value)).group()
        assert tag(fake.names[name], "hydra.job.num") == str(num)


def test_a_typo_in_the_launchers_compute_fails_naming_the_key(hydra_sweep_runner, tmp_path):
    overrides = ["hydra/launcher=azureml", "+hydra.launcher.compute.instnce_count=2"]
    typo = r"^hydra\.launcher\.compute\.instnce_count: Key 'instnce_count' not in 'AzureComputeConf'$"
    with pytest.raises(LettucifyError, match=typo):
        with sweep(hydra_sweep_runner, HYDRA_APP, tmp_path, overrides):
            pass


def test_a_dry_run_writes_the_jobs_and_submits_nothing(lettucify_task, hydra_sweep_runner, monkeypatch, tmp_path):
    def unreachable(workspace):
        raise AssertionError("a dry run connected to Azure")

    monkeypatch.setattr(client, "make_ml_client", unreachable)
    overrides = [*ON_AZURE, "compute.azure.dry_run=true", "optimizer.lr=1e-3,3e-3"]
    with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task) as run:
        assert [ret.return_value for ret in run.returns[0]] == [None, None]
        assert all((folder / "job.yaml").is_file() for folder in job_dirs(Path(run.temp_dir)))


# --------------------------------------------------------------------------- local backend
def test_a_failing_task_fails_its_point_with_its_own_error(hydra_sweep_runner, launched, tmp_path):
    def task(cfg):
        if cfg.foo == 20:  # group1=file2
            raise ValueError("no such food")
        return cfg.foo

    overrides = ["hydra/launcher=azureml_local", "group1=file1,file2"]
    with pytest.raises(ValueError, match="no such food"):
        with sweep(hydra_sweep_runner, HYDRA_APP, tmp_path, overrides, task=task):
            pass
    assert [ret.status for ret in launched] == [JobStatus.COMPLETED, JobStatus.FAILED]
    assert launched[0].return_value == 10


def test_a_job_that_dies_without_a_result_fails_naming_its_folder(hydra_sweep_runner, launched, tmp_path):
    def task(cfg):
        os._exit(3)

    with pytest.raises(LettucifyError, match=r"job #0 in \S+/sweep/0 exited with status 3 without a result"):
        with sweep(hydra_sweep_runner, HYDRA_APP, tmp_path, ["hydra/launcher=azureml_local"], task=task):
            pass
    assert [ret.status for ret in launched] == [JobStatus.FAILED]


def test_ctrl_c_stops_the_jobs_running_here(hydra_sweep_runner, tmp_path):
    started = tmp_path / "started"

    def task(cfg):
        started.write_text(str(os.getpid()))
        time.sleep(60)

    def ctrl_c_once_started() -> None:
        deadline = time.monotonic() + 60
        while not started.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        # To the main thread, as a terminal's Ctrl-C: it wakes the thread from waiting on the jobs.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=ctrl_c_once_started, daemon=True).start()
    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with sweep(hydra_sweep_runner, HYDRA_APP, tmp_path, ["hydra/launcher=azureml_local"], task=task):
            pass
    assert time.monotonic() - begin < 40
    assert not alive(int(started.read_text()))


def test_lettucify_trains_each_point_here_and_returns_its_validation_accuracy(
    lettucify_task, hydra_sweep_runner, tmp_path
):
    photos = make_image_folder(tmp_path / "photos", per_class_train=8, per_class_test=2)
    overrides = [
        "hydra/launcher=azureml_local", "compute=azure_t4", "model=cnn16", "model.input_size=32", "data=imagefolder",
        f"data.root={photos}", "data.batch_size=8", "trainer.epochs=1", "logger=none", "compute.device=cpu",
        "compute.amp=false", "compute.pin_memory=false", "compute.process_group_backend=gloo", "compute.instance_count=1,2",
    ]
    with sweep(hydra_sweep_runner, LETTUCIFY, tmp_path, overrides, task=lettucify_task) as run:
        returns = run.returns[0]
        assert len(returns) == 2
        for ret, folder, nodes in zip(returns, job_dirs(Path(run.temp_dir)), (1, 2)):
            history = ckpt.load(folder / "checkpoints" / ckpt.LAST)["state"]["history"]
            assert len(history) == 1
            # The score of the last epoch's checkpoint (trainer.select=last): its validation accuracy.
            assert ret.return_value == pytest.approx(history[-1]["val_acc"])
            assert ret.return_value == json.loads((folder / "score.json").read_text())["metrics"]["val_acc"]
            assert sorted(p.name for p in (folder / "local_run").iterdir()) == [f"node{k}" for k in range(nodes)]


def test_a_launch_error_is_one_line_on_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZUREML_"))}
    result = subprocess.run(
        [sys.executable, "-m", "lettucify", "-m", "hydra/launcher=azureml", "compute=azure_t4",
         "optimizer.lr=1e-3,3e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "no Azure ML workspace" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]  # jobs written first
