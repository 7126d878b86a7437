"""Structured-config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML file under ``conf/<group>/`` starts from one of these schemas
(``defaults: [/schema/<group>@_here_: <name>]``), so a misspelt key or a value of
the wrong type fails at composition with Hydra's message, before anything is built.
What a numeric or choice field allows (its range or set) is its metadata, checked
right after composition by lettucify.validation.
This module imports nothing heavy: the CLI imports it before Hydra starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lettucify.validation import at_least, each, greater_than, in_range, matches, off_or_at_least, one_of

REPO_ROOT = Path(__file__).resolve().parents[1]

# Larger images are refused before decoding (decompression bombs); data.max_image_pixels.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

# Defaults live here, in the schema, and nowhere else: a YAML option under conf/ sets only
# what makes it differ from its schema (tests/test_config.py checks this).


# --------------------------------------------------------------------------- model
@dataclass
class CNN16NetConf:
    _target_: str = "lettucify.models.cnn16.CNN16"
    input_size: int = field(default="${..input_size}", metadata=at_least(1))  # type: ignore[arg-type]
    channels: List[int] = field(default_factory=lambda: [16, 32], metadata=each(at_least(1)))
    hidden_units: int = field(default=128, metadata=at_least(1))
    dropout: float = field(default=0.25, metadata=in_range(0, 1, upper_open=True))


@dataclass
class EfficientNetLiteNetConf:
    _target_: str = "lettucify.models.efficientnet.EfficientNetLite"
    # What lettucify.models.efficientnet knows: its variants, 7 blocks (tests/test_models.py checks).
    variant: str = field(default="lite0", metadata=one_of("lite0", "lite2"))
    pretrained: bool = True
    freeze_backbone: bool = False
    # The stem and this many of the first blocks stay as pretrained: less to overfit on
    # ~10 photos a class, and backpropagation stops early (about 1.3x faster CPU steps).
    frozen_stages: int = field(default=2, metadata=in_range(0, 7))
    freeze_bn_stats: bool = True
    drop_rate: float = field(default=0.2, metadata=in_range(0, 1, upper_open=True))
    drop_path_rate: float = field(default=0.0, metadata=in_range(0, 1, upper_open=True))


@dataclass
class ModelConf:
    """A network (``net``, built with ``num_classes``) and what goes with it.

    ``input_size``, ``mean`` and ``std`` are the preprocessing contract: they travel
    with the checkpoint so that evaluation and serving preprocess as training did.
    """

    net: Any = MISSING
    input_size: int = field(default=224, metadata=at_least(1))
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata=each(length=3))
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata=each(greater_than(0), length=3))
    # Learning rate of everything but the classifier head, relative to optimizer.lr.
    backbone_lr_scale: float = field(default=1.0, metadata=at_least(0))


@dataclass
class CNN16Conf(ModelConf):
    net: CNN16NetConf = field(default_factory=CNN16NetConf)
    input_size: int = 64


@dataclass
class EfficientNetLiteConf(ModelConf):
    """ImageNet-pretrained EfficientNet-Lite, fine-tuned with a new head.

    The published Lite weights expect inputs scaled to [-1, 1] (the default mean/std),
    not ImageNet's mean and std.
    """

    net: EfficientNetLiteNetConf = field(default_factory=EfficientNetLiteNetConf)
    backbone_lr_scale: float = 0.1


# --------------------------------------------------------------------------- data
class BadImagePolicy(str, Enum):
    skip = "skip"
    fail = "fail"


class CacheMode(str, Enum):
    """``data.cache``: the decoded-image cache of the training photos (lettucify/data/cache.py)."""

    auto = "auto"  # on when it fits in data.cache_max_gb (and paths.cache_dir is set)
    on = "on"
    off = "off"  # decode every photo every epoch


@dataclass
class DownloadConf:
    url: str = MISSING
    # Destination split -> folder inside the archive (below its top-level folder).
    members: Dict[str, str] = field(default_factory=dict)
    # sha256 manifest shipped in lettucify/data/manifests/.
    manifest: str = MISSING


@dataclass
class AugmentConf:
    random_resized_crop_scale: List[float] = field(
        default_factory=lambda: [0.25, 1.0], metadata=each(in_range(0, 1, lower_open=True), length=2, increasing=True)
    )
    horizontal_flip: bool = True
    color_jitter: float = field(default=0.0, metadata=at_least(0))
    # With the data cache: augment each batch at once on the training device (one
    # bilinear grid_sample, not antialiased; lettucify/data/batch_augment.py) instead of
    # each photo in the loader, as without the cache.
    batched: bool = True


@dataclass
class DataConf:
    _target_: str = "lettucify.data.datamodule.ImageFolderData"
    name: str = MISSING
    # Folder holding train/ and test/; null: $LETTUCIFY_DATA_DIR/<name>, else the cache.
    root: Optional[str] = None
    download: Optional[DownloadConf] = None
    # Fraction of train carved out (stratified, seeded) for validation; 0 disables it.
    val_fraction: float = field(default=0.15, metadata=in_range(0, 1, upper_open=True))
    # K >= 2: cross-validation. The job trains once per stratified fold of the training
    # photos (val_fraction is then unused), reports the folds' mean validation metrics,
    # and its final model is trained on every training photo. 0: a single split.
    cv_folds: int = field(default=0, metadata=off_or_at_least(2))
    # Any integer: it seeds a generator per class name.
    split_seed: int = 0
    # Global batch size: with several processes each takes an equal share.
    batch_size: int = field(default=32, metadata=at_least(1))
    eval_batch_size: int = field(default=64, metadata=at_least(1))
    # DataLoader worker processes per training process; null: derived from the cores and
    # the processes sharing them (lettucify/data/loading.py; logged at start).
    num_workers: Optional[int] = field(default=None, metadata=at_least(0))
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata=at_least(1))
    # Decode each training photo once, downscaled to a shorter side of cache_side_ratio x
    # input_size (RandomResizedCrop's crops need more than input_size to stay sharp), into
    # memory-mapped uint8 shards under paths.cache_dir/decoded that runs, sweep jobs and
    # ranks share; augmentation then runs on those tensors. Evaluation never uses it.
    cache: CacheMode = CacheMode.auto
    cache_max_gb: float = field(default=8.0, metadata=greater_than(0))
    cache_side_ratio: float = field(default=1.5, metadata=at_least(1))
    augment: AugmentConf = field(default_factory=AugmentConf)
    # For Azure ML jobs: a registered data asset (azureml:name:version) or a local
    # folder that is uploaded; mounted read-only as data.root. null: the job finds
    # (or downloads) the data as it would here.
    azure_input: Optional[str] = None


# --------------------------------------------------------------------------- compute
class Backend(str, Enum):
    """Where training runs: each is the module ``lettucify.compute.<value>``."""

    local = "local"  # in this process (or in each process a scheduler started)
    torchrun = "torchrun"  # workers started by PyTorch's elastic launcher
    azureml = "azureml"  # a command job on an Azure ML cluster (lettucify/azure)


@dataclass
class ComputeConf:
    backend: Backend = Backend.local
    # "cpu", "cuda" or "cuda:N" (with several processes each takes cuda:LOCAL_RANK).
    device: str = field(default="cpu", metadata=matches(r"cpu|cuda(:\d+)?", "cpu, cuda or cuda:N"))
    # torch.set_num_threads per process; null keeps PyTorch's default.
    num_threads: Optional[int] = field(default=None, metadata=at_least(1))
    amp: bool = False
    amp_dtype: str = field(default="bfloat16", metadata=one_of("bfloat16", "float16"))
    channels_last: bool = True
    pin_memory: bool = False
    # Keep freed host memory for reuse instead of returning it to the OS after each
    # large tensor (glibc only): about 1.7x faster CPU training steps, at the cost of
    # holding the peak memory.
    reuse_host_memory: bool = True
    # With several processes: null picks nccl on CUDA and gloo on CPU. The timeout
    # bounds every collective, so a dead rank fails the others instead of hanging them.
    process_group_backend: Optional[str] = field(default=None, metadata=one_of("gloo", "nccl", "mpi", "ucc"))
    collective_timeout_s: float = field(default=300.0, metadata=greater_than(0))


@dataclass
class TorchrunConf(ComputeConf):
    backend: Backend = Backend.torchrun
    nproc_per_node: int = field(default=2, metadata=at_least(1))
    nnodes: int = field(default=1, metadata=at_least(1))
    node_rank: int = field(default=0, metadata=in_range(0, "nnodes", upper_open=True))
    # Multi-node rendezvous: the host:port of node 0 (all nodes give the same). With
    # one node and no endpoint, torchrun's --standalone picks a free port.
    rdzv_endpoint: Optional[str] = None
    rdzv_backend: str = field(default="c10d", metadata=one_of("c10d", "etcd", "etcd-v2"))
    # Static rendezvous instead, at node 0's address, as cluster schedulers (Azure ML)
    # hand it out in MASTER_ADDR / MASTER_PORT; set, it replaces rdzv_endpoint.
    master_addr: Optional[str] = None
    master_port: int = field(default=29500, metadata=in_range(1, 65535))
    # Restart the whole group this many times when a worker fails; training resumes
    # from the last checkpoint.
    max_restarts: int = field(default=0, metadata=at_least(0))


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
    min_instances: int = field(default=0, metadata=in_range(0, "max_instances"))
    max_instances: int = field(default=5, metadata=at_least(1))
    # Idle nodes go away after this long, so an idle cluster costs nothing.
    idle_time_before_scale_down: int = field(default=1800, metadata=at_least(0))
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

    backend: Backend = Backend.azureml
    device: str = "cuda"
    amp: bool = True
    # V100 and T4 have no fast bfloat16.
    amp_dtype: str = "float16"
    pin_memory: bool = True
    # The job's shape: nodes, and GPUs (one process each) per node.
    instance_count: int = field(default=1, metadata=in_range(1, "azure.cluster.max_instances"))
    gpus_per_node: int = field(default=1, metadata=at_least(1))
    nnodes: int = "${.instance_count}"  # type: ignore[assignment]
    nproc_per_node: int = "${.gpus_per_node}"  # type: ignore[assignment]
    num_threads: Optional[int] = None
    azure: AzureConf = field(default_factory=AzureConf)


# --------------------------------------------------------------------------- optim
@dataclass
class OptimizerConf:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = field(default=1e-3, metadata=greater_than(0))
    weight_decay: float = field(default=0.0, metadata=at_least(0))


@dataclass
class AdamWConf(OptimizerConf):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: List[float] = field(
        default_factory=lambda: [0.9, 0.999], metadata=each(in_range(0, 1, upper_open=True), length=2)
    )


@dataclass
class SGDConf(OptimizerConf):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = field(default=0.9, metadata=in_range(0, 1, upper_open=True))
    nesterov: bool = True


@dataclass
class SchedulerConf:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class WarmupCosineConf(SchedulerConf):
    _target_: str = "lettucify.train.schedule.warmup_cosine"
    warmup_epochs: float = field(default=1.0, metadata=at_least(0))
    min_lr_ratio: float = field(default=0.01, metadata=in_range(0, 1))


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
    epochs: int = field(default=20, metadata=at_least(1))
    label_smoothing: float = field(default=0.1, metadata=in_range(0, 1, upper_open=True))
    # Batch-level MixUp / CutMix (one of the two, at random, per batch); 0 disables.
    # The regulariser that helped most on food16's validation split (experiments/README.md).
    mixup_alpha: float = field(default=0.2, metadata=at_least(0))
    cutmix_alpha: float = field(default=1.0, metadata=at_least(0))
    # Clip the global gradient norm; null disables clipping.
    grad_clip_norm: Optional[float] = field(default=1.0, metadata=greater_than(0))
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
    min_accuracy: Optional[float] = field(default=None, metadata=in_range(0, 1))


# --------------------------------------------------------------------------- serve
class ServeBackend(str, Enum):
    """What runs the model in ``task=serve`` (lettucify/serve/inference.py)."""

    onnxruntime = "onnxruntime"  # the model exported at start-up (lettucify.models.export)
    torch = "torch"  # the loaded PyTorch module (a registered version: its torch.export program)


@dataclass
class ServeConf:
    """``task=serve``: the HTTP server (lettucify/serve/), its inference and its limits."""

    host: str = "127.0.0.1"
    # 0: a free port the system picks (the printed URL says which).
    port: int = field(default=8080, metadata=in_range(0, 65535))
    backend: ServeBackend = ServeBackend.onnxruntime
    # Average the logits of each image and its mirror image, as task=evaluate does: what is
    # served is then what was evaluated (and registered on that accuracy), at twice the compute.
    tta_flip: bool = "${trainer.tta_flip}"  # type: ignore[assignment]
    top_k: int = field(default=5, metadata=at_least(1))
    # Micro-batching: one model run takes up to max_batch_size queued images, waiting up to
    # max_batch_wait_ms after the first for more (0: only what is already queued). On 2 CPU
    # cores batches of 8 served ~10% fewer requests/s than 1, with a 1.3x p99 (EfficientNet-
    # Lite0 costs the same per image in a batch there); raise them on more cores or a GPU.
    max_batch_size: int = field(default=1, metadata=at_least(1))
    max_batch_wait_ms: float = field(default=0.0, metadata=at_least(0))
    # Images waiting for the model; a request that would go over it gets 503 + Retry-After.
    max_queue_images: int = field(default=64, metadata=at_least("max_batch_images"))
    # Limits of one request: body size (413), images in it (413), pixels of one image by
    # its header, before decoding (413), and its time to an answer (504).
    max_body_mb: float = field(default=10.0, metadata=greater_than(0))
    max_batch_images: int = field(default=32, metadata=at_least(1))
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata=at_least(1))
    request_timeout_s: float = field(default=30.0, metadata=greater_than(0))
    # When this environment variable is set (non-empty), every route but the health probes
    # needs "Authorization: Bearer <its value>".
    api_key_env: str = "LETTUCIFY_API_KEY"
    # The try-it page at / (lettucify/serve/page/: plain HTML, CSS and a script, no CDN):
    # it opens without the key and asks for one, for /predict, when the server has one.
    page: bool = True
    # Reported in every answer and metric: which deployment (blue/green) answered.
    deployment: Optional[str] = "${oc.env:LETTUCIFY_DEPLOYMENT,null}"
    # The registered name and version a model folder holds (model_uri=/model in a container,
    # where the registry is out of reach), for the answers and metrics; null: as resolved.
    model_name: Optional[str] = "${oc.env:LETTUCIFY_MODEL_NAME,null}"
    model_version: Optional[str] = "${oc.env:LETTUCIFY_MODEL_VERSION,null}"
    # Server processes, each with its own copy of the model (Prometheus multiprocess mode).
    workers: int = field(default=1, metadata=at_least(1))
    # Threads of one model run (ONNX Runtime's intra-op threads, torch.set_num_threads): on
    # 2 cores 1 served ~1.5x more requests/s than 2, whose spinning starved the HTTP layer.
    intra_op_threads: int = field(default=1, metadata=at_least(1))
    # Threads that decode and preprocess uploads; each holds at most one decoded image.
    decode_threads: int = field(default=2, metadata=at_least(1))
    # On SIGTERM / Ctrl-C: how long requests in flight get to finish.
    graceful_shutdown_s: float = field(default=30.0, metadata=greater_than(0))


@dataclass
class PredictConf:
    """``task=predict``: label every file of ``input`` here, or through ``endpoint_url``."""

    # A running server's or deployment's scoring URL (http://host:8080/predict, an Azure ML
    # endpoint's .../score); null: the model of checkpoint= or model_uri= runs here.
    endpoint_url: Optional[str] = field(default=None, metadata=matches(r"https?://\S+", "an http:// or https:// URL"))
    # Sent as "Authorization: Bearer <its value>" to the endpoint when set.
    api_key_env: str = "LETTUCIFY_API_KEY"
    # Requests in flight to the endpoint at once, and how often one that got 429/502/503/504
    # or no answer is sent again (after Retry-After, else a backoff).
    concurrency: int = field(default=4, metadata=at_least(1))
    retries: int = field(default=5, metadata=at_least(0))
    timeout_s: float = field(default=60.0, metadata=greater_than(0))
    # Labels and scores in the top_k column of predictions.csv.
    top_k: int = field(default=5, metadata=at_least(1))
    # Here: photos per model run, threads that decode them, and the model's own threads
    # (null: ONNX Runtime's or PyTorch's default, every core).
    batch_size: int = field(default=32, metadata=at_least(1))
    decode_threads: int = field(default=4, metadata=at_least(1))
    intra_op_threads: Optional[int] = field(default=None, metadata=at_least(1))
    # What the server does, so that a folder is labelled as a request would be.
    backend: ServeBackend = "${serve.backend}"  # type: ignore[assignment]
    tta_flip: bool = "${serve.tta_flip}"  # type: ignore[assignment]
    max_image_pixels: int = field(default="${serve.max_image_pixels}", metadata=at_least(1))  # type: ignore[arg-type]


class DeployAction(str, Enum):
    deploy = "deploy"  # the idle colour gets the version, then the traffic
    status = "status"  # each colour's version, traffic and health
    rollback = "rollback"  # all traffic back to the other colour
    stop = "stop"  # take the deployment down (local)


class DeployStrategy(str, Enum):
    all_at_once = "all_at_once"
    canary = "canary"


class DeployTarget(str, Enum):
    local = "local"
    azure_online = "azure_online"
    kubernetes = "kubernetes"


@dataclass
class DeployConf:
    """``task=deploy``: the flow, the same for every target (lettucify/deploy/flow.py).

    Each option of the ``deploy`` group names its ``target`` and carries that target's
    settings under the same name (``deploy.local.port``, ``deploy.kubernetes.min_pods``):
    a class of lettucify/deploy/ built through its ``_target_``.
    """

    target: DeployTarget = MISSING
    action: DeployAction = DeployAction.deploy
    strategy: DeployStrategy = DeployStrategy.canary
    # Percent of live traffic on the new colour at each canary step; the last must be 100.
    canary_steps: List[int] = field(
        default_factory=lambda: [10, 50, 100], metadata=each(in_range(1, 100), increasing=True)
    )
    # How long each step (and the mirror phase) runs before the health gate is read.
    step_wait_s: float = field(default=10.0, metadata=at_least(0))
    # The gate, on the new colour's own /metrics over the step: server errors (5xx) per
    # request, and the 99th percentile latency.
    max_error_rate: float = field(default=0.01, metadata=in_range(0, 1))
    max_p99_ms: float = field(default=2000.0, metadata=greater_than(0))
    # Percent of live traffic copied to the new colour (answers dropped) before the first step.
    mirror_percent: int = field(default=0, metadata=in_range(0, 50))
    ready_timeout_s: float = field(default=300.0, metadata=greater_than(0))
    # The smoke test's photo and the label it must get; null: the first food16 test photo
    # (through paths.data_dir), labelled by its class folder.
    smoke_photo: Optional[str] = None
    smoke_label: Optional[str] = None
    # Sent as "Authorization: Bearer <value>" to the deployment, when set.
    api_key_env: str = "LETTUCIFY_API_KEY"
    # The registry alias that follows the version with all live traffic.
    live_alias: str = "live"


@dataclass
class LocalTargetConf:
    """Blue and green as two server processes behind a weighted front (the server in router mode)."""

    _target_: str = "lettucify.deploy.local.LocalTarget"
    host: str = "127.0.0.1"
    # The front's port: what clients call.
    port: int = field(default=8080, metadata=in_range(1, 65535))
    # Processes, pid files, ports and logs.
    state_dir: str = "outputs/deployments/local"
    # On a swap, remove or stop: how long a colour's requests in flight through the front get
    # to finish, and then how long its server gets to exit on SIGTERM before it is killed.
    drain_s: float = field(default=30.0, metadata=greater_than(0))
    # Overrides for the colours' servers (task=serve), e.g. ["serve.workers=2"].
    serve_overrides: List[str] = field(default_factory=list)


class AzureShip(str, Enum):
    mlflow = "mlflow"  # the registered MLflow model, Azure ML's no-code deployment
    container = "container"  # the Lettucify server image (deploy/Dockerfile)


@dataclass
class AzureOnlineTargetConf:
    """A ManagedOnlineEndpoint with deployments named blue and green (lettucify/azure)."""

    _target_: str = "lettucify.deploy.azure_online.AzureOnlineTarget"
    workspace: AzureWorkspaceConf = field(default_factory=AzureWorkspaceConf)
    endpoint_name: str = field(default="lettucify-food16", metadata=matches(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]", "3 to 32 letters, digits and dashes, starting with a letter"))
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = field(default=1, metadata=at_least(1))
    ship: AzureShip = AzureShip.mlflow
    # ship=container: the serving image, in a registry the workspace can pull from.
    image: Optional[str] = None
    # Requests one instance is sent at once (Azure queues the rest at the endpoint); 1 is
    # Azure's default. ship=container's server queues and micro-batches its own, so it can take more.
    max_concurrent_requests_per_instance: int = field(default=1, metadata=at_least(1))
    # Azure's time limit on one scoring request (it allows at most 180 s): serve.request_timeout_s's 30 s.
    request_timeout_ms: int = field(default=30000, metadata=in_range(1, 180000))
    # Write endpoint.yaml and deployment-<colour>.yaml to the run folder; call nothing.
    dry_run: bool = False


@dataclass
class KubernetesTargetConf:
    """Manifests per colour, a Gateway (Application Gateway for Containers) and an HTTPRoute."""

    _target_: str = "lettucify.deploy.kubernetes.KubernetesTarget"
    namespace: str = "lettucify"
    # The serving image's repository: its tag becomes <model>-<version>, one image per
    # version with the model baked in (built from images/<colour>/ under manifests_dir).
    image: str = "lettucify-serve:latest"
    min_pods: int = field(default=1, metadata=at_least(1))
    max_pods: int = field(default=5, metadata=at_least("min_pods"))
    cpu_target_percent: int = field(default=70, metadata=in_range(1, 100))
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    gateway_class: str = "azure-alb-external"
    # The ALB the controller manages (alb-namespace/alb-name), or an existing one (alb_id).
    alb_namespace: Optional[str] = "alb-infra"
    alb_name: Optional[str] = "lettucify-alb"
    alb_id: Optional[str] = None
    hostname: Optional[str] = None
    # Apply with the Kubernetes Python client; else print `kubectl apply -f <folder>`.
    apply: bool = False
    # With alb_id: the name of that ALB's frontend the Gateway takes.
    alb_frontend: Optional[str] = field(default=None, metadata=matches(r"[A-Za-z0-9][\w.-]*", "an Azure resource name: letters, digits, _ . and -"))
    # A Secret in `namespace` whose key "api-key" holds the key the server asks for
    # (Authorization: Bearer); null: the server asks for none.
    api_key_secret: Optional[str] = field(
        default=None,
        metadata=matches(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", "a Kubernetes name: lower-case letters, digits, - and ."),
    )
    # What lives from one command to the next: manifests/ (the current manifests, what
    # `kubectl apply -f` takes), images/<colour>/ (each colour's image build) and state.json.
    manifests_dir: str = field(default="outputs/deployments/kubernetes", metadata=matches(r".*\S.*", "a folder"))


@dataclass
class LocalDeployConf(DeployConf):
    target: DeployTarget = DeployTarget.local
    local: LocalTargetConf = field(default_factory=LocalTargetConf)


@dataclass
class AzureOnlineDeployConf(DeployConf):
    target: DeployTarget = DeployTarget.azure_online
    azure_online: AzureOnlineTargetConf = field(default_factory=AzureOnlineTargetConf)


@dataclass
class KubernetesDeployConf(DeployConf):
    target: DeployTarget = DeployTarget.kubernetes
    kubernetes: KubernetesTargetConf = field(default_factory=KubernetesTargetConf)


class Direction(str, Enum):
    maximize = "maximize"
    minimize = "minimize"


class Task(str, Enum):
    train = "train"
    evaluate = "evaluate"
    promote = "promote"
    serve = "serve"
    predict = "predict"
    deploy = "deploy"


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
    serve: Any = MISSING
    predict: Any = MISSING
    deploy: Any = MISSING
    task: Task = Task.train
    # task=evaluate, serve and predict: a checkpoint file, or an MLflow model URI (models:/<name>@<alias>).
    checkpoint: Optional[str] = None
    model_uri: Optional[str] = None
    # task=predict: the photos to label, a folder (searched recursively), a file or a glob.
    input: Optional[str] = None
    # What a job returns to a sweeper (and a sweep's summary sorts by): any metric the
    # task logs (for task=train, val_acc; with data.cv_folds, the folds' mean).
    optimized_metric: str = field(default="val_acc", metadata=matches(r"[A-Za-z_][\w./-]*", "a metric's name"))
    optimized_direction: Direction = Direction.maximize
    # numpy's seeds are 32-bit.
    seed: int = field(default=0, metadata=in_range(0, 2**32 - 1))


_SCHEMAS = {
    "model": {"cnn16": CNN16Conf, "efficientnet_lite": EfficientNetLiteConf},
    "data": {"imagefolder": DataConf},
    "compute": {"local": ComputeConf, "torchrun": TorchrunConf, "azureml": AzureComputeConf},
    "optimizer": {"adamw": AdamWConf, "sgd": SGDConf},
    "scheduler": {"warmup_cosine": WarmupCosineConf, "constant": ConstantLRConf},
    "trainer": {"default": TrainerConf},
    "paths": {"default": PathsConf},
    "logger": {"mlflow": LoggerConf},
    "serve": {"default": ServeConf},
    "predict": {"default": PredictConf},
    "deploy": {"local": LocalDeployConf, "azure_online": AzureOnlineDeployConf, "kubernetes": KubernetesDeployConf},
}


def share_config_store() -> None:
    """Make a deep copy of Hydra's ConfigStore the store itself.

    Hydra 1.3 deep-copies its config repository, and with it the ConfigStore singleton and
    this whole schema, each time it lists a config group: ``--help`` lists ~180 and took
    4x a bare Hydra app. Upstream stopped holding the store in the repository
    (facebookresearch/hydra#2928, not released in 1.3); sharing the singleton is the same.
    """
    ConfigStore.__deepcopy__ = lambda self, memo: self


def register_configs() -> None:
    share_config_store()
    cs = ConfigStore.instance()
    cs.store(name="lettucify_schema", node=Config)
    for group, schemas in _SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    if not OmegaConf.has_resolver("lettucify_root"):
        # Lets conf/config.yaml add experiments/ to Hydra's search path wherever it is run from.
        OmegaConf.register_new_resolver("lettucify_root", lambda: str(REPO_ROOT))


register_configs()
