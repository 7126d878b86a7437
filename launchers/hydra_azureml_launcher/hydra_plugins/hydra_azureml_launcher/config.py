"""The launcher's options, registered as hydra/launcher=azureml and hydra/launcher=azureml_local.

Hydra imports this module whenever it scans for plugins, in every Hydra app of the
environment, so it imports nothing of Lettucify's: its schemas would land in that app's
ConfigStore.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it
# is in sys.modules, where dataclasses look string annotations up.
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


class Backend(str, Enum):
    azure = "azure"  # submit each sweep point to an Azure ML workspace
    local = "local"  # run each point's job here, as its nodes would run on the cluster


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
    # Not typed AzureComputeConf, which this module must not import: keys beyond these are
    # added with +, and that schema checks and completes the whole at launch.
    compute: Any = field(
        default_factory=lambda: {"azure": {"cluster": {"name": "lettucify-t4", "size": "STANDARD_NC4AS_T4_V3"}}}
    )


@dataclass
class LocalAzureMLLauncherConf(AzureMLLauncherConf):
    backend: Backend = Backend.local


ConfigStore.instance().store(
    group="hydra/launcher", name="azureml", node=AzureMLLauncherConf, provider="hydra_azureml_launcher"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="azureml_local", node=LocalAzureMLLauncherConf, provider="hydra_azureml_launcher"
)
