"""Training-step throughput: channels_last (the default) against contiguous memory format.

    python benchmarks/bench_train_step.py [--model efficientnet_lite0] [--steps 10]

Builds the configured model exactly as the trainer does, times forward + backward +
AdamW steps on random batches in both memory formats, interleaved so that machine
noise hits both alike, and prints images/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from lettucify.config import REPO_ROOT
from lettucify.models.build import build_model


def time_steps(model, batch, labels, memory_format, steps: int) -> float:
    model.to(memory_format=memory_format)
    batch = batch.contiguous(memory_format=memory_format)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for _ in range(2):  # warm-up: allocator and oneDNN primitive caches
        F.cross_entropy(model(batch), labels).backward()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch), labels).backward()
        optimizer.step()
    return steps * batch.size(0) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={args.model}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=16)
    size = cfg.model.input_size
    batch = torch.randn(args.batch_size, 3, size, size)
    labels = torch.randint(0, 16, (args.batch_size,))

    results = {"contiguous": [], "channels_last": []}
    for _ in range(args.rounds):
        results["contiguous"].append(time_steps(model, batch, labels, torch.contiguous_format, args.steps))
        results["channels_last"].append(time_steps(model, batch, labels, torch.channels_last, args.steps))
    reference = statistics.median(results["contiguous"])
    candidate = statistics.median(results["channels_last"])
    print(f"model {args.model}, batch {args.batch_size}x3x{size}x{size}, {torch.get_num_threads()} threads")
    print(f"contiguous (reference): {reference:.1f} images/s")
    print(f"channels_last:          {candidate:.1f} images/s")
    print(f"ratio channels_last / contiguous: {candidate / reference:.2f}x")


if __name__ == "__main__":
    main()
