"""One process's training job: set up, fit, finish.

With ``data.cv_folds``, a fit per fold (``crossval``) comes before the final model's;
``setup_fit`` sets up each training alike. Runs alike in one process or as one rank of
several (torchrun or a cluster): ``data.batch_size`` is the global batch, only rank 0
scans the images (the others receive its scan), and only rank 0 writes files or talks
to MLflow; the ranks run the same folds in step.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lettucify import checkpoint as ckpt
from lettucify import distributed
from lettucify.compute.device import setup_compute
from lettucify.data.loading import core_share
from lettucify.data.datamodule import Scan
from lettucify.errors import ConfigError
from lettucify.models.build import build_model, preprocessing
from lettucify.tracking import NullTracker, dataset_fingerprint, open_tracker
from lettucify.train import crossval
from lettucify.train.finish import finish, train_time
from lettucify.train.loop import Fit, TrainState, fit, restore

log = logging.getLogger(__name__)

# The checkpoint's record of the MLflow run, so that a resumed training continues it.
RUN_ID_KEY = "mlflow_run_id"


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


def scan_data(cfg: DictConfig, run_dir: Path) -> Tuple[Any, Scan]:
    """The data module and the scan of its folder: rank 0 scans, the others get its scan."""
    data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
    # Rank 0 alone downloads the data if needed, checks every file and writes the report.
    scan = data.scan(report_path=run_dir / "bad_images.csv") if distributed.is_main() else None
    return data, distributed.broadcast_object(scan)


def setup_fit(
    cfg: DictConfig, data: Any, split: Scan, device: torch.device, *,
    run_dir: Path, checkpoint_dir: Path, extra: Dict[str, Any],
) -> Fit:
    """One training of ``split`` (the scan, or one of its folds): its datasets, model,
    optimizer, schedule and loader, each training of a job set up alike."""
    data.build(split, cfg.model.input_size, list(cfg.model.mean), list(cfg.model.std))
    # Ranks differ in dropout and the like; the model starts from rank 0's weights (DDP).
    # Seeded for each training, a fold trains alike whether the folds before it ran in
    # this process or were done already.
    seed_everything(cfg.seed + distributed.rank())
    world = distributed.world_size()
    model = build_model(cfg.model, len(data.classes))
    model.to(device, memory_format=torch.channels_last if cfg.compute.channels_last else torch.contiguous_format)
    share = core_share(cfg.data.num_workers, cfg.compute.num_threads, data.decoded is not None,
                       distributed.local_world_size())
    torch.set_num_threads(share.threads)
    if distributed.is_main():
        log.info("data loading: %s; data cache %s; augmentation %s", share.describe(),
                 f"in {data.decoded.folder}" if data.decoded is not None else "off",
                 f"of whole batches on {device}" if data.batch_augment is not None else "of each photo in the loader")
    train_loader = data.train_loader(
        num_replicas=world, rank=distributed.rank(), seed=cfg.seed, pin_memory=cfg.compute.pin_memory,
        workers=share.workers,
    )
    optimizer = instantiate(cfg.optimizer, _convert_="all")(
        param_groups(model, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.model.backbone_lr_scale)
    )
    scheduler = instantiate(cfg.scheduler)(optimizer, steps_per_epoch=len(train_loader), epochs=cfg.trainer.epochs)
    # A GradScaler only matters for float16 on CUDA; elsewhere it is a no-op.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.compute.amp and cfg.compute.amp_dtype == "float16")
    # DDP averages the gradients over ranks; evaluation and checkpoints use the bare model.
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None
    ) if world > 1 else model
    return Fit(
        model=model, net=net, data=data, train_loader=train_loader, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, augment=data.batch_augment, mix=batch_mixer(cfg.trainer, len(data.classes)),
        device=device, state=TrainState(), checkpoint_dir=checkpoint_dir, run_dir=run_dir, extra=extra,
    )


def fit_from(cfg: DictConfig, run: Fit, resume_from: Optional[Path], log_epoch: Callable[[Dict], None]) -> Fit:
    """``run`` continued from the checkpoint ``resume_from`` (if any) to ``trainer.epochs``."""
    if resume_from is not None:
        run.state = restore(ckpt.load(resume_from, run.device), resume_from, run, run.data.classes)
    fit(cfg, run, log_epoch)
    return run


def recorded_run_id(checkpoints: Sequence[Optional[Path]]) -> Optional[str]:
    """The MLflow run that the job's latest checkpoint names: a resumed job continues it."""
    latest = next((path for path in reversed(checkpoints) if path is not None), None)
    return ckpt.load(latest).get(RUN_ID_KEY) if latest is not None else None


def train(cfg: DictConfig) -> Dict[str, float]:
    """Train the configured model; return its metrics (``finish``), rank 0's complete.

    With ``data.cv_folds`` (``crossval``), a training per fold comes first and the final
    model trains on every training photo; the metrics add the folds' (val_acc: their mean).
    """
    run_dir, folds = Path(cfg.paths.output_dir), cfg.data.cv_folds
    if folds and cfg.trainer.resume not in ("auto", "never"):
        raise ConfigError(
            f"trainer.resume={cfg.trainer.resume}: a data.cv_folds job resumes from its run folder's "
            f"checkpoints (trainer.resume=auto with hydra.run.dir=<that folder>), not from one file"
        )
    device = distributed.init(
        setup_compute(cfg.compute), cfg.compute.process_group_backend, cfg.compute.collective_timeout_s
    )
    main_process = distributed.is_main()
    if folds and cfg.trainer.select == "best" and main_process:
        log.info("trainer.select=best does not apply with data.cv_folds: the final model trains without "
                 "validation and is its last epoch; each fold reports its last epoch too")
    # The job's trainings, each resumed from its own folder: the folds' in order, then the final model's.
    checkpoint_dirs = [*(crossval.checkpoint_dir(run_dir, k) for k in range(1, folds + 1)), run_dir / "checkpoints"]
    resumes = [ckpt.resume_path(cfg.trainer.resume, folder) for folder in checkpoint_dirs]
    if main_process:
        log.info("run folder: %s", run_dir)

    tracker = (
        open_tracker(cfg.logger, cfg, run_dir, resume_run_id=recorded_run_id(resumes))
        if main_process else NullTracker()
    )
    with tracker:
        data, scan = scan_data(cfg, run_dir)
        tracker.set_tags({"dataset_fingerprint": dataset_fingerprint(scan.root, scan.samples)})
        setup = partial(
            setup_fit, cfg, data, device=device, run_dir=run_dir,
            extra={  # saved in every checkpoint of the job
                "classes": scan.classes,
                "preprocess": preprocessing(cfg.model),
                "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                RUN_ID_KEY: tracker.run_id,
            },
        )
        histories = []
        for fold, split in enumerate(scan.fold_scans(), 1):
            if main_process:
                log.info("cross-validation fold %d/%d: training on %d photos, validating on %d",
                         fold, folds, len(split.train), len(split.val))
            run = fit_from(cfg, setup(split, checkpoint_dir=checkpoint_dirs[fold - 1]), resumes[fold - 1],
                           crossval.epoch_logger(tracker, fold))
            histories.append(run.state.history)
        folds_result = crossval.report(histories, tracker) if histories else {}

        if folds and main_process:
            log.info("final model: training on all %d training photos, without validation", len(scan.train))
        run = fit_from(cfg, setup(scan, checkpoint_dir=checkpoint_dirs[-1]), resumes[-1],
                       lambda record: tracker.log_epoch(record, step=record["epoch"]))
        result = finish(cfg, run, tracker)
        result.update(folds_result)
        result["train_time_s"] += sum(map(train_time, histories))
        return result
