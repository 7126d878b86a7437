"""The launcher's options, registered as hydra/launcher=azureml and hydra/launcher=azureml_local.

Hydra imports this module whenever it scans for plugins, so it imports nothing heavy:
Lettucify's config schema is hydra and omegaconf only.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it
# is in sys.modules, where dataclasses look string annotations up.
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore

from lettucify.config import AzureClusterConf, AzureComputeConf, AzureConf


class Backend(str, Enum):
    azure = "azure"  # submit each sweep point to an Azure ML workspace
    local = "local"  # run each point's job here, as its nodes would run on the cluster


def default_compute() -> AzureComputeConf:
    return AzureComputeConf(azure=AzureConf(cluster=AzureClusterConf(name="lettucify-t4", size="STANDARD_NC4AS_T4_V3")))


@dataclass
class AzureMLLauncherConf:
    _target_: str = "hydra_plugins.hydra_azureml_launcher.launcher.AzureMLLauncher"
    backend: Backend = Backend.azure
    # Follow the jobs to their end and return what each task returned; otherwise
    # return once every job is submitted, each job's return value its Azure ML name.
    wait: bool = False
    # How many submissions (or, locally, jobs) run at once.
    max_concurrent: int = 8
    poll_interval_s: float = 30.0
    # null: the app's logger.experiment_name when it has one, else hydra.job.name.
    experiment_name: Optional[str] = None
    # The cluster, environment and job shape for apps whose config has no Azure compute
    # of its own; a Lettucify sweep point with compute=azure_* uses its own compute.
    compute: AzureComputeConf = field(default_factory=default_compute)


@dataclass
class LocalAzureMLLauncherConf(AzureMLLauncherConf):
    backend: Backend = Backend.local


ConfigStore.instance().store(
    group="hydra/launcher", name="azureml", node=AzureMLLauncherConf, provider="hydra_azureml_launcher"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="azureml_local", node=LocalAzureMLLauncherConf, provider="hydra_azureml_launcher"
)
