"""How training's cost grows: images/s and peak memory as the dataset grows and as processes grow.

    python benchmarks/scaling.py [--model cnn16] [--copies 1 4 16] [--processes 1 2]
        [--epochs 2] [--photos $LETTUCIFY_DATA_DIR/food16]

Each row is the training job itself (``python -m lettucify task=train``, ``logger=none``)
in a process of its own, with the data cache on, on a dataset made of the food16 training
photos repeated ``copies`` times (hard links, or copies where linking is refused: each is
a distinct file to scan, decode and cache). Rows with more processes use
``compute=torchrun compute.nproc_per_node=N`` on the 1x dataset, with the same global
batch. It prints the last epoch's training images/s (all processes together: the first
epoch also warms the loader), the time to build the data cache, the job's wall time and
the peak resident memory of its largest process.

Peak memory counts the cache's mapped pages that the process touched; they are the
operating system's page cache, shared by every process reading the same cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Runs the job and prints the peak RSS (KiB) of the largest process in it, launcher or rank.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def repeated_dataset(photos: Path, copies: int, into: Path) -> Path:
    """``photos`` with its training images ``copies`` times over (its test images once)."""
    root = into / f"food16x{copies}"
    for source in sorted((photos / "train").rglob("*")):
        if not source.is_file():
            continue
        for copy in range(copies):
            target = root / "train" / source.parent.name / f"{copy}-{source.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system, or a read-only one
                shutil.copy2(source, target)
    shutil.copytree(photos / "test", root / "test", copy_function=os.link if same_device(photos, into) else shutil.copy2)
    return root


def same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def run_job(model: str, dataset: Path, processes: int, epochs: int, scratch: Path) -> dict:
    run_dir = scratch / f"run-{dataset.name}-{processes}p"
    overrides = [
        f"model={model}", "data=imagefolder", f"data.root={dataset}", "data.cache=on",
        f"paths.cache_dir={scratch / 'cache'}", f"hydra.run.dir={run_dir}", f"trainer.epochs={epochs}",
        "logger=none",
    ]
    if processes > 1:
        overrides += ["compute=torchrun", f"compute.nproc_per_node={processes}"]
    started = time.perf_counter()
    job = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "lettucify", *overrides],
        cwd=scratch, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    if job.returncode:
        sys.exit(f"the job on {dataset.name} with {processes} process(es) failed:\n{job.stderr[-3000:]}")
    epoch_speeds = [float(speed) for speed in re.findall(r"([\d.]+) img/s", job.stderr)]
    cache = re.search(r"data cache: (\d+) images decoded .* in ([\d.]+) s", job.stderr)
    return {
        "dataset": dataset.name,
        "processes": processes,
        "train_images": int(cache.group(1)) if cache else None,
        "images_per_s": epoch_speeds[-1],
        "cache_build_s": float(cache.group(2)) if cache else None,
        "wall_s": wall,
        "peak_rss_mb": int(re.search(r"peak_rss_kib (\d+)", job.stderr).group(1)) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--photos", type=Path, default=Path(os.environ.get("LETTUCIFY_DATA_DIR", REPO.parent / "shared" / "datasets"))
        / "food16", help="an ImageFolder dataset (train/ and test/)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        datasets = {copies: repeated_dataset(args.photos, copies, scratch) for copies in sorted({1, *args.copies})}
        for copies in args.copies:
            rows.append(run_job(args.model, datasets[copies], 1, args.epochs, scratch))
        for processes in args.processes:
            if processes > 1:
                rows.append(run_job(args.model, datasets[1], processes, args.epochs, scratch))

    print(f"\n{args.model} training, {args.epochs} epochs, data cache on (images/s: the last epoch, all processes)")
    print(f"{'dataset':<12} {'processes':>9} {'cached photos':>13} {'images/s':>9} {'cache build s':>13} "
          f"{'job wall s':>10} {'peak RSS MB':>11}")
    for row in rows:
        build = f"{row['cache_build_s']:.1f}" if row["cache_build_s"] is not None else "reused"
        photos = row["train_images"] if row["train_images"] is not None else "-"
        print(f"{row['dataset']:<12} {row['processes']:>9} {photos:>13} {row['images_per_s']:>9.1f} "
              f"{build:>13} {row['wall_s']:>10.1f} {row['peak_rss_mb']:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
