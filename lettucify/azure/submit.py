"""``python -m lettucify compute=azure_t4 [overrides]``: one distributed command job on Azure ML.

The job's command is this command line's own overrides, run on every node with
Lettucify's torchrun launcher at the rendezvous Azure ML hands out. ``job.yaml`` and
``compute.yaml`` are written to the run folder every time; with
``compute.azure.dry_run=true`` that is all that happens.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from omegaconf import DictConfig

from lettucify.azure import client as azure_client
from lettucify.azure import entities
from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

# Each node writes its run folder to the job's output, node0/ being the one that trains rank 0.
NODE_RUN_DIR = f"hydra.run.dir=${{{{outputs.{entities.RUN_OUTPUT}}}}}/node${{NODE_RANK:-0}}"
SUBMITTED = "azure_job.json"


def warn_if_retired(compute: DictConfig) -> None:
    if compute.azure.cluster.retired:
        log.warning("%s is retired: %s", compute.azure.cluster.size, compute.azure.cluster.retired)


def warn_if_local_data(cfg: DictConfig) -> None:
    if cfg.data.root and not cfg.data.azure_input:
        log.warning("data.root=%s is a folder on this machine, which the job will not have: "
                    "set data.azure_input to it (uploaded) or to a data asset", cfg.data.root)


def job_command(overrides: Sequence[str]) -> list[str]:
    """``python -m lettucify`` with the user's overrides; Hydra's own settings stay local."""
    # Hydra's settings and the submission's own (dry_run, wait) stay here.
    kept = [o for o in overrides if not o.lstrip("~+").startswith(("hydra.", "hydra/", "compute.azure."))]
    return ["python", "-m", "lettucify", *entities.quoted(kept), NODE_RUN_DIR]


def build(cfg: DictConfig, overrides: Sequence[str]) -> tuple[Any, Any]:
    """The job and its cluster for this run, validated."""
    compute = cfg.compute
    warn_if_local_data(cfg)
    job = entities.command_job(
        compute,
        job_command(overrides),
        experiment_name=cfg.logger.experiment_name,
        display_name=cfg.logger.run_name or " ".join(overrides) or "lettucify",
        tags={"lettucify.overrides": " ".join(overrides)},
        azure_input=cfg.data.azure_input,
    )
    return job, entities.cluster(compute.azure.cluster)


def save_submission(submitted: azure_client.Submitted, folder: Path) -> None:
    """azure_job.json beside the job's spec: its Azure ML name and Studio URL."""
    (folder / SUBMITTED).write_text(json.dumps({"name": submitted.name, "studio_url": submitted.studio_url}) + "\n")


def submit(cfg: DictConfig, overrides: Sequence[str]) -> Optional[Dict[str, float]]:
    """Submit (or, dry, write) the run's job; with ``wait`` follow it and return its metrics."""
    azure_client.require_sdk()
    run_dir = Path(cfg.paths.output_dir)
    warn_if_retired(cfg.compute)
    job, cluster = build(cfg, overrides)
    job_path, compute_path = entities.write_specs(job, cluster, run_dir)
    if cfg.compute.azure.dry_run:
        log.info("dry run: wrote %s and %s; nothing submitted. Run it here with: "
                 "python -m lettucify.azure.local %s", job_path, compute_path, job_path)
        return None

    azure = azure_client.connect(cfg.compute.azure.workspace)
    azure.ensure_cluster(cluster)
    submitted = azure.submit(job)
    save_submission(submitted, run_dir)
    log.info("submitted Azure ML job %s: %s", submitted.name, submitted.studio_url)
    if not cfg.compute.azure.wait:
        return None
    return follow(azure, submitted.name, run_dir)


def follow(azure: azure_client.AzureML, name: str, run_dir: Path) -> Optional[Dict[str, float]]:
    """Stream the job's logs to its end; fetch rank 0's run folder and return its metrics."""
    azure.stream(name)
    status = azure.status(name)
    if status != azure_client.COMPLETED:
        raise LettucifyError(f"Azure ML job {name} ended {status}; its logs are in the Studio")
    node0 = azure.download_output(name, entities.RUN_OUTPUT, run_dir / "azure") / "node0"
    metrics = json.loads((node0 / "metrics.json").read_text())
    log.info("job %s: test top-1 %.4f, macro-F1 %.4f; run folder in %s",
             name, metrics["top1"], metrics["macro_f1"], node0)
    score = node0 / "score.json"
    return json.loads(score.read_text())["metrics"] if score.is_file() else None
