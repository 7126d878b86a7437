"""``lettucify config show`` and ``lettucify config diff``: what a job runs with, and what two differ in.

    lettucify config show experiment=food16_cnn16
    lettucify config diff "" experiment=food16_cnn16          # what the experiment changes
    lettucify config diff outputs/runs/<a> runs:/<run_id>

``show`` prints the resolved config as YAML; ``diff`` one ``key: old -> new`` line per
difference and exits 1 when there is one, 0 when there is none. A side that names no
config is one line on stderr, exit 2. lettucify/cli.py hands ``config ...`` here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from lettucify.errors import LettucifyError
from lettucify.review import sources
from lettucify.review.compose import job_config
from lettucify.review.diff import as_yaml, differences

EXIT_SAME, EXIT_DIFFERENT, EXIT_BAD_ARGUMENT = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lettucify config", description="Review configs: show one, diff two.")
    commands = top.add_subparsers(dest="command", required=True)
    show = commands.add_parser(
        "show", help="the resolved config of a job, keys sorted, secrets masked",
        description="Print the config `python -m lettucify OVERRIDES` would run with, resolved, as YAML "
        "(paths.output_dir stays ${hydra:runtime.output_dir}: the run folder is named as the run starts).",
    )
    show.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=food16_cnn16 optimizer.lr=1e-3")
    diff = commands.add_parser(
        "diff", help="what differs between two configs: key: old -> new; exit 1 if anything does",
        description=f"Each side is {sources.WHAT}; quote several overrides as one argument, \"\" is the defaults.",
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--tracking-uri", help="the MLflow store of runs:/ sides (default: $MLFLOW_TRACKING_URI, "
                      "else outputs/mlflow.db)")
    return top


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "show":
            sys.stdout.write(as_yaml(job_config(args.overrides)))
            return EXIT_SAME
        lines = differences(sources.read(args.old, args.tracking_uri), sources.read(args.new, args.tracking_uri))
    except LettucifyError as err:
        print(f"lettucify config {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    if not lines:
        print("no difference", file=sys.stderr)
        return EXIT_SAME
    print("\n".join(lines))
    return EXIT_DIFFERENT
