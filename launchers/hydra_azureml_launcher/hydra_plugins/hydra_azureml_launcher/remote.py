"""usage: python -m hydra_plugins.hydra_azureml_launcher.remote <hydra_job.pkl> <output dir> [key=value ...]

One sweep point of hydra/launcher=azureml*, on each node of its job. The pickle is what
the launcher shipped: the task function, the point's config, Hydra's context and global
state. Trailing ``key=value`` words are set in the config: the settings only a node knows,
such as ``compute.node_rank=$NODE_RANK``. Node 0 runs the task in ``<output dir>``, node
``k`` in ``<output dir>/node<k>``, and node 0 writes the task's JobReturn there for the
launcher. Nothing is printed on stdout but what the task prints.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

# What node 0 writes in its output folder: a cloudpickle of the hydra JobReturn.
RETURN_FILE = "hydra_return.pkl"


def main(argv: Optional[List[str]] = None) -> int:
    # Imported here: Hydra imports this module whenever it scans for plugins.
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals
    from omegaconf import OmegaConf, open_dict, read_write
    from omegaconf.basecontainer import BaseContainer

    args = sys.argv[1:] if argv is None else argv
    settings = args[2:]
    if len(args) < 2 or any("=" not in word for word in settings):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    payload = cloudpickle.loads(Path(args[0]).read_bytes())  # imports the modules the task needs

    setup_globals()
    own_resolvers = dict(BaseContainer._resolvers)
    Singleton.set_state(payload["singleton_state"])
    # The parent's resolvers add those this process lacks (ones registered at run time);
    # this process's own stay, as they may know this machine (paths, say).
    BaseContainer._resolvers.update(own_resolvers)

    config = payload["config"]
    with read_write(config), open_dict(config):
        for word in settings:
            key, value = word.split("=", 1)
            OmegaConf.update(config, key, value)
    node = int(os.environ.get("NODE_RANK", "0"))
    folder = Path(args[1]).resolve() if node == 0 else Path(args[1]).resolve() / f"node{node}"
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        # The job's own folder, wherever the sweep's dir and subdir point on the submitting machine.
        config.hydra.runtime.output_dir = str(folder)

    ret = run_job(
        hydra_context=payload["hydra_context"],
        task_function=payload["task_function"],
        config=config,
        job_dir_key="hydra.runtime.output_dir",
        job_subdir_key=None,
    )
    if node == 0:
        (folder / RETURN_FILE).write_bytes(cloudpickle.dumps(ret))
    if ret.status != JobStatus.COMPLETED:
        # run_job keeps the task's exception for the launcher; the job's log shows it here.
        traceback.print_exception(ret._return_value, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
