from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf


@dataclass
class OptunaResumeSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.hydra_optuna_resume_sweeper.sweeper.OptunaResumeSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_resume", node=OptunaResumeSweeperConf, provider="optuna_resume_sweeper"
)
