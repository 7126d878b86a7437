"""Regenerate the food16 results table: train each model with three seeds, evaluate, tabulate.

    LETTUCIFY_DATA_DIR=../shared/datasets python experiments/food16_results.py

Runs `python -m lettucify` for every (model, seed) whose run folder under
outputs/results/food16/ has no metrics.json yet (so an interrupted regeneration
picks up where it stopped), then reads each run's metrics.json and checkpoint,
writes experiments/results/food16.md and the better model's confusion matrix, and
replaces the table between the results markers in README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "outputs" / "results" / "food16"
RESULTS = REPO / "experiments" / "results"
README = REPO / "README.md"
START, END = "<!-- food16-results:start -->", "<!-- food16-results:end -->"

# (label in the table, run folder name, overrides): the default config, the same recipe
# refit on all training photos, and the original project's CNN.
MODELS = [
    ("efficientnet_lite0 (default)", "efficientnet_lite0", []),
    ("efficientnet_lite0, refit on train + val", "efficientnet_lite0_refit", ["experiment=food16_refit"]),
    ("cnn16", "cnn16", ["experiment=food16_cnn16"]),
]
SEEDS = [0, 1, 2]


def run_dir(name: str, seed: int) -> Path:
    return RUNS / name / f"seed{seed}"


def command(overrides: list[str], seed: int) -> str:
    return " ".join(["python -m lettucify", *overrides, f"seed={seed}"])


def train(name: str, overrides: list[str], seed: int) -> None:
    folder = run_dir(name, seed)
    if (folder / "metrics.json").is_file():
        return
    print(f"training {name} seed {seed} -> {folder}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "lettucify", *overrides, f"seed={seed}", "trainer.progress=lines",
         "logger=none", f"hydra.run.dir={folder}"],
        check=True,
    )


def summary(name: str) -> dict:
    metrics = [json.loads((run_dir(name, s) / "metrics.json").read_text()) for s in SEEDS]
    minutes = [
        sum(r["epoch_time_s"] for r in torch.load(run_dir(name, s) / "checkpoints" / "last.pt",
                                                   weights_only=True)["state"]["history"]) / 60
        for s in SEEDS
    ]

    def mean_sd(key: str) -> str:
        values = [m[key] for m in metrics]
        return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"

    per_seed = ", ".join(f"{100 * m['top1']:.1f}" for m in metrics)
    return {
        "top1": statistics.mean(m["top1"] for m in metrics),
        "row": f"{mean_sd('top1')} | {mean_sd('macro_f1')} | {mean_sd('macro_auc')} | {per_seed} | "
        f"{statistics.mean(minutes):.1f}",
    }


def table() -> tuple[str, str]:
    rows, best = [], None
    for label, name, overrides in MODELS:
        result = summary(name)
        rows.append(f"| {label} | `{command(overrides, 0).replace('seed=0', 'seed=S')}` | {result['row']} |")
        if best is None or result["top1"] > best[1]:
            best = (name, result["top1"])
    text = "\n".join(
        [
            f"food16 test split: 189 photos, 16 classes (chance 6.25%). Mean ± sample standard deviation "
            f"over seeds {', '.join(map(str, SEEDS))} (S); training minutes on a 2-core CPU.",
            "",
            "| model | command | top-1 % | macro-F1 % | macro AUC % | top-1 per seed | train min |",
            "|---|---|--:|--:|--:|--:|--:|",
            *rows,
        ]
    )
    return text, best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only tabulate existing runs")
    args = parser.parse_args()
    if not args.no_train:
        for _, name, overrides in MODELS:
            for seed in SEEDS:
                train(name, overrides, seed)

    text, best = table()
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir(best, SEEDS[0]) / "confusion_matrix.png", RESULTS / "food16_confusion_matrix.png")
    image = f"![Confusion matrix of {best}, seed {SEEDS[0]}](experiments/results/food16_confusion_matrix.png)"
    (RESULTS / "food16.md").write_text(f"# food16 results\n\n{text}\n")
    readme = README.read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    README.write_text(f"{head}{START}\n{text}\n\n{image}\n{END}{tail}")
    print(text)


if __name__ == "__main__":
    main()
