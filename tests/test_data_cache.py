"""The decoded-image cache (lettucify/data/cache.py): what it holds, when it is rebuilt,
that a killed writer leaves nothing in use, that processes share one writer, and that
training sees the same photos with it and without it while evaluation never uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import FOOD16, make_image_folder, training_sample
from lettucify.data.cache import INDEX, cache_key, open_cache
from lettucify.data.datamodule import ImageFolderData
from lettucify.data.images import load_rgb
from lettucify.serve.inference import Preprocessor

MEAN = STD = (0.5, 0.5, 0.5)
SIDE = 24


def photos(root: Path) -> List[Path]:
    return sorted((root / "train").rglob("*.jpg"))


def cached_folders(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and ".tmp-" not in p.name)


def test_each_photo_is_its_decoded_downscaled_pixels(tmp_path):
    paths = photos(make_image_folder(tmp_path / "images", size=(64, 48)))
    images = open_cache(tmp_path / "cache", paths, SIDE, 10**8)
    assert len(images) == len(paths)
    for path in paths[:5]:
        expected = np.asarray(load_rgb(path, shorter_side=SIDE))
        tensor = images[path]
        assert tensor.dtype == torch.uint8 and tensor.shape == (3, SIDE, 32)  # 64x48 -> 32x24
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), expected)


def test_a_changed_image_or_another_size_is_a_new_cache_and_the_same_is_reused(tmp_path):
    paths = photos(make_image_folder(tmp_path / "images"))
    root = tmp_path / "cache"
    first = open_cache(root, paths, SIDE, 10**8)
    assert open_cache(root, paths, SIDE, 10**8).folder == first.folder  # reused
    assert open_cache(root, paths, SIDE + 8, 10**8).folder != first.folder  # another size
    Image.new("RGB", (64, 48), (250, 10, 10)).save(paths[0])  # the same file, new pixels
    changed = open_cache(root, paths, SIDE, 10**8)
    assert changed.folder != first.folder
    assert changed[paths[0]].float().mean(dim=(1, 2))[0] > 200  # the new, red, pixels
    assert open_cache(root, paths[1:], SIDE, 10**8).folder not in {first.folder, changed.folder}
    assert len(cached_folders(root)) == 4


# A process that decodes slowly (0.1 s a photo) and says when it writes the cache.
WRITER = """
import sys, time
from pathlib import Path
import lettucify.data.cache as cache
slow, write = cache.load_rgb, cache._write
cache.load_rgb = lambda *a, **k: (time.sleep(0.1), slow(*a, **k))[1]
cache._write = lambda *a: (print("WROTE", flush=True), write(*a))
paths = sorted(Path(sys.argv[1]).rglob("*.jpg"))
print("READ", len(cache.open_cache(Path(sys.argv[2]), paths, int(sys.argv[3]), 10**8)), flush=True)
"""


def writer(images: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(images / "train"), str(root), str(SIDE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_writer_killed_midway_leaves_nothing_in_use_and_the_next_one_writes_it_whole(tmp_path):
    images, root = make_image_folder(tmp_path / "images"), tmp_path / "cache"
    process = writer(images, root)
    deadline = time.monotonic() + 60
    while not list(root.glob("*.tmp-*/shard-000.bin")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few photos into the shard
    process.kill()
    process.wait()
    (partial,) = root.glob("*.tmp-*")
    assert 0 < (partial / "shard-000.bin").stat().st_size and not (partial / INDEX).exists()
    assert cached_folders(root) == []  # nothing under the key: no reader can take it
    paths = photos(images)
    whole = open_cache(root, paths, SIDE, 10**8)
    assert whole.folder.name == cache_key(paths, SIDE, 10**8) and len(whole) == len(paths)
    assert list(root.glob("*.tmp-*")) == []  # the killed writer's leftovers are gone
    assert np.array_equal(whole[paths[-1]].permute(1, 2, 0).numpy(), np.asarray(load_rgb(paths[-1], shorter_side=SIDE)))


def test_two_processes_wanting_the_same_cache_write_it_once_and_both_read_it(tmp_path):
    images, root = make_image_folder(tmp_path / "images"), tmp_path / "cache"
    processes = [writer(images, root) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    said = "".join(out for out, _ in outputs)
    assert said.count("WROTE") == 1 and said.count(f"READ {len(photos(images))}") == 2
    assert len(cached_folders(root)) == 1


def setup(root: Path, cache: str, cache_dir: Path, input_size: int = 32, batched: bool = True) -> ImageFolderData:
    data = ImageFolderData(name="tiny", root=str(root), cache=cache, cache_dir=str(cache_dir), val_fraction=0.25,
                           augment={"batched": batched})
    data.setup(input_size, MEAN, STD)
    return data


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "each photo"])
def test_training_sees_the_same_photos_in_the_same_order_with_the_cache_on_and_off(tmp_path, batched):
    images = make_image_folder(tmp_path / "images", size=(96, 64))
    on, off = (setup(images, mode, tmp_path / "cache", batched=batched) for mode in ("on", "off"))
    assert on.decoded is not None and off.decoded is None
    assert (on.batch_augment is not None) == batched and off.batch_augment is None
    assert len(on.decoded) == len(on.train_set) + len(on.val_set)  # the whole training folder
    for data in (on, off):
        data.loader = data.train_loader(num_replicas=1, rank=0, seed=3, pin_memory=False, workers=0)
    for epoch in range(2):
        labels = []
        for data in (on, off):
            data.loader.sampler.set_epoch(epoch)
            labels.append(torch.cat([batch_labels for _, batch_labels in data.loader]).tolist())
        assert labels[0] == labels[1] and len(labels[0]) == len(on.train_set)
        assert [on.train_set.samples[index][1] for index, _ in on.loader.sampler] == labels[0]
        index, seed = next(iter(on.loader.sampler))
        photo = training_sample(on, (index, seed))[0]
        assert photo.shape == training_sample(off, (index, seed))[0].shape == (3, 32, 32)
        assert not torch.equal(photo, training_sample(on, (index, seed + 1))[0])  # still random
        assert torch.equal(photo, training_sample(on, (index, seed))[0])  # and a function of the seed


def test_evaluation_and_serving_preprocessing_are_the_same_with_the_cache_on_and_off(tmp_path):
    images = make_image_folder(tmp_path / "images", size=(96, 64))
    on, off = (setup(images, mode, tmp_path / "cache") for mode in ("on", "off"))
    serving = Preprocessor({"input_size": 32, "mean": MEAN, "std": STD}, 10**8)
    for split in ("val_set", "test_set"):
        a, b = getattr(on, split), getattr(off, split)
        assert a.samples == b.samples
        for index in range(len(a)):
            assert torch.equal(a[index][0], b[index][0])
            assert np.array_equal(a[index][0].numpy(), serving(a.samples[index][0]))


def test_auto_stays_off_when_the_cache_would_be_over_cache_max_gb(tmp_path, caplog):
    images = make_image_folder(tmp_path / "images")
    data = ImageFolderData(name="tiny", root=str(images), cache="auto", cache_max_gb=1e-6, cache_dir=str(tmp_path / "c"))
    with caplog.at_level("INFO"):
        data.setup(32, MEAN, STD)
    assert data.decoded is None and "over data.cache_max_gb=1e-06" in caplog.text
    data = ImageFolderData(name="tiny", root=str(images), cache="auto", cache_dir=str(tmp_path / "c"))
    data.setup(32, MEAN, STD)
    assert data.decoded is not None and data.decoded.folder.parent == tmp_path / "c" / "decoded"


def test_data_cache_on_in_a_folder_it_cannot_write_is_one_line(tmp_path):
    from lettucify.errors import DataError

    images = make_image_folder(tmp_path / "images")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(DataError, match=r"^data cache in .*/file/decoded: .* \(data.cache=off decodes every epoch\)$"):
        setup(images, "on", blocked)


@pytest.mark.slow
def test_on_food16_the_default_model_learns_as_well_with_the_cache_as_without(tmp_path):
    """EfficientNet-Lite0 fine-tuned 5 epochs, the same seed, data.cache=on and off."""
    if not (FOOD16 / "train").is_dir():
        pytest.skip("needs the food16 photos in $LETTUCIFY_DATA_DIR")
    top1 = {}
    for mode in ("on", "off"):
        run_dir = tmp_path / mode
        done = subprocess.run(
            [sys.executable, "-m", "lettucify", "trainer.epochs=5", f"data.cache={mode}", "registry.enabled=false",
             f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        log = (run_dir / "lettucify.log").read_text()
        assert ("data cache in " in log) == (mode == "on") and ("data cache off" in log) == (mode == "off")
        top1[mode] = json.loads((run_dir / "metrics.json").read_text())["top1"]
    assert min(top1.values()) > 0.3, top1  # chance is 1/16
    assert abs(top1["on"] - top1["off"]) < 0.1, top1
