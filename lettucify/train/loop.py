"""The training task: data -> model -> epochs of training and validation -> checkpoints.

Reads top to bottom like torchvision's reference ``train.py``: ``train`` sets up, then
each epoch is ``train_one_epoch`` followed by validation and a checkpoint.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from lettucify import distributed
from lettucify.compute import setup_compute
from lettucify.errors import CheckpointError, LettucifyError
from lettucify.evaluate.predict import predict_sharded
from lettucify.evaluate.report import write_evaluation
from lettucify.tracking import NullTracker, dataset_fingerprint, open_tracker
from lettucify.train import checkpoint as ckpt
from lettucify.train.progress import EpochProgress
from lettucify.train.sampler import ResumableSampler
from lettucify.train.stop import GracefulStop

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What the loop carries from step to step; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # optimizer steps done in the current, unfinished epoch
    best_val_acc: Optional[float] = None
    history: List[Dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float) -> List[Dict]:
    """The head at ``lr``, the rest at ``lr * backbone_lr_scale``; no weight decay on
    biases and normalisation parameters (1-d tensors)."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    groups: Dict[tuple, List[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            key = (id(param) in head_ids, param.ndim > 1)
            groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "lr": lr if is_head else lr * backbone_lr_scale,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_head, decays), params in groups.items()
    ]


def batch_mixer(trainer: DictConfig, num_classes: int):
    """MixUp and/or CutMix on whole batches (torchvision's), or None when both are off."""
    from torchvision.transforms import v2

    mixers = []
    if trainer.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=trainer.mixup_alpha, num_classes=num_classes))
    if trainer.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=trainer.cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(mixers) if mixers else None


def preprocess(cfg: DictConfig) -> Dict[str, Any]:
    """The model's preprocessing contract, saved with every checkpoint and registered model."""
    return {"input_size": cfg.model.input_size, "mean": list(cfg.model.mean), "std": list(cfg.model.std)}


def amp_dtype(compute: DictConfig) -> Optional[torch.dtype]:
    return getattr(torch, compute.amp_dtype) if compute.amp else None


def build_model(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    return instantiate(model_cfg.net, num_classes=num_classes, _convert_="all")


def train(cfg: DictConfig) -> Optional[float]:
    """Train the configured model; return its validation accuracy (for sweepers).

    Runs alike in one process or as one rank of several (torchrun or a cluster):
    ``data.batch_size`` is the global batch, and only rank 0 writes files or talks
    to MLflow.
    """
    run_dir = Path(cfg.paths.output_dir)
    checkpoint_dir = run_dir / "checkpoints"
    device = distributed.init(setup_compute(cfg.compute), cfg.compute.backend, cfg.compute.collective_timeout_s)
    main_process = distributed.is_main()
    world = distributed.world_size()
    # Ranks differ in dropout and the like; the model starts from rank 0's weights (DDP).
    seed_everything(cfg.seed + distributed.rank())
    if cfg.data.batch_size % world:
        raise LettucifyError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must divide by the {world} processes"
        )
    batch_size = cfg.data.batch_size // world
    if main_process:
        log.info("run folder: %s", run_dir)

    with open_tracker(cfg.logger, cfg, run_dir) if main_process else NullTracker() as tracker:
        data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
        # Rank 0 first: it downloads the data if needed and writes the bad-image report.
        for turn in (True, False):
            if main_process == turn:
                data.setup(
                    cfg.model.input_size, list(cfg.model.mean), list(cfg.model.std),
                    report_path=run_dir / "bad_images.csv" if main_process else None,
                )
            distributed.barrier()
        classes: List[str] = list(data.classes)
        all_samples = [*data.train_set.samples, *(data.val_set.samples if data.val_set else []), *data.test_set.samples]
        tracker.set_tags({"dataset_fingerprint": dataset_fingerprint(data.root, all_samples)})

        model = build_model(cfg.model, len(classes))
        memory_format = torch.channels_last if cfg.compute.channels_last else torch.contiguous_format
        model.to(device, memory_format=memory_format)

        sampler = ResumableSampler(data.train_set, num_replicas=world, rank=distributed.rank(), seed=cfg.seed)
        train_loader = DataLoader(
            data.train_set,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=cfg.compute.pin_memory,
            # Workers keep their decoded-image caches from one epoch to the next.
            persistent_workers=cfg.data.num_workers > 0,
            # Its own generator: starting an epoch must not draw from the global one, whose
            # state a mid-epoch checkpoint saves for dropout and the like.
            generator=torch.Generator().manual_seed(cfg.seed),
        )

        optimizer = instantiate(cfg.optimizer, _convert_="all")(
            param_groups(model, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.model.backbone_lr_scale)
        )
        steps_per_epoch = len(train_loader)
        scheduler = instantiate(cfg.scheduler)(optimizer, steps_per_epoch=steps_per_epoch, epochs=cfg.trainer.epochs)
        # A GradScaler only matters for float16 on CUDA; elsewhere it is a no-op.
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.compute.amp and cfg.compute.amp_dtype == "float16")

        state = TrainState()
        resume_from = ckpt.resume_path(cfg.trainer.resume, checkpoint_dir)
        if resume_from is not None:
            state = restore(resume_from, model, optimizer, scheduler, scaler, classes, device)
        # DDP averages the gradients over ranks; evaluation and checkpoints use the bare model.
        net = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

        def save(path: Path) -> None:
            if not main_process:
                return
            ckpt.save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": ckpt.rng_state(),
                    "state": asdict(state),
                    "classes": classes,
                    "preprocess": preprocess(cfg),
                    "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                },
                path,
            )

        eval_kwargs = dict(
            device=device, channels_last=cfg.compute.channels_last, amp_dtype=amp_dtype(cfg.compute),
            tta_flip=cfg.trainer.tta_flip,
        )

        with GracefulStop() as stop:
            for epoch in range(state.epoch, cfg.trainer.epochs):
                sampler.set_epoch(epoch)
                sampler.set_start(state.step_in_epoch * batch_size)
                started = time.perf_counter()
                stats = train_one_epoch(
                    net, train_loader, optimizer, scheduler, scaler, cfg, device, state, stop,
                    batch_mixer(cfg.trainer, len(classes)),
                    EpochProgress(
                        epoch, cfg.trainer.epochs, len(train_loader), cfg.trainer.progress if main_process else "lines"
                    ),
                )
                # A signal during the epoch's last step still lets the epoch end normally:
                # a checkpoint with every step done but no validation could not be resumed.
                if stop.requested and state.step_in_epoch < steps_per_epoch:
                    save(checkpoint_dir / ckpt.LAST)
                    exit_on_stop(stop, f"in epoch {epoch + 1} at step {state.step_in_epoch}", checkpoint_dir, run_dir)

                record = {"epoch": epoch + 1, **stats, "epoch_time_s": time.perf_counter() - started}
                if data.val_set is not None:
                    logits, labels = predict_sharded(model, data.val_set, cfg, **eval_kwargs)
                    record["val_loss"] = F.cross_entropy(logits, labels).item()
                    record["val_acc"] = (logits.argmax(1) == labels).float().mean().item()
                state.epoch, state.step_in_epoch = epoch + 1, 0
                state.history.append(record)
                if main_process:
                    log.info(format_record(record, cfg.trainer.epochs))
                tracker.log_epoch(record, step=record["epoch"])

                improved = "val_acc" in record and (
                    state.best_val_acc is None or record["val_acc"] > state.best_val_acc
                )
                if improved:
                    state.best_val_acc = record["val_acc"]
                save(checkpoint_dir / ckpt.LAST)
                if improved and main_process:
                    ckpt.copy_atomic(checkpoint_dir / ckpt.LAST, checkpoint_dir / ckpt.BEST)
                if stop.requested:
                    exit_on_stop(stop, f"after epoch {epoch + 1}", checkpoint_dir, run_dir)

        use_best = cfg.trainer.select == "best" and state.best_val_acc is not None
        if use_best:
            distributed.barrier()  # rank 0 has written best.pt
            model.load_state_dict(ckpt.load(checkpoint_dir / ckpt.BEST, device)["model"])
        logits, labels = predict_sharded(model, data.test_set, cfg, **eval_kwargs)
        if main_process:
            metrics = write_evaluation(logits, labels, classes, data.test_set.samples, run_dir, history=state.history)
            log.info(
                "test top-1 %.4f, top-5 %.4f, macro-F1 %.4f, macro AUC %.4f with %s (%d images); report in %s",
                metrics["top1"], metrics["top5"], metrics["macro_f1"], metrics["macro_auc"] or float("nan"),
                ckpt.BEST if use_best else ckpt.LAST, len(labels), run_dir,
            )
            tracker.log_metrics(metrics)
            tracker.log_artifacts([run_dir / name for name in [*metrics["files"], "bad_images.csv"]])
            example = torch.stack([data.test_set[i][0] for i in range(min(2, len(data.test_set)))])
            tracker.register_model(model, classes, preprocess(cfg), example, cfg.registry, metrics["top1"])
        return state.best_val_acc if use_best else state.history[-1].get("val_acc") if state.history else None


def exit_on_stop(stop: GracefulStop, where: str, checkpoint_dir: Path, run_dir: Path) -> NoReturn:
    log.warning(
        "stopped %s; checkpoint %s. Rerun the same command (with hydra.run.dir=%s) to continue.",
        where, checkpoint_dir / ckpt.LAST, run_dir,
    )
    sys.exit(stop.exit_status)


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: DictConfig,
    device: torch.device,
    state: TrainState,
    stop: GracefulStop,
    mix: Optional[Any],
    progress: EpochProgress,
) -> Dict[str, float]:
    net.train()
    memory_format = torch.channels_last if cfg.compute.channels_last else torch.contiguous_format
    dtype = amp_dtype(cfg.compute)
    loss_sum, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    with progress:
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            # Mixed batches train on soft targets; accuracy is still against the labels.
            images, targets = mix(images, labels) if mix is not None else (images, labels)
            with torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = net(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.trainer.label_smoothing)
            if not torch.isfinite(loss):
                raise LettucifyError(
                    f"loss became {loss.item()} in epoch {state.epoch + 1}; lower optimizer.lr "
                    f"(now {cfg.optimizer.lr}) or enable trainer.grad_clip_norm"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.trainer.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state.step_in_epoch += 1

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


def restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    classes: List[str],
    device: torch.device,
) -> TrainState:
    payload = ckpt.load(path, device)
    if payload["classes"] != classes:
        raise CheckpointError(
            f"{path} was trained on classes {payload['classes']}, but the data has {classes}"
        )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path} does not fit the configured model/optimizer: {str(err).splitlines()[0]}"
        ) from err
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    ckpt.set_rng_state(payload["rng"])
    state = TrainState(**payload["state"])
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
