"""The MLflow model registry: register a trained model, promote it, load it back.

A registered version is one MLflow model folder with two flavors:

    data/model.pt2               ``pytorch``: the ``torch.export`` program (MLflow's ``pt2``
                                 format: no pickled Python objects, loadable without
                                 Lettucify's code), dynamic batch; ``load_registered`` loads it
    data/model.onnx              the same network as ONNX, dynamic batch, its logits checked
                                 against PyTorch's on the example images at registration
    extra_files/classes.json     the class names, in the order of the logits
    extra_files/preprocess.json  input_size, mean and std of ``eval_transform``
    code/lettucify/              ``python_function``: Lettucify's code, for the pyfunc
                                 (``lettucify.tracking.pyfunc``: photos in, labels out)
    MLmodel, requirements.txt, conda.yaml, python_env.yaml

so that a server, ``mlflow models serve`` or any MLflow platform can use it without the run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from lettucify.errors import LettucifyError
from lettucify.tracking.secrets import Masker
from lettucify.tracking.store import client as _client
from lettucify.tracking.store import resolve_tracking_uri, setting

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.json"
PREPROCESS_FILE = "preprocess.json"
# Where they are in a version's folder (mlflow.pytorch puts extra files in extra_files/).
CLASSES_PATH = f"extra_files/{CLASSES_FILE}"
PREPROCESS_PATH = f"extra_files/{PREPROCESS_FILE}"
PT2_PATH = "data/model.pt2"
ONNX_PATH = "data/model.onnx"
# What a version's code imports, no more: torch runs the pt2 program; the pyfunc decodes
# with pillow and numpy, preprocesses with torchvision, runs onnxruntime and answers a
# pandas frame; Lettucify's config, errors and tracking package import hydra-core,
# omegaconf and pyyaml. Pinned to what trained the model (MLflow adds mlflow itself).
REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pandas", "onnxruntime", "hydra-core", "omegaconf", "pyyaml")
# Run tags copied onto the model version.
_PROVENANCE_TAGS = ("git_commit", "git_dirty", "dataset_fingerprint")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


class ExportedModel(nn.Module):
    """A loaded ``torch.export`` program as an ordinary module.

    The program was traced in eval mode and stays so: ``train()``/``eval()`` only set the
    flag (calling them on the bare exported module raises ``NotImplementedError``), so
    code that toggles modes, such as ``lettucify.evaluate.predict``, can use it.
    """

    def __init__(self, program: nn.Module, classes: Sequence[str], preprocess: Mapping[str, Any]) -> None:
        super().__init__()
        self.program = program
        self.classes = list(classes)
        self.preprocess = dict(preprocess)
        self.num_classes = len(self.classes)
        self.training = False

    def train(self, mode: bool = True) -> "ExportedModel":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def pip_requirements() -> List[str]:
    """``torch==2.14.1`` etc. (local version labels such as ``+cu130`` dropped)."""
    pinned = []
    for dist in REQUIREMENTS:
        try:
            pinned.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return pinned


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def register_model(
    model: nn.Module,
    classes: Sequence[str],
    preprocess: Mapping[str, Any],
    example_input: torch.Tensor,
    registry_cfg: Any,
    test_acc: Optional[float] = None,
    *,
    run_id: Optional[str] = None,
) -> Any:
    """Log ``model`` to the active MLflow run and register it as a new version of
    ``registry.name`` with the alias ``registry.alias``; return the ``ModelVersion``.

    Returns None (and logs why) when ``registry.enabled`` is false, or when
    ``registry.min_accuracy`` is set and ``test_acc`` is below it (or unknown).
    ``example_input`` is a batch of preprocessed images (one or more, real photos: the
    ONNX file's logits are checked against the model's on all of them, and a difference
    over 1e-4 is a LettucifyError before anything is logged); the model is exported on
    the CPU in eval mode (a copy: ``model`` itself is left as it is).
    """
    if registry_cfg is None or not setting(registry_cfg, "enabled", True):
        log.info("model registry: not registering (registry.enabled=false)")
        return None
    name = setting(registry_cfg, "name")
    alias = setting(registry_cfg, "alias") or "candidate"
    min_accuracy = setting(registry_cfg, "min_accuracy")
    if min_accuracy is not None and (test_acc is None or test_acc < min_accuracy):
        log.info(
            "model registry: not registering %s: test accuracy %s is below registry.min_accuracy=%s",
            name, "unknown" if test_acc is None else f"{test_acc:.4f}", min_accuracy,
        )
        return None

    import mlflow
    from mlflow.models import Model

    from lettucify.models.export import to_onnx

    active = mlflow.active_run()
    if active is None or (run_id is not None and active.info.run_id != run_id):
        raise RuntimeError("register_model: the training run must be the active MLflow run (open_tracker)")
    run_id = active.info.run_id
    classes = [str(c) for c in classes]
    preprocess = _plain(preprocess)

    net = copy.deepcopy(_unwrap(model)).to("cpu", memory_format=torch.contiguous_format).eval()
    images = example_input.detach().to("cpu", torch.float32)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    # torch.export makes a size-1 dimension static: trace with a batch of two.
    example = images[:2].expand(2, *images.shape[1:]).contiguous() if images.shape[0] == 1 else images[:2].contiguous()
    with torch.no_grad():
        logits = net(example)
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        raise ValueError(f"the model gives logits of shape {tuple(logits.shape)} for {len(classes)} classes")

    with tempfile.TemporaryDirectory(prefix="lettucify-model-") as tmp:
        try:
            onnx_file = to_onnx(net, example, Path(tmp) / Path(ONNX_PATH).name, check=images)
        except LettucifyError as err:  # before anything is logged
            raise LettucifyError(f"not registering {name}: {err}") from None
        side_files = [Path(tmp) / CLASSES_FILE, Path(tmp) / PREPROCESS_FILE]
        side_files[0].write_text(json.dumps(classes, indent=2) + "\n")
        side_files[1].write_text(json.dumps(preprocess, indent=2) + "\n")
        info = Model.log(
            artifact_path=None,  # a required parameter, deprecated for name
            name="model",
            flavor=sys.modules[__name__],  # save_model below writes the folder
            registered_model_name=name,
            metadata={"classes": classes, "preprocess": preprocess},
            pytorch_model=net,
            input_example=example,
            onnx_file=onnx_file,
            extra_files=[str(p) for p in side_files],
            serialization_format="pt2",
        )
    version = str(info.registered_model_version)

    client = mlflow.MlflowClient()
    run_tags = client.get_run(run_id).data.tags
    tags = {"run_id": run_id, **{k: run_tags[k] for k in _PROVENANCE_TAGS if k in run_tags}}
    if test_acc is not None:
        tags["test_acc"] = repr(float(test_acc))
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    log.info("model registry: registered %s version %s as @%s", name, version, alias)
    return client.get_model_version(name, version)


def save_model(
    path: str, mlflow_model: Any, *, pytorch_model: nn.Module, input_example: torch.Tensor, onnx_file: Path,
    extra_files: List[str], serialization_format: str,
) -> None:
    """``Model.log``'s flavor hook: write a version's folder (see the module's docstring)."""
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from lettucify.tracking import pyfunc

    # pt2 traces input_example with the dimensions this signature leaves at -1 dynamic.
    batch = TensorSpec(np.dtype(np.float32), (-1, *input_example.shape[1:]), "image")
    mlflow.pytorch.save_model(
        pytorch_model,
        path,
        mlflow_model=mlflow_model,
        serialization_format=serialization_format,
        signature=ModelSignature(inputs=Schema([batch])),
        input_example=input_example,
        pip_requirements=pip_requirements(),
        extra_files=extra_files,
    )
    # The version keeps no signature: MLflow enforces it on the pyfunc's input, and one
    # schema cannot say "base64 strings or a float batch" (the pyfunc checks its input).
    mlflow_model.signature = None
    root = Path(path)
    shutil.copyfile(onnx_file, root / ONNX_PATH)
    pyfunc.add_flavor(mlflow_model, root)
    mlflow_model.model_size_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    mlflow_model.save(str(root / "MLmodel"))


def registered_versions(name: str, run_id: Optional[str], tracking_uri: Optional[str] = None) -> List[str]:
    """The versions of ``name`` that ``run_id`` registered (none for an unknown model)."""
    if run_id is None:
        return []
    versions = _client(tracking_uri).search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted((str(v.version) for v in versions), key=int)


def promote(
    name: str,
    from_alias: str = "candidate",
    to_alias: str = "champion",
    tracking_uri: Optional[str] = None,
) -> Any:
    """Point ``to_alias`` at the version ``from_alias`` points at; return that ``ModelVersion``.

    Tags the version with where it came from: ``promoted_from`` (the alias),
    ``promoted_run_id``, ``promoted_at`` (UTC), ``replaced_version`` (the version
    ``to_alias`` pointed at before, if any) and the run's ``test_*`` metrics (one tag
    each, e.g. ``test_top1``). ``from_alias`` stays where it is.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    version = _model_version(client, name, alias=from_alias)
    try:
        previous = client.get_model_version_by_alias(name, to_alias).version
    except MlflowException:
        previous = None

    tags: Dict[str, str] = {
        "promoted_from": from_alias,
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if previous is not None and str(previous) != str(version.version):
        tags["replaced_version"] = str(previous)
    if version.run_id:
        tags["promoted_run_id"] = version.run_id
        metrics = client.get_run(version.run_id).data.metrics
        tags.update({key: repr(value) for key, value in sorted(metrics.items()) if key.startswith("test_")})
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, to_alias, version.version)
    log.info("model registry: %s version %s is now @%s (was @%s)", name, version.version, to_alias, from_alias)
    return client.get_model_version(name, version.version)


def _model_version(client: Any, name: str, alias: Optional[str] = None, version: Optional[str] = None) -> Any:
    """The ``ModelVersion`` of ``name`` at ``alias`` (else number ``version``); a
    LettucifyError saying what there is instead when the model, alias or version is not there."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        failure = err
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise LettucifyError(
            f"no registered model {name!r} in {Masker().text(client._registry_uri)}; "
            f"registered: {', '.join(names) or 'none'}"
        ) from None
    if alias:
        if alias not in model.aliases:
            aliases = ", ".join(sorted(model.aliases)) or "none"
            raise LettucifyError(f"{name} has no alias @{alias}; aliases: {aliases}")
    else:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        if int(version) not in versions:
            listed = ", ".join(map(str, versions)) or "none"
            raise LettucifyError(f"{name} has no version {version}; versions: {listed}")
    raise failure  # the model, alias and version are there: something else went wrong


@contextmanager
def _pickle_disallowed() -> Iterator[None]:
    variable = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    saved = os.environ.get(variable)
    os.environ[variable] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved


def load_registered(
    model_uri: str, tracking_uri: Optional[str] = None
) -> Tuple[ExportedModel, List[str], Dict[str, Any]]:
    """``(model, classes, preprocess)`` for ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` (or any MLflow model URI or folder).

    Only ``pt2`` models load: the archive is checked to be pickle-free whatever
    ``$MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` says. The model runs on the CPU.
    """
    import mlflow
    import mlflow.pytorch

    uri = resolve_tracking_uri(tracking_uri)
    match = _MODELS_URI.match(model_uri)
    source = model_uri
    if match:
        # Resolved here with an explicit client, not through MLflow's process-wide registry URI.
        client = _client(tracking_uri)
        version = _model_version(client, match["name"], match["alias"], match["version"]).version
        source = client.get_model_version_download_uri(match["name"], version)
    with tempfile.TemporaryDirectory(prefix="lettucify-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=uri))
        if not (local / PT2_PATH).is_file():
            raise ValueError(f"{model_uri} is not a pt2 (torch.export) model; refusing to unpickle it")
        with _pickle_disallowed():
            program = mlflow.pytorch.load_model(str(local))
        classes = json.loads((local / CLASSES_PATH).read_text())
        preprocess = json.loads((local / PREPROCESS_PATH).read_text())
    return ExportedModel(program, classes, preprocess), classes, preprocess


def resolve_version(model_uri: str, tracking_uri: Optional[str] = None) -> Tuple[str, Optional[str], Optional[str]]:
    """``(name, version, alias)`` that ``models:/<name>@<alias>`` or ``models:/<name>/<version>``
    points at now; any other URI is its own name, with neither version nor alias."""
    match = _MODELS_URI.match(model_uri)
    if not match:
        return model_uri, None, None
    version = _model_version(_client(tracking_uri), match["name"], match["alias"], match["version"]).version
    return match["name"], str(version), match["alias"]
