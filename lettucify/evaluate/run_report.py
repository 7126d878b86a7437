"""``report.html`` of a training or evaluation run: everything about the run on one page.

The config that made it (the overrides, the groups chosen, the key settings, the whole
config with secrets masked), the dataset (fingerprint, images per class and split, the
bad files left out and why), the learning curves and epochs, the test metrics with the
per-class table and every figure ``write_evaluation`` drew, the training time and
images/s, and the registry version and alias. Written beside those files (``html``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf

from lettucify.data.scan import BadImage, Sample
from lettucify.evaluate.html import REPORT_FILE, embedded_image, number, relative_link, render, write_html
from lettucify.tracking.run import dataset_fingerprint, hydra_overrides, mask_override
from lettucify.tracking.secrets import Masker

# The figures of write_evaluation, by the name the template gives them.
FIGURES = ("confusion_matrix", "roc_curves", "pr_curves", "confident_mistakes", "learning_curves")
# The settings a reader looks for first; the whole config follows them.
KEY_SETTINGS = (
    "task", "seed", "model.input_size", "data.name", "data.batch_size", "data.val_fraction", "data.cv_folds",
    "trainer.epochs", "trainer.select", "trainer.tta_flip", "optimizer._target_", "optimizer.lr",
    "optimizer.weight_decay", "scheduler._target_", "compute.device", "compute.amp", "compute.nproc_per_node",
)
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_time_s")
# Hydra's own groups and the schema's, which a reader did not choose.
_INTERNAL_GROUPS = ("hydra/", "schema/")


@dataclass
class DatasetFacts:
    root: Path
    classes: List[str]
    splits: Dict[str, Sequence[Sample]]  # split name -> its (path, label) samples
    bad: List[BadImage] = field(default_factory=list)

    @classmethod
    def of(cls, data: Any, splits: Sequence[str] = ("train", "validation", "test")) -> "DatasetFacts":
        """The ``splits`` the data module built (``build``/``setup``) that hold images."""
        sets = {"train": data.train_set, "validation": data.val_set, "test": data.test_set}
        samples = {name: sets[name].samples for name in splits if sets[name] is not None and len(sets[name])}
        # Bad files are found per folder: train/ (whence validation too) and test/.
        folders = {"validation": "train"}
        shown = {folders.get(name, name) for name in samples}
        return cls(Path(data.root), list(data.classes), samples, [b for b in data.bad_images if b.split in shown])

    def counts(self) -> Dict[str, Dict[str, int]]:
        counts: Dict[str, Dict[str, int]] = {}
        for split, samples in self.splits.items():
            per_class = counts.setdefault(split, {})
            for _, label in samples:
                per_class[self.classes[label]] = per_class.get(self.classes[label], 0) + 1
        return counts


def _hydra_record(run_dir: Path) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The run's overrides and chosen config groups, from what Hydra wrote in ``.hydra/``
    (a torchrun or cluster worker has no Hydra of its own, but the same folder)."""
    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return hydra_overrides(), []
    choices = sorted(
        (group, str(option)) for group, option in (hydra["runtime"].get("choices") or {}).items()
        if option is not None and not group.startswith(_INTERNAL_GROUPS)
    )
    return list(hydra["overrides"].get("task") or []), choices


def _training(history: Sequence[Mapping[str, float]]) -> Optional[Dict[str, Any]]:
    if not history:
        return None
    columns = [c for c in EPOCH_COLUMNS if any(c in record for record in history)]
    digits = {"lr": 6, "images_per_s": 1, "epoch_time_s": 1}
    rows = [[number(record.get(c), digits.get(c, 4)) if c != "epoch" else record.get(c) for c in columns]
            for record in history]
    speeds = [record["images_per_s"] for record in history if record.get("images_per_s")]
    return {
        "columns": columns, "rows": rows,
        "time_s": sum(record.get("epoch_time_s", 0.0) for record in history),
        "images_per_s": sum(speeds) / len(speeds) if speeds else None,
    }


def sweep_report_link(run_dir: Path) -> Optional[str]:
    """The link to the sweep's report when this run is a job of a sweep (Hydra writes
    ``multirun.yaml`` in the sweep folder, which holds the job folders)."""
    for folder in Path(run_dir).resolve().parents[:3]:  # hydra.sweep.subdir is a level or two
        if (folder / "multirun.yaml").is_file():
            return relative_link(folder / REPORT_FILE, Path(run_dir).resolve())
    return None


def write_run_report(
    run_dir: Path,
    cfg: DictConfig,
    metrics: Mapping[str, Any],
    dataset: DatasetFacts,
    *,
    kind: str,
    model: str,
    history: Optional[Sequence[Mapping[str, float]]] = None,
    registered: Optional[Mapping[str, Any]] = None,
    mlflow_run_id: Optional[str] = None,
) -> Path:
    """Write ``report.html`` in ``run_dir`` (after ``write_evaluation``, whose figures it
    embeds); ``kind`` is "training" or "evaluation". Returns its path."""
    run_dir = Path(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    masker = Masker()
    masker.collect(resolved)
    masked = masker.tree(resolved)
    overrides, choices = _hydra_record(run_dir)
    tree = OmegaConf.create(masked)
    settings = [(key, value) for key in KEY_SETTINGS if (value := OmegaConf.select(tree, key, default=None)) is not None]
    text = render(
        "run.html", kind=kind, run_dir=run_dir, written=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        sweep_link=sweep_report_link(run_dir), metrics=metrics, model=model, registered=registered,
        mlflow_run_id=mlflow_run_id, overrides=[mask_override(o, masker) for o in overrides], choices=choices,
        settings=settings, config_yaml=yaml.safe_dump(masked, sort_keys=False, allow_unicode=True),
        dataset={
            "root": dataset.root, "classes": dataset.classes, "splits": list(dataset.splits),
            "counts": dataset.counts(), "bad": dataset.bad,
            "fingerprint": dataset_fingerprint(dataset.root, [s for split in dataset.splits.values() for s in split]),
        },
        training=_training(history or []),
        figures={name: embedded_image(run_dir / f"{name}.png") for name in FIGURES},
    )
    return write_html(run_dir / REPORT_FILE, text)
