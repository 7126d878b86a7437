"""azure-ai-ml entities for Lettucify's jobs, built offline: cluster, environment, command job.

A job runs ``torchrun`` on each node (``process_count_per_instance=1``): Azure ML
starts the command once per node with ``NODE_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set, and the command hands those to Lettucify's own torchrun
launcher, which starts one worker per GPU. The same code path as ``compute=torchrun``
here, so a job behaves as a local multi-node run does.
"""

from __future__ import annotations

import configparser
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml
from omegaconf import DictConfig

from lettucify.config import REPO_ROOT, ClusterTier
from lettucify.errors import LettucifyError

# The extras of setup.cfg that a job's environment installs besides install_requires
# (azureml-mlflow, so that MLflow logs to the workspace).
JOB_EXTRAS = ("azureml-job",)
DATA_INPUT = "data"
# The job's read-write output: each node writes its run folder under it, node<rank>/.
RUN_OUTPUT = "run"
# What each node's command adds: torchrun at the rendezvous Azure ML hands out.
NODE_ARGS = ["compute.node_rank=$NODE_RANK", "compute.master_addr=$MASTER_ADDR", "compute.master_port=$MASTER_PORT"]


def cluster(spec: DictConfig) -> Any:
    from azure.ai.ml.entities import AmlCompute

    return AmlCompute(
        name=spec.name,
        size=spec.size,
        min_instances=spec.min_instances,
        max_instances=spec.max_instances,
        idle_time_before_scale_down=spec.idle_time_before_scale_down,
        tier=ClusterTier(spec.tier).value,
    )


def project_requirements(setup_cfg: Path = REPO_ROOT / "setup.cfg") -> List[str]:
    """install_requires plus the job extras, read from setup.cfg so the two never drift."""
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise LettucifyError(f"{setup_cfg} not found: Azure ML jobs need the project's source tree")

    def lines(text: str) -> List[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    requirements = lines(parser.get("options", "install_requires"))
    for extra in JOB_EXTRAS:
        requirements += lines(parser.get("options.extras_require", extra))
    return requirements


def environment(azure: DictConfig) -> Any:
    """The configured environment, or one built from the project's own dependency list."""
    if azure.environment:
        return azure.environment
    from azure.ai.ml.entities import Environment

    python = f"python={sys.version_info.major}.{sys.version_info.minor}"
    return Environment(
        image=azure.base_image,
        conda_file={
            "name": "lettucify",
            "channels": ["conda-forge"],
            "dependencies": [python, "pip", {"pip": project_requirements()}],
        },
        description="Lettucify's dependencies from setup.cfg",
    )


def data_input(azure_input: str) -> Any:
    """A registered data asset (azureml:name:version) or a local folder to upload, read-only."""
    from azure.ai.ml import Input

    if azure_input.startswith("azureml:"):
        path = azure_input
    else:
        local = Path(azure_input).expanduser().resolve()
        if not local.is_dir():
            raise LettucifyError(f"data.azure_input={azure_input} is neither azureml:<name>:<version> nor a folder")
        path = str(local)
    return Input(type="uri_folder", path=path, mode="ro_mount")


def command_job(
    compute: DictConfig,
    command: Sequence[str],
    *,
    experiment_name: str,
    display_name: str,
    tags: Mapping[str, str],
    azure_input: Optional[str] = None,
    inputs: Optional[Dict[str, Any]] = None,
    lettucify_overrides: bool = True,
) -> Any:
    """One distributed command job: ``command`` (shell words, already quoted) run on each node.

    ``compute`` is an azureml compute config (Lettucify's compute=azure_*). With
    ``lettucify_overrides`` each node's command also gets ``compute.backend=torchrun``,
    the rendezvous on several nodes, and ``data.root`` at the mounted data input.
    Every job has one read-write output, ``run``, for what the nodes write back.
    """
    from azure.ai.ml import Output, PyTorchDistribution, command as command_builder

    inputs = dict(inputs or {})
    words = list(command)
    if lettucify_overrides:
        words.append("compute.backend=torchrun")
        if compute.instance_count > 1:
            words += NODE_ARGS
    if azure_input:
        inputs[DATA_INPUT] = data_input(azure_input)
        words.append(f"data.root=${{{{inputs.{DATA_INPUT}}}}}")
    node = command_builder(
        code=str(REPO_ROOT),
        command=" ".join(words),
        inputs=inputs,
        outputs={RUN_OUTPUT: Output(type="uri_folder", mode="rw_mount")},
        environment=environment(compute.azure),
        compute=compute.azure.cluster.name,
        instance_count=compute.instance_count,
        distribution=PyTorchDistribution(process_count_per_instance=1),
        environment_variables={"PYTHONUNBUFFERED": "1"},
        experiment_name=experiment_name,
        display_name=display_name,
        tags=dict(tags),
    )
    job = node._to_job()  # the builder's own YAML does not load back; a CommandJob's does
    try:
        job._validate()
    except Exception as err:  # azure-ai-ml's ValidationException
        raise LettucifyError(f"the Azure ML job does not validate: {err}") from None
    return job


def quoted(overrides: Sequence[str]) -> List[str]:
    return [shlex.quote(override) for override in overrides]


def spec_yaml(spec: Mapping[str, Any]) -> str:
    """An entity's ``_to_dict()`` as YAML that azure.ai.ml's ``load_*`` read back."""
    return yaml.safe_dump(json.loads(json.dumps(spec)), sort_keys=False)  # OrderedDicts to plain types


def job_yaml(job: Any) -> str:
    """The job as YAML that azure.ai.ml.load_job reads back.

    A CommandJob's own dump writes local input paths as ``azureml:<path>`` (a data
    asset reference); they are written back as the local folders they are.
    """
    spec = job._to_dict()
    for name, value in (job.inputs or {}).items():
        path = getattr(value, "path", None)
        if path and not str(path).startswith("azureml:"):
            spec["inputs"][name]["path"] = str(path)
    return spec_yaml(spec)


def write_specs(job: Any, compute_cluster: Any, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    job_path, compute_path = folder / "job.yaml", folder / "compute.yaml"
    job_path.write_text(job_yaml(job))
    compute_cluster.dump(compute_path)
    return job_path, compute_path
