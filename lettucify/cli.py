"""Hydra entry point of ``python -m lettucify`` and the ``lettucify`` console script.

Importing this module imports no torch: ``--help``, ``--cfg`` and ``--info`` answer at
once; the task imports what it needs when it runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lettucify.config import REPO_ROOT  # importing it registers the schema
from lettucify.errors import LettucifyError

log = logging.getLogger("lettucify")




@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """Run the task; return its score for sweepers (validation accuracy for training)."""
    try:
        if cfg.task == "evaluate":
            from lettucify.evaluate.task import evaluate

            return evaluate(cfg)
        if cfg.task == "promote":
            from lettucify.tracking import promote

            promote(cfg.registry.name, cfg.registry.alias, cfg.registry.promote_to, cfg.logger.tracking_uri)
            return None
        if cfg.compute.launcher == "azureml":
            from lettucify.azure.submit import submit

            return submit(cfg, HydraConfig.get().overrides.task)
        # compute=torchrun starts torchrun, even where a cluster scheduler set WORLD_SIZE
        # for one process per node; only torchrun's own workers train here directly.
        if cfg.compute.launcher == "torchrun" and "TORCHELASTIC_RUN_ID" not in os.environ:
            from lettucify.distributed import launch_torchrun

            status, score = launch_torchrun(cfg, Path(cfg.paths.output_dir))
            if status != 0:
                sys.exit(status)
            return score
        from lettucify.train.loop import train

        return train(cfg)
    except LettucifyError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
