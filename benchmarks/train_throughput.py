"""Training throughput: Lettucify's input pipeline against a naive one and against pure compute.

    python benchmarks/train_throughput.py [--models efficientnet_lite0 cnn16] [--repeats 5]
        [--device cpu|cuda] [--photos $LETTUCIFY_DATA_DIR/food16]

The same model, the same food16 training photos and the same training loop
(``lettucify.train.loop.train_one_epoch``: forward, backward, optimizer and schedule
steps), fed three ways:

    a naive      PIL open + convert in ``__getitem__`` every epoch, then the same random
                 crop, flip and normalisation; a default DataLoader (no workers, no pinning)
    b lettucify  the training job's own loader: the decoded-image cache, its uint8 photos
                 augmented a batch at a time on the device (data.augment.batched), the
                 workers and threads derived from the machine
    c compute    the same steps on batches already in the device's memory: the ceiling

efficientnet_lite0 trains at 224 px and cnn16 at 64 px, each with its config's batch size
unless ``--batch-size`` says otherwise (the loaders go round the photos as often as needed).
The pipelines are interleaved and the whole repeated, so that machine noise falls on all
alike; each measurement runs ``--steps`` optimizer steps after one untimed warm-up pass.
It prints images/s (medians over the repeats), their spread ((max - min) / median) and the
ratios b/a and b/c: the medians of each repeat's own ratios, with their range, since the
pipelines of one repeat run back to back, on the machine as it is at that moment. On
``--device cuda`` the runs use the job's GPU settings (compute=local_gpu: mixed precision,
channels_last, pinned memory and non-blocking copies).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lettucify.compute.device import amp_dtype, setup_compute
from lettucify.errors import LettucifyError
from lettucify.train.loop import Fit, train_one_epoch
from lettucify.train.pipeline import scan_data, setup_fit
from lettucify.train.progress import EpochProgress
from lettucify.train.stop import GracefulStop

REPO = Path(__file__).resolve().parents[1]
PIPELINES = ("a naive", "b lettucify", "c compute")
# Optimizer steps per measurement: a few seconds of each model on a 2-core CPU.
DEFAULT_STEPS = {"efficientnet_lite0": 6, "cnn16": 60}


class NaiveImages(Dataset):
    """What a first training script does: open, decode and transform each photo every time."""

    def __init__(self, samples, input_size: int, mean, std, augment) -> None:
        self.samples = samples
        # The job's augmentation, written the usual way: v2 transforms on the PIL image.
        steps = [v2.RandomResizedCrop(input_size, scale=tuple(augment.random_resized_crop_scale), antialias=True)]
        if augment.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.color_jitter > 0:
            jitter = augment.color_jitter
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.transform = v2.Compose(
            [*steps, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def compose(model: str, device: str, photos: Path, cache_dir: Path, batch_size: Optional[int], extra: List[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"model={model}", "data=imagefolder", f"data.root={photos}", f"paths.cache_dir={cache_dir}",
        "compute=local_gpu" if device.startswith("cuda") else "compute=local_cpu", f"compute.device={device}",
        # A long schedule: the learning rate stays sane however many steps are measured.
        "logger=none", "trainer.epochs=1000",
    ]
    if batch_size:
        overrides.append(f"data.batch_size={batch_size}")
    overrides += extra
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


class Steps:
    """``steps`` batches of ``loader``, going round it as often as needed."""

    def __init__(self, loader: Iterable, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.steps)


def measure(run: Fit, cfg, batches: Iterable, augment: Optional[Callable]) -> float:
    """Images/s of the training loop over ``batches`` (with ``augment``: the data cache's, augmented on the device)."""
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    stats = train_one_epoch(
        run.net, batches, run.optimizer, run.scheduler, run.scaler, device=run.device, state=run.state,
        stop=GracefulStop(), progress=EpochProgress(0, 1, len(batches), "lines"), augment=augment, mix=run.mix,
        label_smoothing=cfg.trainer.label_smoothing, grad_clip_norm=cfg.trainer.grad_clip_norm,
        channels_last=cfg.compute.channels_last, dtype=amp_dtype(cfg.compute),
    )
    return stats["images_per_s"]


def pipelines(run: Fit, cfg, steps: int) -> Dict[str, Callable[[], float]]:
    data = run.data
    naive = DataLoader(
        NaiveImages(data.train_set.samples, cfg.model.input_size, cfg.model.mean, cfg.model.std, data.conf.augment),
        batch_size=run.train_loader.batch_size, shuffle=True,
    )
    # The job's own first batches, moved to the device and augmented once: as many as b
    # goes through before it goes round, so that c takes the same steps, the epoch's last
    # and smaller batch included (its optimizer step costs as much as a full batch's).
    prepare = run.augment or (lambda images: images)
    resident = [
        (prepare(images.to(run.device)), labels.to(run.device))
        for images, labels in itertools.islice(iter(run.train_loader), min(steps, len(run.train_loader)))
    ]
    sources = {"a naive": (naive, None), "b lettucify": (run.train_loader, run.augment), "c compute": (resident, None)}
    return {
        name: (lambda source=source, augment=augment: measure(run, cfg, Steps(source, steps), augment))
        for name, (source, augment) in sources.items()
    }


def benchmark(
    model: str, device: str, photos: Path, repeats: int, steps: int, batch_size: Optional[int], extra: List[str]
) -> Dict[str, List[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose(model, device, photos, Path(scratch) / "cache", batch_size, extra)
        torch_device = setup_compute(cfg.compute)
        started = time.perf_counter()
        data, scan = scan_data(cfg, Path(scratch))
        run = setup_fit(cfg, data, scan, torch_device, run_dir=Path(scratch), checkpoint_dir=Path(scratch), extra={})
        print(f"{model}: {len(scan.train)} training photos, data cache ready in "
              f"{time.perf_counter() - started:.1f} s; {run.train_loader.batch_size} images a step, "
              f"{run.train_loader.num_workers} loader workers, {torch.get_num_threads()} torch threads")
        runs = pipelines(run, cfg, steps)
        for measure_once in runs.values():  # warm-up: workers, allocator, kernels
            measure_once()
        figures = {name: [] for name in runs}
        for _ in range(repeats):
            for name, measure_once in runs.items():
                figures[name].append(measure_once())
        del run  # its loader's workers end before the cache folder goes
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "cnn16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, help="optimizer steps per measurement (default: by model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, help="data.batch_size (default: the config's)")
    parser.add_argument("overrides", nargs="*", help="more config overrides for both models, e.g. data.num_workers=1")
    parser.add_argument(
        "--photos", type=Path, default=Path(os.environ.get("LETTUCIFY_DATA_DIR", REPO.parent / "shared" / "datasets"))
        / "food16", help="an ImageFolder dataset (train/ and test/)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    try:
        results = {
            model: benchmark(model, args.device, args.photos, args.repeats, args.steps or DEFAULT_STEPS.get(model, 10),
                             args.batch_size, args.overrides)
            for model in args.models
        }
    except LettucifyError as err:  # a bad --photos, no CUDA device: the job's own one line
        sys.exit(f"train_throughput: {err}")
    print(f"\ntraining images/s on {args.device} ({torch.get_num_threads()} torch threads), "
          f"median of {args.repeats} repeats (spread = (max - min) / median)")
    print(f"{'model':<20}" + "".join(f"{name:>16} {'spread':>6}" for name in PIPELINES)
          + f"{'b/a':>7}{'range':>12}{'b/c':>7}{'range':>12}")
    for model, figures in results.items():
        median = {name: statistics.median(values) for name, values in figures.items()}
        cells = "".join(
            f"{median[name]:>16.1f} {(max(figures[name]) - min(figures[name])) / median[name]:>6.0%}" for name in PIPELINES
        )
        for other in ("a naive", "c compute"):
            ratios = [b / o for b, o in zip(figures["b lettucify"], figures[other])]
            cells += f"{statistics.median(ratios):>7.2f}{f'{min(ratios):.2f}-{max(ratios):.2f}':>12}"
        print(f"{model:<20}{cells}")


if __name__ == "__main__":
    main()
