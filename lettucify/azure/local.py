"""Run an Azure ML command job here: its exact command, one shell per emulated node and process.

    python -m lettucify.azure.local outputs/runs/<day>/<time>/job.yaml [--input data=/path] [--workdir DIR]

Each process gets what Azure ML sets for a PyTorch job (MASTER_ADDR, MASTER_PORT,
WORLD_SIZE, NODE_RANK, RANK, LOCAL_RANK) and runs in a folder of its node's own, as
if on its own machine; ``${{inputs.x}}`` becomes the local folder (or the one given)
and ``${{outputs.x}}`` a folder under the work folder. This is how the tests prove that
a job's command trains; it needs no Docker and no workspace.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load(job: Union[str, Path, Any]) -> Any:
    if isinstance(job, (str, Path)):
        from azure.ai.ml import load_job

        if not Path(job).is_file():
            raise LettucifyError(f"no job spec at {job}")
        return load_job(str(job))
    return job


def local_paths(job: Any, workdir: Path, given: Mapping[str, str]) -> Dict[tuple[str, str], str]:
    """Where each ``${{inputs.x}}`` / ``${{outputs.x}}`` of the command points here."""
    paths: Dict[tuple[str, str], str] = {}
    for name, spec in (job.inputs or {}).items():
        path = given.get(name) or str(getattr(spec, "path", spec))
        if path.startswith("azureml:") or not Path(path).exists():
            raise LettucifyError(
                f"input {name!r} is {path}, which is not a folder here; give a local copy with --input {name}=/path"
            )
        paths["inputs", name] = str(Path(path).resolve())
    for name in job.outputs or {}:
        folder = Path(given.get(name) or workdir / "outputs" / name).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        paths["outputs", name] = str(folder)
    return paths


def node_command(job: Any, paths: Mapping[tuple[str, str], str]) -> str:
    def replace(match: "re.Match[str]") -> str:
        key = (match.group(1), match.group(2))
        if key not in paths:
            raise LettucifyError(f"the job's command refers to {match.group(0)}, which the job does not define")
        return paths[key]

    return _REFERENCE.sub(replace, job.command)


def run_job_locally(
    job: Union[str, Path, Any],
    workdir: Path,
    *,
    paths: Optional[Mapping[str, str]] = None,
    timeout_s: Optional[float] = None,
    stop: Optional[threading.Event] = None,
) -> int:
    """Run the job's command as its nodes would; return the first failing status, else 0.

    ``paths`` maps input or output names to local folders (inputs that are data assets
    need one). When one process fails, the others are stopped, as Azure ML does; setting
    ``stop`` (from another thread) stops them all, and the status is then 130.
    """
    job = load(job)
    workdir = Path(workdir).resolve()
    nodes = int(job.resources.instance_count or 1) if job.resources else 1
    per_node = int(getattr(job.distribution, "process_count_per_instance", None) or 1)
    command = node_command(job, local_paths(job, workdir, paths or {}))
    code = Path(str(job.code)).resolve() if job.code else None
    base_env = {**os.environ, **{k: str(v) for k, v in (job.environment_variables or {}).items()}}
    # "python" in the command is this interpreter, as it is the environment's on the cluster.
    base_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base_env.get("PATH", "")])
    if code is not None:
        base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), base_env.get("PYTHONPATH")]))
    master_port = free_port()

    processes: List[subprocess.Popen] = []
    for node in range(nodes):
        for local_rank in range(per_node):
            cwd = workdir / f"node{node}" / f"process{local_rank}" if per_node > 1 else workdir / f"node{node}"
            cwd.mkdir(parents=True, exist_ok=True)
            env = {
                **base_env,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(master_port),
                "WORLD_SIZE": str(nodes * per_node),
                "NODE_RANK": str(node),
                "RANK": str(node * per_node + local_rank),
                "LOCAL_RANK": str(local_rank),
                "LOCAL_WORLD_SIZE": str(per_node),
            }
            log.info("node %d, process %d: %s", node, local_rank, command)
            # Its own session, so that stopping a node stops everything it started.
            processes.append(subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, start_new_session=True))
    return wait_all(processes, timeout_s, stop)


def wait_all(processes: List[subprocess.Popen], timeout_s: Optional[float],
             stop: Optional[threading.Event] = None) -> int:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    status = 0
    try:
        while any(p.poll() is None for p in processes):
            if stop is not None and stop.is_set():
                status = 130  # as a shell reports an interrupted command
                break
            failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
            if failed or (deadline is not None and time.monotonic() > deadline):
                status = failed[0] if failed else 124
                break
            time.sleep(0.2)
        else:
            status = next((p.returncode for p in processes if p.returncode != 0), 0)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return status


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lettucify.azure.local", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="a job.yaml written by compute=azure_* (dry run or not)")
    parser.add_argument("--input", "--output", dest="paths", action="append", default=[], metavar="NAME=PATH",
                        help="a local folder for a data-asset input, or for an output")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the emulated nodes run (default: local_run/ beside the job spec)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        paths = dict(item.split("=", 1) for item in args.paths)
    except ValueError:
        parser.error("--input/--output take NAME=PATH")
    workdir = args.workdir or Path(args.job).resolve().parent / "local_run"
    try:
        status = run_job_locally(args.job, workdir, paths=paths)
    except LettucifyError as err:
        log.error("%s", err)
        return 2
    log.info("the job's command %s (exit status %d); outputs in %s",
             "succeeded" if status == 0 else "failed", status, workdir / "outputs")
    return status


if __name__ == "__main__":
    sys.exit(main())
