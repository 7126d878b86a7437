"""``compute.backend=torchrun``: the workers started by PyTorch's elastic launcher.

    this process ─ python -m lettucify.compute.torchrun <torchrun args> ─ agent
                                                 └─ workers: python -m lettucify.worker <run dir>/resolved_config.yaml

The config is resolved here, once, and every worker reads that file. A SIGTERM (or
Ctrl-C) to this process goes to the agent, which passes it to the workers: they finish
the step, write a checkpoint and exit, and this command exits 75 (130), as a single
process does. The agent is run through this module so that a stop it was asked for
ends with that status instead of a traceback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from lettucify.train.stop import EXIT_INTERRUPTED, EXIT_PREEMPTED

log = logging.getLogger(__name__)

# What the workers of one launch share: the config, resolved once, and rank 0's metrics.
RESOLVED_CONFIG = "resolved_config.yaml"
SCORE = "score.json"
# How long the agent lets stopped workers finish their step and checkpoint before it kills
# them (torch's default is 30 s; a CPU step of a big batch plus a checkpoint can take more).
SHUTDOWN_TIMEOUT_S = 300
_STOP_STATUS = {signal.SIGTERM: EXIT_PREEMPTED, signal.SIGINT: EXIT_INTERRUPTED}
_PR_SET_PDEATHSIG = 1


def launch(cfg: DictConfig) -> Optional[Dict[str, float]]:
    # Only torchrun's own workers train here directly, even where a cluster scheduler set
    # WORLD_SIZE for one process per node.
    if "TORCHELASTIC_RUN_ID" in os.environ:
        from lettucify.train.pipeline import train

        return train(cfg)
    status, score = launch_torchrun(cfg, Path(cfg.paths.output_dir))
    if status != 0:
        sys.exit(status)
    return score


def torchrun_command(compute: DictConfig, config_path: Path) -> List[str]:
    command = [sys.executable, "-m", __name__, f"--nproc-per-node={compute.nproc_per_node}",
               f"--max-restarts={compute.max_restarts}"]
    if compute.master_addr:
        # Static rendezvous at node 0, where a cluster scheduler says it is.
        command += [f"--nnodes={compute.nnodes}", f"--node-rank={compute.node_rank}",
                    f"--master-addr={compute.master_addr}", f"--master-port={compute.master_port}"]
    elif compute.nnodes == 1 and not compute.rdzv_endpoint:
        command.append("--standalone")
    else:
        command += [f"--nnodes={compute.nnodes}", f"--node-rank={compute.node_rank}",
                    f"--rdzv-backend={compute.rdzv_backend}", f"--rdzv-endpoint={compute.rdzv_endpoint}"]
    return [*command, "-m", "lettucify.worker", str(config_path)]


def _die_with_parent() -> None:
    """In the agent, before exec: a SIGTERM when this launcher dies, even by SIGKILL."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the agent then outlives a killed launcher
        pass


def launch_torchrun(cfg: DictConfig, run_dir: Path) -> Tuple[int, Optional[Dict[str, float]]]:
    """Start the workers; return (exit status, rank 0's metrics)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / RESOLVED_CONFIG
    OmegaConf.save(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), config_path)
    command = torchrun_command(cfg.compute, config_path)
    log.info("starting %s", " ".join(command))
    env = {
        **os.environ,
        # Workers make their own store rather than share the agent's: with a shared one, a
        # restarted group can read the previous round's addresses and never connect
        # (pytorch/pytorch#135712).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S)),
    }
    # Its own session: a terminal's Ctrl-C reaches this process alone, which passes it on
    # once, rather than the agent and every worker at the same moment.
    agent = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    received: List[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        log.warning("received %s: the workers finish their step, checkpoint and stop", signal.Signals(signum).name)
        agent.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in _STOP_STATUS}
    try:
        status = agent.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        log.warning("stopped; rerun the same command (with hydra.run.dir=%s) to continue", run_dir)
        return _STOP_STATUS[signal.Signals(received[0])], None
    if status != 0:
        log.error("torchrun: the workers failed with exit status %d; the failing rank and its error are above", status)
        return status, None
    score = run_dir / SCORE
    return 0, json.loads(score.read_text())["metrics"] if score.is_file() else None


def run_agent(argv: List[str]) -> None:
    """torchrun itself, ending with the stop status when a SIGTERM/SIGINT stopped it."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    try:
        main(argv)
    except SignalException as stop:
        sys.exit(_STOP_STATUS.get(signal.Signals(stop.sigval), EXIT_PREEMPTED))


if __name__ == "__main__":
    run_agent(sys.argv[1:])
