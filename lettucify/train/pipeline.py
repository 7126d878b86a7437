"""One process's training run: set up, fit, finish.

Runs alike in one process or as one rank of several (torchrun or a cluster):
``data.batch_size`` is the global batch, only rank 0 scans the images (the others
receive its scan), and only rank 0 writes files or talks to MLflow.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lettucify import checkpoint as ckpt
from lettucify import distributed
from lettucify.compute.device import setup_compute
from lettucify.models.build import build_model, preprocessing
from lettucify.tracking import NullTracker, dataset_fingerprint, open_tracker
from lettucify.train.finish import finish
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


def prepare_data(cfg: DictConfig, run_dir: Path) -> Any:
    """The data module with its datasets built; rank 0 scans, the others get its scan."""
    data = instantiate(cfg.data, data_dir=cfg.paths.data_dir, cache_dir=cfg.paths.cache_dir, _convert_="all")
    # Rank 0 alone downloads the data if needed, checks every file and writes the report.
    scan = data.scan(report_path=run_dir / "bad_images.csv") if distributed.is_main() else None
    data.build(distributed.broadcast_object(scan), cfg.model.input_size, list(cfg.model.mean), list(cfg.model.std))
    return data


def train(cfg: DictConfig) -> Dict[str, float]:
    """Train the configured model; return its metrics (``finish``), rank 0's complete."""
    run_dir = Path(cfg.paths.output_dir)
    checkpoint_dir = run_dir / "checkpoints"
    device = distributed.init(
        setup_compute(cfg.compute), cfg.compute.process_group_backend, cfg.compute.collective_timeout_s
    )
    main_process, world = distributed.is_main(), distributed.world_size()
    # Ranks differ in dropout and the like; the model starts from rank 0's weights (DDP).
    seed_everything(cfg.seed + distributed.rank())
    resume_from = ckpt.resume_path(cfg.trainer.resume, checkpoint_dir)
    resumed = ckpt.load(resume_from, device) if resume_from is not None else None
    if main_process:
        log.info("run folder: %s", run_dir)

    tracker = (
        open_tracker(cfg.logger, cfg, run_dir, resume_run_id=resumed.get(RUN_ID_KEY) if resumed else None)
        if main_process else NullTracker()
    )
    with tracker:
        data = prepare_data(cfg, run_dir)
        tracker.set_tags({"dataset_fingerprint": dataset_fingerprint(data.root, data.samples)})

        model = build_model(cfg.model, len(data.classes))
        model.to(device, memory_format=torch.channels_last if cfg.compute.channels_last else torch.contiguous_format)
        train_loader = data.train_loader(
            num_replicas=world, rank=distributed.rank(), seed=cfg.seed, pin_memory=cfg.compute.pin_memory
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

        run = Fit(
            model=model, net=net, data=data, train_loader=train_loader, optimizer=optimizer,
            scheduler=scheduler, scaler=scaler, mix=batch_mixer(cfg.trainer, len(data.classes)),
            device=device, state=TrainState(), checkpoint_dir=checkpoint_dir,
            extra={
                "classes": data.classes,
                "preprocess": preprocessing(cfg.model),
                "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                RUN_ID_KEY: tracker.run_id,
            },
        )
        if resumed is not None:
            run.state = restore(resumed, resume_from, run, data.classes)
        fit(cfg, run, lambda record: tracker.log_epoch(record, step=record["epoch"]))
        return finish(cfg, run, tracker)
