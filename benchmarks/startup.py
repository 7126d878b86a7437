"""Start-up time: ``python -m lettucify --cfg job`` and ``--help`` against a bare Hydra app.

    python benchmarks/startup.py [--repeats 7]

The reference is the least a Hydra app with this config tree can cost: a script of a few
lines whose ``@hydra.main`` reads the same ``conf/`` (and ``experiments/``), with the
typed schema's nodes stored empty, so that it composes the same defaults but imports
nothing of Lettucify's. Each command runs as a fresh process, the two apps interleaved
and repeated, so that machine noise falls on both alike; the table gives the median wall
times and Lettucify's ratio to the reference (the target is at most 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BARE_APP = '''\
import re
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

CONF = Path({conf!r})
OmegaConf.register_new_resolver("lettucify_root", lambda: {root!r})
# The schema's nodes, untyped: the same defaults lists compose without Lettucify's code.
store = ConfigStore.instance()
store.store(name="lettucify_schema", node={{}})
for path in CONF.rglob("*.yaml"):
    for group, name in re.findall(r"/schema/(\\w+)@_here_: (\\w+)", path.read_text()):
        store.store(group=f"schema/{{group}}", name=name, node={{}})


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def app(cfg):
    pass


app()
'''


def wall_time(command: list, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command and app (default 7)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        bare = Path(scratch) / "bare_app.py"
        bare.write_text(BARE_APP.format(conf=str(REPO / "conf"), root=str(REPO)))
        apps = {"lettucify": [sys.executable, "-m", "lettucify"], "bare Hydra": [sys.executable, str(bare)]}
        flags = {"--cfg job": ["--cfg", "job"], "--help": ["--help"]}
        # Both apps must answer (and alike) before they are timed.
        for name, app in apps.items():
            for flag in flags.values():
                subprocess.run([*app, *flag], cwd=scratch, check=True, capture_output=True)
        times = {(flag, name): [] for flag in flags for name in apps}
        for _ in range(args.repeats):
            for flag, argv in flags.items():
                for name, app in apps.items():
                    times[flag, name].append(wall_time([*app, *argv], Path(scratch)))

    print(f"start-up, median of {args.repeats} runs (seconds; spread = max - min)")
    print(f"{'command':<12} {'lettucify':>10} {'spread':>7} {'bare Hydra':>11} {'spread':>7} {'ratio':>6}")
    for flag in flags:
        ours, reference = times[flag, "lettucify"], times[flag, "bare Hydra"]
        print(
            f"{flag:<12} {statistics.median(ours):>10.3f} {max(ours) - min(ours):>7.3f} "
            f"{statistics.median(reference):>11.3f} {max(reference) - min(reference):>7.3f} "
            f"{statistics.median(ours) / statistics.median(reference):>5.2f}x"
        )


if __name__ == "__main__":
    main()
