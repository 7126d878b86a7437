"""One training run's record in MLflow: params, tags, per-epoch metrics, artifacts, status.

``open_tracker`` gives a context manager around the run; mlflow is imported only
when tracking is enabled, when the tracker is opened.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
import socket
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import DictConfig, OmegaConf

from lettucify.config import REPO_ROOT
from lettucify.tracking.secrets import MASK, Masker, flatten, is_secret_key
from lettucify.tracking.store import artifact_location, setting, use_tracking_uri

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation).
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_RUN_NAME = 250
MAX_ERROR = 1000
_BATCH = 100  # params or metrics per log_batch call
# The run's resolved, masked config, at the root of its artifacts (`lettucify config diff runs:/<id>` reads it).
CONFIG_ARTIFACT = "config.yaml"


# --------------------------------------------------------------------------- what
def dataset_fingerprint(root: Union[str, Path], samples: Iterable[Union[Path, Tuple[Path, Any]]]) -> str:
    """sha256 (hex) of the sorted (path relative to ``root``, size in bytes) of the images.

    ``samples`` holds paths or ``(path, label)`` pairs, as the data module's sets do.
    Renaming, adding, removing or re-encoding a file changes it; the order does not.
    """
    root = Path(root)
    entries = []
    for sample in samples:
        path = Path(sample[0] if isinstance(sample, tuple) else sample)
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            relative = Path(os.path.relpath(path, root)).as_posix()
        entries.append((relative, path.stat().st_size))
    digest = hashlib.sha256()
    for relative, size in sorted(entries):
        digest.update(f"{relative}\t{size}\n".encode())
    return digest.hexdigest()


def git_state(root: Path = REPO_ROOT) -> Dict[str, str]:
    """``{"git_commit": sha, "git_dirty": "true"|"false"}``; empty outside a git checkout."""

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    state = {"git_commit": commit.strip()}
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        state["git_dirty"] = "true" if status.strip() else "false"
    return state


def describe_device(device: str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if not device.startswith("cuda"):
        return device
    try:
        import torch

        if torch.cuda.is_available():
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    except Exception:  # a tag is not worth failing a run for
        pass
    return device


def hydra_overrides() -> List[str]:
    """The command line's overrides when running under Hydra, else ``[]``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return list(HydraConfig.get().overrides.task)
    except Exception:
        pass
    return []


def mask_override(override: str, masker: Masker) -> str:
    """``logger.token=abc`` -> ``logger.token=***``; other secrets in the value masked too."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key.lstrip("+~")):
        return f"{key}={MASK}"
    return masker.text(override)


def run_name(experiment_name: str, overrides: Sequence[str], masker: Masker) -> str:
    """``lettucify model=cnn16,optimizer.lr=0.003`` (at most 250 characters)."""
    name = experiment_name
    if overrides:
        name += " " + ",".join(mask_override(o, masker) for o in overrides)
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 3] + "..."


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def one_line(text: str, limit: int = MAX_ERROR) -> str:
    return _truncate(" ".join(text.split()), limit)


def _numeric(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of the experiment ``name``, created (with its artifact location) if need be."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))
        except MlflowException:  # created meanwhile by a concurrent run
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(f"MLflow experiment {name!r} is deleted; restore it or set logger.experiment_name")
    return experiment.experiment_id


# --------------------------------------------------------------------------- orphans
HOST_TAG = "lettucify.host"
PID_TAG = "lettucify.pid"
PROCESS_START_TAG = "lettucify.process_start"
NOTE_TAG = "lettucify.note"
# A sweep's jobs find their parent run here (lettucify.sweep.callback sets it, the Azure
# ML launcher passes it on); MLflow nests a run under the one its tag names.
PARENT_RUN_ENV = "LETTUCIFY_PARENT_RUN_ID"
PARENT_RUN_TAG = "mlflow.parentRunId"


def process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks since boot, Linux), or None if unknown.

    With the pid it names one process: a pid reused after a reboot or a wrap-around
    has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counting from the name's end


def process_tags() -> Dict[str, str]:
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = process_start(pid)
    if started is not None:
        tags[PROCESS_START_TAG] = started
    return tags


def process_gone(pid: int, started: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return started is not None and process_start(pid) not in (None, started)


def end_orphaned_runs(client: Any, keep: Optional[str] = None) -> List[str]:
    """End as KILLED every RUNNING run of the store whose process on this host is gone.

    Runs of other hosts are left alone: their processes cannot be checked from here.
    Returns the ids of the runs ended.
    """
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'", max_results=1000
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == keep or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        if not process_gone(pid, tags.get(PROCESS_START_TAG)):
            continue
        note = (f"ended as KILLED by Lettucify: its process {pid} on {host} stopped without ending the run "
                f"(killed); resuming the training in {tags.get('run_dir', 'its run folder')} continues this run")
        client.set_tag(run.info.run_id, NOTE_TAG, note)
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("MLflow: run %s was left RUNNING by process %d, which is gone; ended it as KILLED",
                    run.info.run_id, pid)
        ended.append(run.info.run_id)
    return ended


# --------------------------------------------------------------------------- trackers
class NullTracker:
    """``logger.enabled=false``: records nothing, imports nothing."""

    run_id: Optional[str] = None
    enabled = False

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        return False

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_epoch(self, record: Mapping[str, Any], step: int) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "test_", step: Optional[int] = None) -> None:
        pass

    def log_artifacts(self, paths: Iterable[Union[str, Path]], artifact_path: Optional[str] = None) -> None:
        pass



class MlflowTracker:
    """An MLflow run around a training run. Use through :func:`open_tracker`.

    On enter: experiment, run, params, tags and the config artifact. The run is, in
    order: the run already active in this process, the one ``$MLFLOW_RUN_ID`` names
    (Azure ML jobs), the one ``resume_run_id`` names (a resumed training continues
    the run its checkpoint recorded, metrics at the next epoch's step), else a new one.
    On exit the run ends FINISHED, FAILED (an exception; its message in the ``error``
    tag) or KILLED (``SystemExit`` with a non-zero status, ``KeyboardInterrupt``); the
    exception propagates. A run this tracker attached to because it was already active
    in this process is left running for its owner to end.

    A process killed outright (SIGKILL, out of memory, power) cannot end its run, so
    each run records its host and process (tags ``lettucify.host``, ``lettucify.pid``,
    ``lettucify.process_start``). Opening a tracker ends every RUNNING run of the
    store whose process on this host is gone as KILLED, with a ``lettucify.note``;
    resuming that training later continues (and reopens) the same run.

    Logging during the run (epochs, metrics, artifacts) warns instead of raising: a
    tracking-server hiccup must not cost the training run.
    """

    enabled = True

    def __init__(
        self,
        logger_cfg: Any,
        cfg: Optional[DictConfig],
        run_dir: Union[str, Path],
        overrides: Optional[Sequence[str]] = None,
        resume_run_id: Optional[str] = None,
    ) -> None:
        self.logger_cfg = logger_cfg
        self.resume_run_id = resume_run_id
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.overrides = list(overrides) if overrides is not None else hydra_overrides()
        self.masker = Masker()
        self.tracking_uri: Optional[str] = None
        self.run_id: Optional[str] = None
        self._owns_run = False
        self._fresh_run = False
        # Whether this process's host and pid are the run's (not Azure ML's run, nor an active one).
        self._owns_process = False
        self._client: Any = None

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self) -> "MlflowTracker":
        import mlflow

        resolved = self._resolved_config()
        self.masker.collect(resolved)
        masked = self.masker.tree(resolved)

        active = mlflow.active_run()
        if active is not None:  # its owner chose the store: keep it
            self.tracking_uri = mlflow.get_tracking_uri()
        else:
            self.tracking_uri = use_tracking_uri(setting(self.logger_cfg, "tracking_uri"))
        self._client = mlflow.MlflowClient()
        if active is not None:
            run = active
            log.info("MLflow: attaching to the active run %s", run.info.run_id)
        elif os.environ.get("MLFLOW_RUN_ID"):
            run = mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
            self._owns_run = True
            log.info("MLflow: attaching to run %s ($MLFLOW_RUN_ID)", run.info.run_id)
        elif self.resume_run_id and self._run_exists(self.resume_run_id):
            run = mlflow.start_run(run_id=self.resume_run_id)
            self._owns_run = True
            self._owns_process = True
            log.info("MLflow: continuing run %s, which the checkpoint recorded", run.info.run_id)
        else:
            experiment = setting(self.logger_cfg, "experiment_name") or "lettucify"
            experiment_id = self._experiment_id(experiment)
            name = setting(self.logger_cfg, "run_name") or run_name(experiment, self.overrides, self.masker)
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.masker.text(name))
            self._owns_run = self._fresh_run = self._owns_process = True
        self.run_id = run.info.run_id
        try:
            self._log_start(masked)
        except BaseException as err:
            self._end(err)
            raise
        self._quietly(end_orphaned_runs, self._client, keep=self.run_id)
        log.info("MLflow run %s in %s", self.run_id, self._redacted_uri())
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        self._end(exc)
        return False

    def _end(self, exc: Optional[BaseException]) -> None:
        tags: Dict[str, str] = {}
        if exc is None:
            status = "FINISHED"
        elif isinstance(exc, SystemExit):
            code = exc.code
            status = "FINISHED" if code in (None, 0) else "KILLED"
            tags["exit_status"] = str(code if isinstance(code, int) or code is None else 1)
        elif isinstance(exc, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
            message = str(exc).strip().splitlines()
            tags["error"] = one_line(self.masker.text(f"{type(exc).__name__}: {message[0] if message else ''}"))
        for key, value in tags.items():
            self._quietly(self._client.set_tag, self.run_id, key, value)
        if not self._owns_run:
            return
        import mlflow

        def end() -> None:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status=status)
            else:
                self._client.set_terminated(self.run_id, status=status)

        try:
            end()
        except Exception as err:  # one more try: a run must not stay RUNNING
            log.warning("MLflow: ending run %s failed (%s); retrying", self.run_id, one_line(str(err), 200))
            self._quietly(end)
        if status != "FINISHED":
            log.warning("MLflow run %s ended %s", self.run_id, status)

    # ------------------------------------------------------------------ setup helpers
    def _resolved_config(self) -> Dict[str, Any]:
        if self.cfg is None:
            return {}
        if isinstance(self.cfg, DictConfig):
            return OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
        return dict(self.cfg)

    def _experiment_id(self, name: str) -> str:
        return experiment_id(self._client, self.tracking_uri, name)

    def _run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            log.warning("MLflow: the checkpoint's run %s is not in %s (or is deleted); starting a new run",
                        run_id, self._redacted_uri())
            return False
        return True

    def _log_start(self, masked: Dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [
            Param(key, _truncate(self.masker.text(str(value)), MAX_PARAM_VALUE))
            for key, value in flatten(masked).items()
            if key
        ]
        # An attached run may hold params already (MLflow's are immutable): warn on a clash.
        log_batch = self._client.log_batch if self._fresh_run else partial(self._quietly, self._client.log_batch)
        for start in range(0, len(params), _BATCH):
            log_batch(self.run_id, params=params[start : start + _BATCH])
        tags = {
            **git_state(REPO_ROOT),
            "host": socket.gethostname(),
            "run_dir": str(self.run_dir),
            **(process_tags() if self._owns_process else {}),
        }
        tags["device"] = describe_device(str(setting(setting(self.cfg, "compute"), "device") or "cpu"))
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent and parent != self.run_id:  # a job of a sweep: its run is the sweep run's child
            tags[PARENT_RUN_TAG] = parent
        if self.overrides:
            tags["hydra_overrides"] = " ".join(mask_override(o, self.masker) for o in self.overrides)
        self.set_tags(tags, quiet=False)
        text = yaml.safe_dump(masked, sort_keys=False, allow_unicode=True)
        self._client.log_text(self.run_id, text, CONFIG_ARTIFACT)

    def _redacted_uri(self) -> str:
        return self.masker.text(self.tracking_uri or "")

    def _quietly(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            log.warning("MLflow: %s failed: %s", getattr(fn, "__name__", fn), self.masker.text(one_line(str(err), 300)))
            return None

    # ------------------------------------------------------------------ during the run
    def set_tags(self, tags: Mapping[str, Any], quiet: bool = True) -> None:
        """Set run tags (values masked, stringified, truncated to MLflow's limit)."""
        from mlflow.entities import RunTag

        entries = [
            RunTag(key, _truncate(self.masker.text(str(value)), MAX_TAG_VALUE))
            for key, value in tags.items()
            if value is not None
        ]
        if not entries:
            return
        if quiet:
            self._quietly(self._client.log_batch, self.run_id, tags=entries)
        else:
            self._client.log_batch(self.run_id, tags=entries)

    def _log_numbers(self, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), _BATCH):
            self._quietly(self._client.log_batch, self.run_id, metrics=entries[start : start + _BATCH])

    def log_epoch(self, record: Mapping[str, Any], step: int) -> None:
        """The numeric values of a history record (all but ``epoch``) at ``step``."""
        self._log_numbers({k: v for k, v in record.items() if k != "epoch" and _numeric(v)}, step)

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "test_", step: Optional[int] = None) -> None:
        """Final metrics, named ``<prefix><key>`` (unless the key has the prefix already).

        Only numeric scalars; None, strings, lists and mappings are skipped.
        """
        named = {
            (key if key.startswith(prefix) else f"{prefix}{key}"): value
            for key, value in metrics.items()
            if _numeric(value)
        }
        self._log_numbers(named, step or 0)

    def log_artifacts(self, paths: Iterable[Union[str, Path]], artifact_path: Optional[str] = None) -> None:
        """Upload files (a folder: its contents under its name); missing paths are skipped."""
        for path in map(Path, paths):
            if path.is_file():
                self._quietly(self._client.log_artifact, self.run_id, str(path), artifact_path)
            elif path.is_dir():
                target = f"{artifact_path}/{path.name}" if artifact_path else path.name
                self._quietly(self._client.log_artifacts, self.run_id, str(path), target)
            else:
                log.info("MLflow: no artifact %s, skipped", path)


Tracker = Union[NullTracker, MlflowTracker]


def open_tracker(
    logger_cfg: Any,
    cfg: Optional[DictConfig],
    run_dir: Union[str, Path],
    overrides: Optional[Sequence[str]] = None,
    resume_run_id: Optional[str] = None,
) -> Tracker:
    """The tracker for a run: ``with open_tracker(cfg.logger, cfg, run_dir) as tracker: ...``.

    ``overrides``: the command-line overrides for the run name; by default Hydra's
    (when Hydra is running), else none. ``resume_run_id``: the run to continue (a
    resumed checkpoint's), when it is still in the store.
    """
    if logger_cfg is None or not setting(logger_cfg, "enabled", True):
        return NullTracker()
    return MlflowTracker(logger_cfg, cfg, run_dir, overrides, resume_run_id)
