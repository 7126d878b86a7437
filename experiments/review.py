"""What a change does to the experiments, as Markdown: for each experiment changed between two
git revisions, what its resolved config and its recorded results change.

    python experiments/review.py origin/main HEAD >> $GITHUB_STEP_SUMMARY

An experiment is changed when its experiments/experiment/<name>.yaml or its recorded results
experiments/results/<name>.json is added, modified or deleted between BASE and HEAD; when a
file under conf/ changed, also every experiment (and the default config) whose resolved
config differs. Its config diff is `lettucify config diff`'s (``key: old -> new``; a new
experiment against HEAD's default config); its results diff the same over the JSON's keys
(``metrics.test_top1.mean: 0.511 -> 0.604``).

Each revision's conf/ and experiments/ are exported (git archive) into a temporary folder
and composed there, with the schema (lettucify/config.py) of the code running this script.
A config that does not compose is reported in its section. Exit status 0; 2 (one line) for
a revision or a folder that git does not know.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from lettucify.errors import LettucifyError
from lettucify.review.compose import EXPERIMENTS, experiment_names, job_config
from lettucify.review.diff import differences

EXPERIMENT_FILES = PurePosixPath(EXPERIMENTS.as_posix())
RESULTS = PurePosixPath("experiments/results")
EXPORTED = ["conf", "experiments"]
DEFAULTS = None  # the default config, no experiment= at all

# A config or a results file as read at one revision: its tree, or why there is none.
Outcome = Tuple[Optional[Dict[str, Any]], Optional[str]]


class GitError(LettucifyError):
    """A revision or a folder that git does not know."""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {' '.join(done.stderr.split()) or f'exit status {done.returncode}'}")
    return done.stdout


class Tree:
    """One revision's conf/ and experiments/, exported into ``root``, composed and read on demand."""

    def __init__(self, repo: Path, revision: str, root: Path) -> None:
        self.root = root
        self.label = f"{revision} ({git(repo, 'rev-parse', '--short', f'{revision}^{{commit}}').strip()})"
        self._configs: Dict[Optional[str], Outcome] = {}
        present = git(repo, "ls-tree", "--name-only", revision, "--", *EXPORTED).split()
        if present:
            archive = subprocess.Popen(["git", "-C", str(repo), "archive", revision, "--", *present], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=True)
            if archive.wait() != 0:
                raise GitError(f"git archive {revision}: exit status {archive.returncode}")

    def has(self, name: Optional[str]) -> bool:
        return name is DEFAULTS or (self.root / EXPERIMENT_FILES / f"{name}.yaml").is_file()

    def config(self, name: Optional[str]) -> Outcome:
        if name not in self._configs:
            try:
                overrides = [] if name is DEFAULTS else [f"experiment={name}"]
                self._configs[name] = job_config(overrides, self.root), None
            except LettucifyError as err:
                self._configs[name] = None, f"does not compose at {self.label}: {err}"
        return self._configs[name]

    def results(self, name: str) -> Outcome:
        path = RESULTS / f"{name}.json"
        if not (self.root / path).is_file():
            return {}, None
        try:
            recorded = json.loads((self.root / path).read_text())
        except (OSError, ValueError) as err:
            return None, f"{path} at {self.label} is no JSON: {err}"
        return (recorded, None) if isinstance(recorded, dict) else (None, f"{path} at {self.label} is no JSON object")


def diff_of(old: Outcome, new: Outcome) -> Union[List[str], str]:
    """The ``key: old -> new`` lines, or why there are none."""
    return new[1] or old[1] or differences(old[0] or {}, new[0] or {})


def block(lines: Union[List[str], str], none: str) -> str:
    if isinstance(lines, str):
        return f"**{lines}**\n"
    return "```text\n" + "\n".join(lines) + "\n```\n" if lines else f"{none}\n"


def section(name: Optional[str], base: Tree, head: Tree, status: str) -> str:
    parts = [f"### {'the default config' if name is DEFAULTS else f'`{name}`'} ({status})\n"]
    if head.has(name) and not base.has(name):
        parts.append("What it changes from the default config:\n\n"
                     + block(diff_of(head.config(DEFAULTS), head.config(name)), "Nothing: it is the default config."))
    elif head.has(name):
        parts.append("Config:\n\n" + block(diff_of(base.config(name), head.config(name)), "No change."))
    if name is not DEFAULTS:
        old, new = base.results(name), head.results(name)
        parts.append(f"Recorded results (`{RESULTS / (name + '.json')}`):\n\n"
                     + block(diff_of(old, new), "No change." if old[0] or new[0] else "None recorded."))
    return "\n".join(parts)


def status_of(name: str, base: Tree, head: Tree, edited: Set[str]) -> str:
    if name not in edited:
        return "results changed"
    return "deleted" if not head.has(name) else "new" if not base.has(name) else "modified"


def review(repo: Path, base_rev: str, head_rev: str) -> str:
    files = [PurePosixPath(f) for f in git(repo, "diff", "--name-only", "--no-renames", base_rev, head_rev,
                                            "--", *EXPORTED).splitlines()]
    edited = {f.stem for f in files if f.parent == EXPERIMENT_FILES and f.suffix == ".yaml"}
    recorded = {f.stem for f in files if f.parent == RESULTS and f.suffix == ".json"}
    with tempfile.TemporaryDirectory() as base_dir, tempfile.TemporaryDirectory() as head_dir:
        base, head = Tree(repo, base_rev, Path(base_dir)), Tree(repo, head_rev, Path(head_dir))
        sections = [(name, status_of(name, base, head, edited)) for name in sorted(edited | recorded)]
        if any(f.parts[0] == "conf" for f in files):
            # A change under conf/ reaches every experiment that does not set what changed.
            others = (set(experiment_names(base.root)) & set(experiment_names(head.root))) - edited
            sections = [(name, "changed through conf/") for name in [DEFAULTS, *sorted(others)]
                        if name not in recorded and diff_of(base.config(name), head.config(name))] + sections
        text = (f"## Experiments: {base.label} → {head.label}\n\n"
                "Resolved configs, secrets masked, composed from each revision's conf/ and experiments/ with the "
                "schema of the code running the review.\n")
        if not sections:
            return text + "\nNo experiment changed.\n"
        return text + "".join("\n" + section(name, base, head, status) for name, status in sections)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the revision before, e.g. origin/main")
    parser.add_argument("head", help="the revision after, e.g. HEAD")
    parser.add_argument("--repo", type=Path, default=Path("."), help="a folder of the git checkout (default: here)")
    args = parser.parse_args(argv)
    try:
        repo = Path(git(args.repo, "rev-parse", "--show-toplevel").strip())
        sys.stdout.write(review(repo, args.base, args.head))
    except GitError as err:
        print(f"review: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
