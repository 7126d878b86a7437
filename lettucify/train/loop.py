"""The fit: epochs of training and validation, a checkpoint after each, exact resume.

Reads top to bottom like torchvision's reference ``train.py``: ``fit`` runs the epochs,
each being ``train_one_epoch`` then validation and a checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from lettucify import checkpoint as ckpt
from lettucify import distributed
from lettucify.compute.device import amp_dtype
from lettucify.errors import CheckpointError, LettucifyError
from lettucify.evaluate.predict import predict_sharded
from lettucify.train.progress import EpochProgress
from lettucify.train.stop import GracefulStop

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What the loop carries from step to step; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # optimizer steps done in the current, unfinished epoch
    best_val_acc: Optional[float] = None
    history: List[Dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimizer steps in all, over every resume


@dataclass
class Fit:
    """What fitting needs besides the config: built by ``lettucify.train.pipeline``."""

    model: nn.Module  # the bare model: evaluation and checkpoints use it
    net: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper
    data: Any  # the data module (lettucify.data.datamodule.ImageFolderData)
    train_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    # The data module's batch_augment: its loader's batches are augmented on the device.
    augment: Optional[Callable]
    mix: Optional[Callable]
    device: torch.device
    state: TrainState
    checkpoint_dir: Path
    run_dir: Path  # the job's folder (a cross-validation fold's checkpoints are deeper in it)
    # Saved in every checkpoint beside the weights and states.
    extra: Dict[str, Any]


def fit(cfg: DictConfig, run: Fit, log_epoch: Callable[[Dict[str, Any]], None]) -> TrainState:
    """Train from ``run.state`` to ``trainer.epochs``; a stop signal checkpoints and exits."""
    state, main_process = run.state, distributed.is_main()
    steps_per_epoch = len(run.train_loader)
    sampler = run.train_loader.sampler
    with GracefulStop() as stop:
        for epoch in range(state.epoch, cfg.trainer.epochs):
            sampler.set_epoch(epoch)
            sampler.set_start(state.step_in_epoch * run.train_loader.batch_size)
            started = time.perf_counter()
            stats = train_one_epoch(
                run.net, run.train_loader, run.optimizer, run.scheduler, run.scaler,
                device=run.device, state=state, stop=stop, augment=run.augment, mix=run.mix,
                label_smoothing=cfg.trainer.label_smoothing, grad_clip_norm=cfg.trainer.grad_clip_norm,
                channels_last=cfg.compute.channels_last, dtype=amp_dtype(cfg.compute), lr=cfg.optimizer.lr,
                progress=EpochProgress(
                    epoch, cfg.trainer.epochs, steps_per_epoch, cfg.trainer.progress if main_process else "lines"
                ),
            )
            # A signal during the epoch's last step still lets the epoch end normally:
            # a checkpoint with every step done but no validation could not be resumed.
            if stop.requested and state.step_in_epoch < steps_per_epoch:
                save(run, ckpt.LAST)
                exit_on_stop(stop, f"in epoch {epoch + 1} at step {state.step_in_epoch}", run)

            record = {"epoch": epoch + 1, **stats, "epoch_time_s": time.perf_counter() - started}
            if run.data.val_set is not None:
                logits, labels = predict_sharded(
                    run.model, run.data.val_set, run.data.eval_loader, **eval_options(cfg, run.device)
                )
                record["val_loss"] = F.cross_entropy(logits, labels).item()
                record["val_acc"] = (logits.argmax(1) == labels).float().mean().item()
            state.epoch, state.step_in_epoch = epoch + 1, 0
            state.history.append(record)
            if main_process:
                log.info(format_record(record, cfg.trainer.epochs))
            log_epoch(record)

            improved = "val_acc" in record and (state.best_val_acc is None or record["val_acc"] > state.best_val_acc)
            if improved:
                state.best_val_acc = record["val_acc"]
            save(run, ckpt.LAST)
            if improved and main_process:
                ckpt.copy_atomic(run.checkpoint_dir / ckpt.LAST, run.checkpoint_dir / ckpt.BEST)
            if stop.requested:
                exit_on_stop(stop, f"after epoch {epoch + 1}", run)
    return state


def eval_options(cfg: DictConfig, device: torch.device) -> Dict[str, Any]:
    """How validation and testing run ``predict``: the same for both."""
    return dict(
        device=device, channels_last=cfg.compute.channels_last, amp_dtype=amp_dtype(cfg.compute),
        tta_flip=cfg.trainer.tta_flip,
    )


def save(run: Fit, name: str) -> None:
    """Rank 0 writes the checkpoint ``name``: everything needed to continue exactly."""
    if not distributed.is_main():
        return
    ckpt.save_atomic(
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "state": asdict(run.state),
            **run.extra,
        },
        run.checkpoint_dir / name,
    )


def exit_on_stop(stop: GracefulStop, where: str, run: Fit) -> NoReturn:
    log.warning(
        "stopped %s; checkpoint %s. Rerun the same command (with hydra.run.dir=%s) to continue.",
        where, run.checkpoint_dir / ckpt.LAST, run.run_dir,
    )
    sys.exit(stop.exit_status)


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    device: torch.device,
    state: TrainState,
    stop: GracefulStop,
    progress: EpochProgress,
    augment: Optional[Callable] = None,
    mix: Optional[Callable] = None,
    label_smoothing: float = 0.0,
    grad_clip_norm: Optional[float] = None,
    channels_last: bool = False,
    dtype: Optional[torch.dtype] = None,
    lr: Optional[float] = None,
) -> Dict[str, float]:
    """One pass over ``loader`` (from where ``state`` says it stopped); returns its stats.

    ``augment``: what makes the loader's batches (``CachedBatch``es) into images, on the
    device; None when the loader's batches are images already. ``dtype``: the autocast dtype, None for full precision. ``lr`` is only named in the
    error when the loss stops being finite.
    """
    net.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    with progress:
        for images, labels in loader:
            if augment is None:
                images = images.to(device, non_blocking=True, memory_format=memory_format)
            else:
                images = augment(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            # Mixed batches train on soft targets; accuracy is still against the labels.
            images, targets = mix(images, labels) if mix is not None else (images, labels)
            with torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = net(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise LettucifyError(
                    f"loss became {loss.item()} in epoch {state.epoch + 1}; lower optimizer.lr "
                    f"(now {lr}) or enable trainer.grad_clip_norm"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state.step_in_epoch += 1
            state.steps += 1

            batch = labels.size(0)
            loss_sum += loss.item() * batch
            correct += (logits.argmax(1) == labels).sum().item()
            seen += batch
            progress.update(loss=loss_sum / seen, images_per_s=seen / (time.perf_counter() - started))
            # Every rank stops at the same step, or the others would wait in the next all-reduce.
            if distributed.any_rank(stop.requested, device):
                stop.request(signal.SIGTERM)  # on the ranks that were not signalled themselves
                break
    elapsed = time.perf_counter() - started
    loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], device)
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": seen / elapsed if elapsed > 0 else 0.0,
    }


def restore(payload: Dict[str, Any], path: Path, run: Fit, classes: List[str]) -> TrainState:
    """Load a checkpoint's model, optimizer, scheduler, scaler and RNG states into ``run``."""
    if payload["classes"] != classes:
        raise CheckpointError(f"{path} was trained on classes {payload['classes']}, but the data has {classes}")
    try:
        run.model.load_state_dict(payload["model"])
        run.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path} does not fit the configured model/optimizer: {str(err).splitlines()[0]}"
        ) from err
    run.scheduler.load_state_dict(payload["scheduler"])
    run.scaler.load_state_dict(payload["scaler"])
    ckpt.set_rng_state(payload["rng"])
    state = TrainState(**payload["state"])
    if "steps" not in payload["state"]:  # written before the count was kept
        state.steps = state.epoch * len(run.train_loader) + state.step_in_epoch
    log.info("resuming from %s: %d epochs done, %d steps into the next", path, state.epoch, state.step_in_epoch)
    return state


def format_record(record: Dict[str, float], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['images_per_s']:.1f} img/s")
    parts.append(f"{record['epoch_time_s']:.1f} s")
    return " | ".join(parts)
