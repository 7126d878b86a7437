"""AzureMLLauncher: every sweep point an Azure ML command job, submitted or run here.

For each point the launcher composes its config, pickles what a fresh process needs to
run it (task function, config, Hydra's context and global state) into the point's job
folder, and builds the command job that runs ``remote.py`` on that pickle: with the
point's own compute when it is Lettucify's compute=azure_*, else hydra.launcher.compute.
The ``azure`` backend submits the jobs; the ``local`` backend runs each job's exact
command here, one process per node, as lettucify.azure.local does.

Hydra imports this module whenever it scans for plugins, in every Hydra app of the
environment: azure-ai-ml, cloudpickle and all of Lettucify are imported when a sweep is
launched (setup() and launch()).
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it
# is in sys.modules, where dataclasses look string annotations up.
import copy
import json
import logging
import os
import pickle
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from .config import Backend
from .remote import RETURN_FILE

log = logging.getLogger(__name__)

PAYLOAD_FILE = "hydra_job.pkl"
PAYLOAD_INPUT = "hydra_job"
JOB_SPEC = "job.yaml"
REMOTE_MODULE = "hydra_plugins.hydra_azureml_launcher.remote"
# The folder holding hydra_plugins/. Jobs upload Lettucify's checkout as their code and
# run in it, so a checkout-relative PYTHONPATH lets them import this plugin from there.
PLUGIN_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Point:
    """One sweep point: its config, its job folder and the command job built for it."""

    num: int
    overrides: List[str]
    config: DictConfig
    job_dir: Path
    compute: DictConfig
    job: Any

    def returned(self, status: JobStatus, value: Any) -> JobReturn:
        """A JobReturn made here, where the task's own did not come back."""
        task_cfg = copy.deepcopy(self.config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        return JobReturn(
            overrides=self.overrides,
            cfg=task_cfg,
            hydra_cfg=OmegaConf.masked_copy(self.config, ["hydra"]),
            working_dir=str(self.job_dir),
            task_name=self.config.hydra.job.name,
            status=status,
            _return_value=value,
        )


def plugin_pythonpath() -> str:
    from lettucify.config import REPO_ROOT
    from lettucify.errors import LettucifyError

    try:
        return PLUGIN_ROOT.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        raise LettucifyError(
            f"hydra-azureml-launcher is installed from {PLUGIN_ROOT}, outside the Lettucify checkout "
            f"{REPO_ROOT} that jobs take as their code: pip install -e ./launchers/hydra_azureml_launcher"
        ) from None


class AzureMLLauncher(Launcher):
    def __init__(
        self,
        backend: Backend,
        wait: bool,
        max_concurrent: int,
        poll_interval_s: float,
        experiment_name: Optional[str],
        compute: DictConfig,
    ) -> None:
        self.backend = Backend(backend)
        self.wait = wait
        self.max_concurrent = max_concurrent
        self.poll_interval_s = poll_interval_s
        self.experiment_name = experiment_name
        self.compute = compute
        # Tags every job of the sweep (all its batches): the Studio filters on it.
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from lettucify.config import AzureComputeConf
        from lettucify.errors import LettucifyError

        if self.max_concurrent < 1 or self.poll_interval_s < 0:
            raise LettucifyError(f"hydra.launcher: max_concurrent={self.max_concurrent} must be at least 1 and "
                                 f"poll_interval_s={self.poll_interval_s} at least 0")
        try:
            # The plugin's own default names a cluster only; the schema checks the rest and fills it in.
            self.compute = OmegaConf.merge(OmegaConf.structured(AzureComputeConf), self.compute)
        except OmegaConfBaseException as err:
            key = ".".join(filter(None, ("hydra.launcher.compute", err.full_key)))
            reason = str(err).partition("\n")[0]  # OmegaConf's further lines repeat the key
            raise LettucifyError(f"{key}: {reason}") from None
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        where = "here" if self.backend == Backend.local else "on Azure ML"
        log.info("Launching %d jobs %s; sweep %s in %s", len(job_overrides), where, self.sweep_id,
                 self.config.hydra.sweep.dir)
        shipped = Singleton.get_state()
        hydra_cfg = HydraConfig.instance().cfg
        try:
            points = [self.prepare(initial_job_idx + i, list(o), shipped) for i, o in enumerate(job_overrides)]
        finally:
            HydraConfig.instance().cfg = hydra_cfg
        if self.backend == Backend.local:
            return self.run_here(points)
        return self.submit(points)

    # ------------------------------------------------------------------ each point's job
    def prepare(self, num: int, overrides: List[str], shipped: Any) -> Point:
        import cloudpickle
        from azure.ai.ml import Input

        from lettucify.azure import entities
        from lettucify.azure.submit import warn_if_local_data
        from lettucify.tracking.run import PARENT_RUN_ENV

        assert self.config is not None and self.hydra_context is not None
        log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = f"{self.sweep_id}_{num}"
            config.hydra.job.num = num
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the sweep dir and elsewhere
        job_dir = Path(os.path.abspath(os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))))
        job_dir.mkdir(parents=True, exist_ok=True)
        payload = job_dir / PAYLOAD_FILE
        payload.write_bytes(cloudpickle.dumps({
            "task_function": self.task_function,
            "config": config,
            "hydra_context": self.hydra_context,
            # Includes the OmegaConf resolvers registered here, the app's own among them.
            "singleton_state": shipped,
        }))

        lettucify_compute = OmegaConf.select(config, "compute.backend") == "azureml"
        compute = config.compute if lettucify_compute else self.compute
        if lettucify_compute and self.backend == Backend.azure:
            warn_if_local_data(config)
        job = entities.command_job(
            compute,
            # Quoted: a job folder may be named after overrides that hold spaces.
            ["python", "-m", REMOTE_MODULE, f'"${{{{inputs.{PAYLOAD_INPUT}}}}}"',
             f'"${{{{outputs.{entities.RUN_OUTPUT}}}}}"'],
            inputs={PAYLOAD_INPUT: Input(type="uri_file", path=str(payload))},
            experiment_name=(self.experiment_name or OmegaConf.select(config, "logger.experiment_name")
                             or config.hydra.job.name),
            display_name=" ".join(overrides) or f"{config.hydra.job.name} #{num}",
            tags={"hydra.sweep": self.sweep_id, "hydra.job.num": str(num), "hydra.overrides": " ".join(overrides)},
            azure_input=OmegaConf.select(config, "data.azure_input"),
            lettucify_overrides=lettucify_compute,
        )
        job.environment_variables["PYTHONPATH"] = plugin_pythonpath()
        parent_run = os.environ.get(PARENT_RUN_ENV)
        if parent_run:  # the sweep's MLflow run (lettucify.sweep), which the job's run joins
            job.environment_variables[PARENT_RUN_ENV] = parent_run
        (job_dir / JOB_SPEC).write_text(entities.job_yaml(job))
        return Point(num, overrides, config, job_dir, compute, job)

    # ------------------------------------------------------------------ backend: local
    def run_here(self, points: List[Point]) -> List[JobReturn]:
        from lettucify.azure.entities import RUN_OUTPUT
        from lettucify.azure.local import run_job_locally
        from lettucify.errors import LettucifyError

        # The jobs' processes run in sessions of their own, out of Ctrl-C's reach: this stops them.
        stop = threading.Event()

        def run(point: Point) -> JobReturn:
            result = point.job_dir / RETURN_FILE
            result.unlink(missing_ok=True)  # a rerun in the same folder must not read the last run's
            status = run_job_locally(point.job, point.job_dir / "local_run", paths={RUN_OUTPUT: str(point.job_dir)},
                                     stop=stop)
            if result.is_file():
                return pickle.loads(result.read_bytes())
            return point.returned(JobStatus.FAILED, LettucifyError(
                f"job #{point.num} in {point.job_dir} exited with status {status} without a result; "
                "its error is in its output"))

        with ThreadPoolExecutor(self.max_concurrent) as pool:
            try:
                return list(pool.map(run, points))
            except KeyboardInterrupt:
                stop.set()
                pool.shutdown(cancel_futures=True)
                raise

    # ------------------------------------------------------------------ backend: azure
    def submit(self, points: List[Point]) -> List[JobReturn]:
        from lettucify.azure import client, entities
        from lettucify.azure.submit import warn_if_retired
        from lettucify.errors import LettucifyError

        clusters = {p.compute.azure.cluster.name: p.compute for p in points}
        for compute in clusters.values():
            warn_if_retired(compute)
        returns: Dict[int, JobReturn] = {}
        for point in points:
            if point.compute.azure.dry_run:
                log.info("#%d: dry run, nothing submitted: %s", point.num, point.job_dir / JOB_SPEC)
                returns[point.num] = point.returned(JobStatus.COMPLETED, None)
        live = [p for p in points if p.num not in returns]
        if not live:
            return [returns[p.num] for p in points]

        workspaces = {json.dumps(OmegaConf.to_container(p.compute.azure.workspace, resolve=True), sort_keys=True)
                      for p in live}
        if len(workspaces) > 1:
            raise LettucifyError("a sweep submits to one Azure ML workspace; its points name several "
                                 "(compute.azure.workspace)")
        azure = client.connect(live[0].compute.azure.workspace)
        for name in {p.compute.azure.cluster.name for p in live}:
            azure.ensure_cluster(entities.cluster(clusters[name].azure.cluster))

        submitted: Dict[int, Any] = {}
        ended: Dict[int, str] = {}
        try:
            returns.update(self.submit_all(azure, live, submitted))
            if self.wait:
                self.follow(azure, submitted, ended)
                returns.update({p.num: self.result(azure, p, submitted[p.num], ended[p.num])
                                for p in live if p.num in ended})
        except KeyboardInterrupt:
            running = [job.name for num, job in submitted.items() if num not in ended]
            log.warning("interrupted: cancelling %d Azure ML jobs", len(running))
            for name in running:
                try:
                    azure.cancel(name)
                except Exception as err:  # one that cannot be cancelled must not spare the others
                    log.error("could not cancel %s: %s", name, err)
            raise
        if not self.wait:
            log.info("%d jobs submitted, not followed (hydra.launcher.wait=false)", len(submitted))
        return [returns[p.num] for p in points]

    def submit_all(self, azure: Any, points: List[Point], submitted: Dict[int, Any]) -> Dict[int, JobReturn]:
        """Submit concurrently; one refused job fails its own point. ``submitted`` fills as they land."""
        from lettucify.azure.submit import save_submission

        def submit_one(point: Point) -> Any:
            job = azure.submit(point.job)
            submitted[point.num] = job
            save_submission(job, point.job_dir)
            log.info("#%d submitted as Azure ML job %s: %s", point.num, job.name, job.studio_url)
            return job

        returns: Dict[int, JobReturn] = {}
        with ThreadPoolExecutor(self.max_concurrent) as pool:
            futures = [(point, pool.submit(submit_one, point)) for point in points]
            try:
                for point, future in futures:
                    try:
                        returns[point.num] = point.returned(JobStatus.COMPLETED, future.result().name)
                    except Exception as err:  # azure-ai-ml's and the service's errors alike
                        log.error("#%d was not submitted: %s", point.num, err)
                        returns[point.num] = point.returned(JobStatus.FAILED, err)
            except KeyboardInterrupt:
                # Submissions in flight still land in `submitted` (the pool waits for them), to be cancelled.
                pool.shutdown(cancel_futures=True)
                raise
        return returns

    def follow(self, azure: Any, submitted: Dict[int, Any], ended: Dict[int, str]) -> None:
        """Poll until every submitted job has ended; ``ended`` maps each to its final status."""
        from lettucify.azure import client

        last: Dict[int, str] = {}
        while len(ended) < len(submitted):
            for num, job in submitted.items():
                if num in ended:
                    continue
                status = azure.status(job.name)
                if status != last.get(num):
                    log.info("#%d %s: %s", num, job.name, status)
                    last[num] = status
                if status in client.FINAL_STATES:
                    ended[num] = status
            if len(ended) < len(submitted):
                time.sleep(self.poll_interval_s)

    def result(self, azure: Any, point: Point, job: Any, status: str) -> JobReturn:
        """The JobReturn that the job's node 0 wrote to its output, or a failure naming the job."""
        from lettucify.azure import client
        from lettucify.azure.entities import RUN_OUTPUT
        from lettucify.errors import LettucifyError
        from lettucify.sweep.job import RESULT_FILE

        where = f"Azure ML job {job.name} (#{point.num}, {job.studio_url})"
        if status != client.COMPLETED:
            error = LettucifyError(f"{where} ended {status}; its logs are in the Studio")
        else:
            try:
                output = azure.download_output(job.name, RUN_OUTPUT, point.job_dir / "azure")
                if (output / RESULT_FILE).is_file():  # the job's row of the sweep's summary
                    shutil.copyfile(output / RESULT_FILE, point.job_dir / RESULT_FILE)
                return pickle.loads((output / RETURN_FILE).read_bytes())
            except Exception as err:  # a failed download or a missing result fails this point only
                error = LettucifyError(f"{where} completed, but its result did not come back: {err}")
        # Hydra's sweeper raises the first failure only: each one is in the log.
        log.error("%s", error)
        return point.returned(JobStatus.FAILED, error)
