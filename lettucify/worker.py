"""What each process that torchrun starts runs: the task, on the config the launcher resolved.

    python -m lettucify.compute.torchrun --nproc-per-node=2 -m lettucify.worker <run dir>/resolved_config.yaml

No Hydra here: the workers read the one resolved config and make no run folders of
their own. Rank 0 logs to the run folder's lettucify.log as well as stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from lettucify import distributed
from lettucify.compute.torchrun import SCORE
from lettucify.errors import LettucifyError
from lettucify.train.pipeline import train

log = logging.getLogger("lettucify")


def configure_logging(run_dir: Path) -> None:
    rank = os.environ.get("RANK", "0")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if rank == "0":
        handlers.append(logging.FileHandler(run_dir / "lettucify.log"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format=f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s",
    )


@record  # a crash's traceback reaches torchrun's failure summary, with its rank
def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lettucify.worker <resolved config.yaml>")
    cfg = OmegaConf.load(sys.argv[1])
    run_dir = Path(cfg.paths.output_dir)
    configure_logging(run_dir)
    try:
        score = train(cfg)
    except LettucifyError as err:
        log.error("%s", err)
        sys.exit(2)
    if distributed.is_main():
        (run_dir / SCORE).write_text(json.dumps({"metrics": score}) + "\n")
    distributed.shutdown()


if __name__ == "__main__":
    main()
