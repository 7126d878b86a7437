"""Structured-config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML file under ``conf/<group>/`` starts from one of these schemas
(``defaults: [/schema/<group>@_here_: <name>]``), so a misspelt key or a value of
the wrong type fails at composition with Hydra's message, before anything is built.
This module imports nothing heavy: the CLI imports it before Hydra starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- model
@dataclass
class CNN16NetConf:
    _target_: str = "lettucify.models.cnn16.CNN16"
    input_size: int = "${..input_size}"  # type: ignore[assignment]
    channels: List[int] = field(default_factory=lambda: [16, 32])
    hidden_units: int = 128
    dropout: float = 0.25


@dataclass
class EfficientNetLiteNetConf:
    _target_: str = "lettucify.models.efficientnet.EfficientNetLite"
    variant: str = "lite0"
    pretrained: bool = True
    freeze_backbone: bool = False
    # The stem and this many of the first blocks stay as pretrained.
    frozen_stages: int = 0
    freeze_bn_stats: bool = True
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0


@dataclass
class ModelConf:
    """A network (``net``, built with ``num_classes``) and what goes with it.

    ``input_size``, ``mean`` and ``std`` are the preprocessing contract: they travel
    with the checkpoint so that evaluation and serving preprocess as training did.
    """

    net: Any = MISSING
    input_size: int = 224
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    # Learning rate of everything but the classifier head, relative to optimizer.lr.
    backbone_lr_scale: float = 1.0


@dataclass
class CNN16Conf(ModelConf):
    net: CNN16NetConf = field(default_factory=CNN16NetConf)
    input_size: int = 64


@dataclass
class EfficientNetLiteConf(ModelConf):
    net: EfficientNetLiteNetConf = field(default_factory=EfficientNetLiteNetConf)


# --------------------------------------------------------------------------- data
class BadImagePolicy(str, Enum):
    skip = "skip"
    fail = "fail"


@dataclass
class DownloadConf:
    url: str = MISSING
    # Destination split -> folder inside the archive (below its top-level folder).
    members: Dict[str, str] = field(default_factory=dict)
    # sha256 manifest shipped in lettucify/data/manifests/.
    manifest: str = MISSING


@dataclass
class AugmentConf:
    random_resized_crop_scale: List[float] = field(default_factory=lambda: [0.25, 1.0])
    horizontal_flip: bool = True
    color_jitter: float = 0.0


@dataclass
class DataConf:
    _target_: str = "lettucify.data.datamodule.ImageFolderData"
    name: str = MISSING
    # Folder holding train/ and test/; null: $LETTUCIFY_DATA_DIR/<name>, else the cache.
    root: Optional[str] = None
    download: Optional[DownloadConf] = None
    # Fraction of train carved out (stratified, seeded) for validation; 0 disables it.
    val_fraction: float = 0.15
    split_seed: int = 0
    # Global batch size: with several processes each takes an equal share.
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 0
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    max_image_pixels: int = 40_000_000
    # Keep decoded, downscaled images in memory: decoding 512 px JPEGs every epoch
    # dominates a small CPU run.
    cache_images: bool = True
    augment: AugmentConf = field(default_factory=AugmentConf)
    # For Azure ML jobs: a registered data asset (azureml:name:version) or a local
    # folder that is uploaded; mounted read-only as data.root. null: the job finds
    # (or downloads) the data as it would here.
    azure_input: Optional[str] = None


# --------------------------------------------------------------------------- compute
class Launcher(str, Enum):
    none = "none"  # train in this process (or in each process a scheduler started)
    torchrun = "torchrun"  # start the workers with PyTorch's elastic launcher
    azureml = "azureml"  # submit a command job to an Azure ML cluster (lettucify/azure)


@dataclass
class ComputeConf:
    launcher: Launcher = Launcher.none
    # "cpu", "cuda" or "cuda:N" (with several processes each takes cuda:LOCAL_RANK).
    device: str = "cpu"
    # torch.set_num_threads per process; null keeps PyTorch's default.
    num_threads: Optional[int] = None
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = True
    pin_memory: bool = False
    # Keep freed host memory for reuse instead of returning it to the OS after each
    # large tensor (glibc only): about 1.7x faster CPU training steps, at the cost of
    # holding the peak memory.
    reuse_host_memory: bool = True
    # With several processes: null picks nccl on CUDA and gloo on CPU. The timeout
    # bounds every collective, so a dead rank fails the others instead of hanging them.
    backend: Optional[str] = None
    collective_timeout_s: float = 300.0


@dataclass
class TorchrunConf(ComputeConf):
    launcher: Launcher = Launcher.torchrun
    nproc_per_node: int = 2
    nnodes: int = 1
    node_rank: int = 0
    # Multi-node rendezvous: the host:port of node 0 (all nodes give the same). With
    # one node and no endpoint, torchrun's --standalone picks a free port.
    rdzv_endpoint: Optional[str] = None
    rdzv_backend: str = "c10d"
    # Static rendezvous instead, at node 0's address, as cluster schedulers (Azure ML)
    # hand it out in MASTER_ADDR / MASTER_PORT; set, it replaces rdzv_endpoint.
    master_addr: Optional[str] = None
    master_port: int = 29500
    # Restart the whole group this many times when a worker fails; training resumes
    # from the last checkpoint.
    max_restarts: int = 0


class ClusterTier(str, Enum):
    dedicated = "dedicated"
    low_priority = "low_priority"


@dataclass
class AzureWorkspaceConf:
    """Which workspace; unset fields come from the environment, else from a config.json.

    Credentials are never configured: they come from Azure's credential chain
    (DefaultAzureCredential: environment, managed identity, ``az login``).
    """

    subscription_id: Optional[str] = "${oc.env:AZURE_SUBSCRIPTION_ID,null}"
    resource_group: Optional[str] = "${oc.env:AZURE_RESOURCE_GROUP,null}"
    name: Optional[str] = "${oc.env:AZUREML_WORKSPACE_NAME,null}"
    # A workspace config.json (downloaded from the portal); null searches from the
    # current folder up, as MLClient.from_config does.
    config_path: Optional[str] = None


@dataclass
class AzureClusterConf:
    """An AmlCompute cluster, created (or updated) before the first submission."""

    name: str = MISSING
    size: str = MISSING
    min_instances: int = 0
    max_instances: int = 5
    # Idle nodes go away after this long, so an idle cluster costs nothing.
    idle_time_before_scale_down: int = 1800
    tier: ClusterTier = ClusterTier.dedicated
    # Set for VM sizes Azure no longer offers: warned about at every submission.
    retired: Optional[str] = None


@dataclass
class AzureConf:
    workspace: AzureWorkspaceConf = field(default_factory=AzureWorkspaceConf)
    cluster: AzureClusterConf = field(default_factory=AzureClusterConf)
    # null: an environment built from setup.cfg's dependencies on base_image (so the
    # two never drift); else an existing one, e.g. azureml:my-env:3 or azureml:my-env@latest.
    environment: Optional[str] = None
    base_image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    # Follow the job to its end, streaming its logs, and return its metrics.
    wait: bool = False
    # Write job.yaml and compute.yaml to the run folder and submit nothing.
    dry_run: bool = False


@dataclass
class AzureComputeConf(TorchrunConf):
    """A command job on an Azure ML GPU cluster: torchrun on each node, DDP over NCCL."""

    launcher: Launcher = Launcher.azureml
    device: str = "cuda"
    amp: bool = True
    # V100 and T4 have no fast bfloat16.
    amp_dtype: str = "float16"
    pin_memory: bool = True
    # The job's shape: nodes, and GPUs (one process each) per node.
    instance_count: int = 1
    gpus_per_node: int = 1
    nnodes: int = "${.instance_count}"  # type: ignore[assignment]
    nproc_per_node: int = "${.gpus_per_node}"  # type: ignore[assignment]
    num_threads: Optional[int] = None
    azure: AzureConf = field(default_factory=AzureConf)


# --------------------------------------------------------------------------- optim
@dataclass
class OptimizerConf:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class AdamWConf(OptimizerConf):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SGDConf(OptimizerConf):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True


@dataclass
class SchedulerConf:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class WarmupCosineConf(SchedulerConf):
    _target_: str = "lettucify.train.schedule.warmup_cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01


@dataclass
class ConstantLRConf(SchedulerConf):
    _target_: str = "lettucify.train.schedule.constant"


# --------------------------------------------------------------------------- trainer
class ProgressMode(str, Enum):
    auto = "auto"  # a bar on a terminal, one line per epoch otherwise
    bar = "bar"
    lines = "lines"


class CheckpointChoice(str, Enum):
    last = "last"
    best = "best"  # by validation accuracy


@dataclass
class TrainerConf:
    epochs: int = 15
    label_smoothing: float = 0.1
    # Batch-level MixUp / CutMix (one of the two, at random, per batch); 0 disables.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Clip the global gradient norm; null disables clipping.
    grad_clip_norm: Optional[float] = 1.0
    # "auto": continue from <run dir>/checkpoints/last.pt when it exists;
    # "never": always start afresh; otherwise a path to a checkpoint.
    resume: str = "auto"
    progress: ProgressMode = ProgressMode.auto
    # Which checkpoint is tested, registered and scored for sweeps. With a validation
    # split of a few images per class, the "best" epoch is mostly noise.
    select: CheckpointChoice = CheckpointChoice.last
    # Average the logits of the image and its mirror image at evaluation.
    tta_flip: bool = True


# --------------------------------------------------------------------------- tracking
@dataclass
class LoggerConf:
    """Experiment tracking. ``logger=mlflow`` (default) or ``logger=none``."""

    enabled: bool = True
    # null: a SQLite store at <repo>/outputs/mlflow.db (tracking and registry, no server).
    tracking_uri: Optional[str] = None
    experiment_name: str = "lettucify"
    # null: named after the experiment and the command-line overrides.
    run_name: Optional[str] = None


@dataclass
class RegistryConf:
    """Registering the trained model at the end of a successful run."""

    enabled: bool = True
    name: str = "lettucify-food16"
    alias: str = "candidate"
    # task=promote moves this alias to the version that `alias` points at.
    promote_to: str = "champion"
    # Register only when the test accuracy reaches this; null: always.
    min_accuracy: Optional[float] = None


class Task(str, Enum):
    train = "train"
    evaluate = "evaluate"
    promote = "promote"


@dataclass
class PathsConf:
    output_dir: str = MISSING
    cache_dir: str = MISSING
    data_dir: Optional[str] = None


@dataclass
class Config:
    model: Any = MISSING
    data: Any = MISSING
    compute: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: Any = MISSING
    paths: Any = MISSING
    logger: Any = MISSING
    registry: RegistryConf = field(default_factory=RegistryConf)
    task: Task = Task.train
    # task=evaluate: a checkpoint file, or an MLflow model URI (models:/<name>@<alias>).
    checkpoint: Optional[str] = None
    model_uri: Optional[str] = None
    seed: int = 0


_SCHEMAS = {
    "model": {"cnn16": CNN16Conf, "efficientnet_lite": EfficientNetLiteConf},
    "data": {"imagefolder": DataConf},
    "compute": {"local": ComputeConf, "torchrun": TorchrunConf, "azureml": AzureComputeConf},
    "optimizer": {"adamw": AdamWConf, "sgd": SGDConf},
    "scheduler": {"warmup_cosine": WarmupCosineConf, "constant": ConstantLRConf},
    "trainer": {"default": TrainerConf},
    "paths": {"default": PathsConf},
    "logger": {"mlflow": LoggerConf},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="lettucify_schema", node=Config)
    for group, schemas in _SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    if not OmegaConf.has_resolver("lettucify_root"):
        # Lets conf/config.yaml add experiments/ to Hydra's search path wherever it is run from.
        OmegaConf.register_new_resolver("lettucify_root", lambda: str(REPO_ROOT))


register_configs()
