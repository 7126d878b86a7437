"""Record an experiment's result beside it, from runs made now: never by hand.

    python experiments/record.py food16_finetune                 # train seeds 0, 1, 2; record
    python experiments/record.py food16_cnn16 --seeds 0 1 2 3 4
    python experiments/record.py food16_optuna_search --sweep-dir outputs/searches/food16
    python experiments/record.py --readme                        # the README's food16 table

A training experiment is run once per seed, as one sweep (`python -m lettucify -m
experiment=<name> seed=0,1,2`, each seed in outputs/results/<name>/seed<S>); a seed
whose folder holds a completed result.json is not run again, so an interrupted
recording picks up where it stopped. results/<name>.json then holds each metric's mean,
sample standard deviation and per-seed values, with the dataset's fingerprint, the
commit, the date and where it ran. A search experiment is recorded from its finished
sweep folder: results/<name>.json (the best job and every job's objective) and
results/<name>.md (the sweep's summary). A pull request that changes an experiment
shows its new numbers in the same diff (experiments/review.py prints both).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lettucify.errors import LettucifyError  # noqa: E402
from lettucify.review.compose import job_config  # noqa: E402
from lettucify.sweep.job import COMPLETED, JobResult  # noqa: E402
from lettucify.sweep.summary import MARKDOWN_FILE, PLOT_FILE, collect, command_line, override_map  # noqa: E402
from lettucify.tracking.run import describe_device, git_state  # noqa: E402

RESULTS = REPO / "experiments" / "results"
RUNS = REPO / "outputs" / "results"
README = REPO / "README.md"
START, END = "<!-- food16-results:start -->", "<!-- food16-results:end -->"
# The README's food16 table: (experiment, its label).
TABLE = [
    ("food16_finetune", "efficientnet_lite0 (the default)"),
    ("food16_optuna_best", "efficientnet_lite0, the Optuna search's pick"),
    ("food16_cnn16", "cnn16, the original project's CNN"),
]
METRICS = ("test_top1", "test_top5", "test_macro_f1", "test_macro_auc", "val_acc", "train_time_s")


def where(cfg: dict) -> str:
    device = describe_device(str(cfg["compute"]["device"]))
    return f"{device}, {platform.machine()} with {os.cpu_count()} CPU cores"


def fingerprint(cfg: dict) -> str:
    """The dataset fingerprint the runs' MLflow runs carry: their data, scanned as they scan it."""
    from hydra.utils import instantiate

    from lettucify.tracking import dataset_fingerprint

    data = instantiate(cfg["data"], data_dir=cfg["paths"]["data_dir"], cache_dir=cfg["paths"]["cache_dir"],
                       _convert_="all")
    scan = data.scan()
    return dataset_fingerprint(scan.root, scan.samples)


def provenance(name: str, cfg: dict, command: str) -> dict:
    git = git_state(REPO)
    return {
        "experiment": name,
        "command": command,
        "dataset_fingerprint": fingerprint(cfg),
        "commit": git.get("git_commit"),
        "dirty": git.get("git_dirty") == "true",
        "date": datetime.date.today().isoformat(),
        "where": where(cfg),
    }


def train_seeds(name: str, seeds: Sequence[int]) -> Path:
    """Each seed of the experiment, as one sweep; seeds already recorded as completed are skipped."""
    runs = RUNS / name
    todo = [s for s in seeds if not done(runs / f"seed{s}")]
    if todo:
        print(f"{name}: training seeds {', '.join(map(str, todo))} in {runs}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "lettucify", "-m", f"experiment={name}", f"seed={','.join(map(str, todo))}",
             "logger=none", "trainer.progress=lines", f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=seed${seed}"],
            cwd=REPO, check=True,
        )
    return runs


def done(folder: Path) -> bool:
    result = JobResult.read(folder)
    return result is not None and result.status == COMPLETED


def over_seeds(results: List[JobResult]) -> Dict[str, dict]:
    metrics = {}
    for key in METRICS:
        values = [r.metrics[key] for r in results if key in r.metrics]
        if len(values) == len(results):
            metrics[key] = {"mean": statistics.mean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                            "per_seed": values}
    return metrics


def record_training(name: str, seeds: Sequence[int]) -> dict:
    runs = train_seeds(name, seeds)
    results = [JobResult.read(runs / f"seed{s}") for s in seeds]
    cfg = job_config([f"experiment={name}"])
    record = provenance(name, cfg, f"python -m lettucify experiment={name} seed=S")
    record.update({"kind": "training", "seeds": list(seeds), "metrics": over_seeds(results)})
    return record


def record_search(name: str, sweep_dir: Path) -> dict:
    cfg = job_config([f"experiment={name}"])
    summary = collect(sweep_dir, cfg["optimized_metric"], cfg["optimized_direction"] == "maximize")
    if summary.best is None:
        raise LettucifyError(f"{sweep_dir}: no completed job to record")
    shutil.copyfile(sweep_dir / MARKDOWN_FILE, RESULTS / f"{name}.md")
    if (sweep_dir / PLOT_FILE).is_file():
        shutil.copyfile(sweep_dir / PLOT_FILE, RESULTS / f"{name}.png")
    record = provenance(name, cfg, f"python -m lettucify experiment={name}")
    record.update({
        "kind": "search",
        "objective": summary.objective,
        "best": {"job": summary.best.num, "value": summary.best.value, "command": command_line(summary.best.overrides),
                 "metrics": summary.best.metrics},
        "jobs": [{"job": r.num, "status": r.status, "value": r.value,
                  "swept": {k: v for k, v in override_map(r.overrides).items() if k in summary.swept}}
                 for r in summary.rows],
    })
    return record


def percent(metric: dict) -> str:
    return f"{100 * metric['mean']:.1f} ± {100 * metric['std']:.1f}"


def load_record(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise LettucifyError(f"no record of {name} ({path}): record it first, python experiments/record.py {name}")
    return json.loads(path.read_text())


def readme_table() -> str:
    rows = []
    for name, label in TABLE:
        record = load_record(name)
        m = record["metrics"]
        per_seed = ", ".join(f"{100 * v:.1f}" for v in m["test_top1"]["per_seed"])
        rows.append(f"| {label} | `{record['command']}` | {percent(m['test_top1'])} | {percent(m['test_macro_f1'])} | "
                    f"{percent(m['test_macro_auc'])} | {per_seed} | {m['train_time_s']['mean'] / 60:.1f} |")
    seeds = load_record(TABLE[0][0])
    return "\n".join([
        f"food16 test split: 189 photos, 16 classes (chance 6.25%). Mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, seeds['seeds']))} (S), as `experiments/record.py` recorded them "
        f"({seeds['date']}, {seeds['where']}); train min is the training time of one seed.",
        "",
        "| model | command | top-1 % | macro-F1 % | macro AUC % | top-1 per seed | train min |",
        "|---|---|--:|--:|--:|--:|--:|",
        *rows,
    ])


def write_readme() -> None:
    text = readme_table()
    first = TABLE[0][0]
    matrix = RUNS / first / "seed0" / "confusion_matrix.png"
    if matrix.is_file():
        shutil.copyfile(matrix, RESULTS / "food16_confusion_matrix.png")
    image = f"![Confusion matrix of {first}, seed 0](experiments/results/food16_confusion_matrix.png)"
    head, rest = README.read_text().split(START)
    _, tail = rest.split(END)
    README.write_text(f"{head}{START}\n{text}\n\n{image}\n{END}{tail}")
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", help="experiments/experiment/<name>.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep-dir", type=Path, help="record this finished sweep of a search experiment")
    parser.add_argument("--readme", action="store_true", help="regenerate the README's food16 table")
    args = parser.parse_args(argv)
    if not args.experiment and not args.readme:
        parser.error("name an experiment, or --readme")
    try:
        if args.experiment:
            RESULTS.mkdir(parents=True, exist_ok=True)
            record = (record_search(args.experiment, args.sweep_dir) if args.sweep_dir
                      else record_training(args.experiment, args.seeds))
            path = RESULTS / f"{args.experiment}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"recorded {path}")
        if args.readme:
            write_readme()
    except (LettucifyError, subprocess.CalledProcessError) as err:
        print(f"record.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
