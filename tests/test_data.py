"""lettucify.data: decoding, scanning, download, splitting and the datasets."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import socket
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_image_folder, training_sample
from lettucify.config import REPO_ROOT, AugmentConf, BadImagePolicy, DownloadConf
from lettucify.data.datamodule import ImageFolderData, stratified_split
from lettucify.data.download import ensure_dataset, load_manifest
from lettucify.data.images import (
    BadImageError,
    CorruptImageError,
    EmptyImageError,
    NotAnImageError,
    TooManyPixelsError,
    load_rgb,
)
from lettucify.data.scan import find_bad_images, list_split
from lettucify.data.transforms import eval_transform
from lettucify.errors import DataError

MEAN = STD = (0.5, 0.5, 0.5)


def setup_data(root: Path, input_size: int = 32, report_path=None, **kwargs) -> ImageFolderData:
    # The data cache, when on, under the test's own folder beside the images.
    data = ImageFolderData(name="tiny", root=str(root), cache_dir=str(root.parent / "cache"), **kwargs)
    data.setup(input_size, MEAN, STD, report_path=report_path)
    return data


# --------------------------------------------------------------------------- decoding
# Each writer saves a 4x4 image whose pixel (0, 0) and pixel (3, 0) should decode to
# the RGB values listed with it.
def _gray(path: Path) -> None:
    Image.new("L", (4, 4), 100).save(path.with_suffix(".png"))


def _cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(path.with_suffix(".jpg"))  # cyan


def _rgba_png(path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[:, :2] = (200, 0, 0, 255)  # left half opaque red, right half fully transparent
    Image.fromarray(pixels).save(path.with_suffix(".png"))


def _palette_png(path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 180, 0] + [0] * 762)
    image.paste(1, (0, 0, 2, 4))  # left half green, right half transparent black
    image.save(path.with_suffix(".png"), transparency=0)


def _sixteen_bit_png(path: Path) -> None:
    Image.fromarray(np.full((4, 4), 0x8000, dtype=np.uint16)).save(path.with_suffix(".png"))


@pytest.mark.parametrize(
    "write, left, right",
    [
        (_gray, (100,) * 3, (100,) * 3),
        (_cmyk_jpeg, (0, 255, 255), (0, 255, 255)),
        (_rgba_png, (200, 0, 0), (255, 255, 255)),
        (_palette_png, (0, 180, 0), (255, 255, 255)),
        (_sixteen_bit_png, (128,) * 3, (128,) * 3),
    ],
    ids=["L", "CMYK", "RGBA", "P-transparency", "I;16"],
)
def test_load_rgb_turns_unusual_modes_into_rgb(tmp_path, write, left, right):
    write(tmp_path / "image")
    (path,) = tmp_path.iterdir()
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert np.allclose(image.getpixel((0, 0)), left, atol=6)
    assert np.allclose(image.getpixel((3, 0)), right, atol=6)


def test_load_rgb_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the camera held upright
    Image.new("RGB", (40, 20)).save(tmp_path / "phone.jpg", exif=exif)
    assert load_rgb(tmp_path / "phone.jpg").size == (20, 40)


def test_load_rgb_downscales_to_shorter_side(tmp_path):
    Image.new("RGB", (400, 200), (10, 200, 30)).save(tmp_path / "big.jpg")
    image = load_rgb(tmp_path / "big.jpg", shorter_side=30)
    assert image.size == (60, 30)
    assert np.allclose(image.getpixel((30, 15)), (10, 200, 30), atol=8)


# --------------------------------------------------------------------------- bad files
def _bomb(path: Path) -> None:
    Image.new("RGB", (200, 150)).save(path, format="PNG")  # 30000 pixels, limit 20000


def _truncated(path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])


BAD_FILES = {
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated": (_truncated, "truncated"),
    "not-an-image": (lambda p: p.write_text("this is a note, not a photo\n"), "not an image"),
    "bomb": (_bomb, "over max_image_pixels=20000"),
}
MAX_PIXELS = 20_000


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_is_found_skipped_or_fatal(image_folder, tmp_path, caplog, kind):
    write, reason = BAD_FILES[kind]
    bad = image_folder / "train" / "b" / f"{kind}.jpg"
    write(bad)

    found = find_bad_images([list_split(image_folder, "train")], MAX_PIXELS)
    assert [(b.path, b.split) for b in found] == [(bad, "train")]
    assert reason in found[0].reason

    report = tmp_path / "report" / "bad_images.csv"
    with caplog.at_level(logging.WARNING, logger="lettucify"):
        data = setup_data(image_folder, max_image_pixels=MAX_PIXELS, report_path=report)
    samples = data.train_set.samples + data.val_set.samples
    assert bad not in [path for path, _ in samples]
    assert len(samples) == 3 * 8
    with report.open() as f:
        assert list(csv.DictReader(f)) == [
            {"path": str(bad), "split": "train", "reason": found[0].reason}
        ]
    assert str(bad) in caplog.text and found[0].reason in caplog.text

    with pytest.raises(DataError, match=str(bad)) as err:
        setup_data(image_folder, max_image_pixels=MAX_PIXELS, on_bad_image="fail")
    assert reason in str(err.value)


def test_report_of_a_clean_folder_is_header_only(image_folder, tmp_path):
    data = setup_data(image_folder, report_path=tmp_path / "bad.csv")
    assert data.bad_images == []
    assert (tmp_path / "bad.csv").read_text().splitlines() == ["path,split,reason"]


def test_load_rgb_names_the_bad_file(image_folder):
    path = image_folder / "test" / "a" / "0.jpg"
    _truncated(path)
    with pytest.raises(BadImageError, match=str(path)):
        load_rgb(path)


def test_bytes_decode_as_the_file_does(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.effect_noise((40, 20), 60).convert("RGB").save(tmp_path / "phone.jpg", exif=exif)
    from_file = load_rgb(tmp_path / "phone.jpg")
    from_bytes = load_rgb((tmp_path / "phone.jpg").read_bytes(), formats=("JPEG",))
    assert from_bytes.size == (20, 40) and np.array_equal(np.asarray(from_bytes), np.asarray(from_file))


def _encoded(fmt: str, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format=fmt)
    return buffer.getvalue()


def _corrupt_header(data: bytes) -> bytes:
    data = bytearray(data)
    data[30] ^= 0xFF  # the PNG's IHDR checksum
    return bytes(data)


@pytest.mark.parametrize(
    "data, error, reason",
    [
        (b"", EmptyImageError, "empty"),
        (_encoded("GIF"), NotAnImageError, "not a JPEG or PNG image"),
        (b"a note\n", NotAnImageError, "not a JPEG or PNG image"),
        (_corrupt_header(_encoded("PNG")), CorruptImageError, "corrupt PNG header"),
        (_encoded("JPEG")[:300], CorruptImageError, "truncated or corrupt"),
        (_encoded("PNG", (300, 100)), TooManyPixelsError, "over max_image_pixels=20000"),
    ],
    ids=["empty", "gif", "text", "corrupt-png", "truncated-jpeg", "bomb"],
)
def test_bytes_that_cannot_be_used_say_why(data, error, reason):
    with pytest.raises(error, match=reason) as err:
        load_rgb(data, MAX_PIXELS, formats=("JPEG", "PNG"), name="upload")
    assert str(err.value).startswith("upload: ")


# --------------------------------------------------------------------------- layout errors
def test_missing_root_is_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        setup_data(tmp_path / "nowhere")


def test_missing_test_split_is_named(image_folder):
    (image_folder / "test").rename(image_folder / "testing")
    with pytest.raises(DataError, match=f"{image_folder} has no test/"):
        setup_data(image_folder)


def test_empty_class_folder_is_named(image_folder):
    (image_folder / "train" / "d").mkdir()
    (image_folder / "train" / "d" / ".DS_Store").write_bytes(b"hidden")
    (image_folder / "test" / "d").mkdir()
    with pytest.raises(DataError, match=f"{image_folder / 'train' / 'd'} is an empty class folder"):
        setup_data(image_folder)


def test_class_left_without_images_after_skipping_is_named(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class_train=2, per_class_test=2)
    for path in (root / "test" / "c").iterdir():
        path.write_bytes(b"")
    with pytest.raises(DataError, match=f"{root / 'test' / 'c'} has no usable image"):
        setup_data(root)


def test_train_and_test_with_different_classes_say_which(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class_train=1, per_class_test=1)
    (root / "test" / "c").rename(root / "test" / "z")
    with pytest.raises(DataError, match="only in train: c; only in test: z") as err:
        setup_data(root)
    assert str(root / "train") in str(err.value)


def test_hidden_and_non_image_files_are_ignored(image_folder):
    (image_folder / "train" / "a" / ".0.jpg").write_bytes(b"")
    (image_folder / "train" / "a" / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(image_folder / "train" / "a" / "UPPER.JPEG")
    paths = [path.name for path, _ in list_split(image_folder, "train").samples]
    assert "UPPER.JPEG" in paths and "notes.txt" not in paths and ".0.jpg" not in paths


# --------------------------------------------------------------------------- split and datasets
def test_stratified_split_is_deterministic_and_stratified():
    sizes = {"one": 1, "two": 2, "five": 5, "twenty": 20}
    classes = sorted(sizes)
    samples = [
        (Path(f"{cls}/{n}.jpg"), label)
        for label, cls in enumerate(classes)
        for n in range(sizes[cls])
    ]
    train, val = stratified_split(samples, classes, 0.2, seed=3)
    assert stratified_split(samples, classes, 0.2, seed=3) == (train, val)
    assert sorted(train + val) == sorted(samples) and not set(train) & set(val)
    val_counts = {cls: sum(label == classes.index(cls) for _, label in val) for cls in classes}
    assert val_counts == {"one": 0, "two": 1, "five": 1, "twenty": 4}
    assert set(stratified_split(samples, classes, 0.2, seed=4)[1]) != set(val)
    assert stratified_split(samples, classes, 0.0, seed=3) == (samples, [])


def test_datasets_after_setup(image_folder):
    data = setup_data(image_folder, val_fraction=0.25, split_seed=1)
    assert data.root == image_folder and data.classes == ["a", "b", "c"]
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (18, 6, 12)
    for name in ("train_set", "val_set", "test_set"):
        dataset = getattr(data, name)
        image, label = training_sample(data, len(dataset) - 1) if name == "train_set" else dataset[len(dataset) - 1]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert label == 2 and dataset.samples[-1][1] == 2
    assert setup_data(image_folder, val_fraction=0.0).val_set is None


@pytest.mark.parametrize("cache, batched", [("on", True), ("on", False), ("off", True)])
def test_train_augmentation_is_a_function_of_the_seed(image_folder, cache, batched):
    data = setup_data(image_folder, cache=cache, augment={"batched": batched})
    assert (data.batch_augment is not None) == (cache == "on" and batched)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = training_sample(data, (5, 1234))[0]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(training_sample(data, (5, 1234))[0], first)
    assert not torch.equal(training_sample(data, (5, 1235))[0], first)
    assert training_sample(data, 5)[0].shape == first.shape


def test_eval_transform_resizes_then_center_crops(tmp_path):
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, 100:] = 255  # left half black, right half white
    tensor = eval_transform(56, MEAN, STD)(Image.fromarray(pixels))
    # Shorter side to 64 (56 / 0.875), so 128 x 64, then the central 56 x 56.
    assert tensor.shape == (3, 56, 56)
    assert tensor[:, :, :20].max() == -1.0 and tensor[:, :, -20:].min() == 1.0


def test_config_instantiates_the_datamodule(image_folder, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        overrides = ["data.on_bad_image=fail", "data.augment.color_jitter=0.2"]
        cfg = compose("config", overrides=overrides)
    data = instantiate(cfg.data, data_dir=str(tmp_path), cache_dir=None, _convert_="all")
    assert isinstance(data, ImageFolderData) and data.conf.on_bad_image is BadImagePolicy.fail
    assert isinstance(data.conf.download, DownloadConf) and data.conf.download.manifest == "food16.sha256"
    assert isinstance(data.conf.augment, AugmentConf) and data.conf.augment.color_jitter == 0.2
    assert data.resolve_root() == (tmp_path / "food16", "$LETTUCIFY_DATA_DIR")


def test_root_resolution_order(tmp_path):
    def root(**kwargs):
        return ImageFolderData(name="food16", **kwargs).resolve_root()[0]

    assert root(root="/r", data_dir="/d", cache_dir="/c") == Path("/r")
    assert root(data_dir="/d", cache_dir="/c") == Path("/d/food16")
    assert root(cache_dir="/c") == Path("/c/datasets/food16")
    with pytest.raises(DataError, match="data.root"):
        root()


def test_package_import_stays_light():
    code = "import sys, lettucify.data, lettucify.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "False\n"


# --------------------------------------------------------------------------- download
TOP = "LettucifyAI-0123abc"
MEMBERS = {"train": "Dataset/Train", "test": "Dataset/Test"}


@pytest.fixture
def source_files(tmp_path):
    """{archive member: bytes} in the GitHub layout, and the matching manifest text."""
    images = make_image_folder(
        tmp_path / "source", classes=("x", "y"), per_class_train=2, per_class_test=1, size=(16, 16)
    )
    files, manifest = {f"{TOP}/README.md": b"not part of the dataset"}, []
    for path in sorted(p for p in images.rglob("*") if p.is_file()):
        relative = path.relative_to(images)
        split, rest = relative.parts[0], "/".join(relative.parts[1:])
        files[f"{TOP}/{MEMBERS[split]}/{rest}"] = path.read_bytes()
        manifest.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{relative.as_posix()}")
    # In the archive's train folder but not in the manifest: dropped on install.
    files[f"{TOP}/Dataset/Train/x/stray.jpg"] = files[f"{TOP}/Dataset/Train/x/0.jpg"]
    return files, "\n".join(manifest) + "\n"


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; ``requests`` lists the paths asked for."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def _publish(server, tmp_path, files, manifest_text, name="archive.tar.gz"):
    www, base, _ = server
    with tarfile.open(www / name, "w:gz") as tar:
        top = tarfile.TarInfo(TOP)
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    manifest = tmp_path / "tiny.sha256"
    manifest.write_text(manifest_text)
    return DownloadConf(url=f"{base}/{name}", members=dict(MEMBERS), manifest=str(manifest))


def _leftovers(parent: Path):
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_download_verifies_installs_and_is_done_once(tmp_path, server, source_files):
    spec = _publish(server, tmp_path, *source_files)
    root = tmp_path / "cache" / "datasets" / "tiny"
    assert ensure_dataset(root, spec) == root
    installed = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert installed == sorted(load_manifest(spec.manifest))  # stray.jpg and README.md dropped
    assert _leftovers(root.parent) == ["tiny"]
    assert ensure_dataset(root, spec) == root
    assert server[2] == ["/archive.tar.gz"]


def test_setup_downloads_into_the_cache(tmp_path, server, source_files):
    spec = _publish(server, tmp_path, *source_files)
    data = ImageFolderData(name="tiny", download=vars(spec), cache_dir=str(tmp_path / "cache"))
    data.setup(16, MEAN, STD)
    assert data.root == tmp_path / "cache" / "datasets" / "tiny"
    assert data.classes == ["x", "y"] and len(data.test_set) == 2


@pytest.mark.parametrize("damage", ["changed-file", "truncated-archive", "path-traversal"])
def test_bad_archive_leaves_nothing_behind(tmp_path, server, source_files, damage):
    files, manifest = source_files
    if damage == "changed-file":
        files[f"{TOP}/Dataset/Test/y/0.jpg"] += b"tampered"
        expected = "test/y/0.jpg"
    elif damage == "path-traversal":
        files[f"{TOP}/Dataset/Train/../../../../escaped.txt"] = b"outside"
        expected = "corrupt or unsafe archive"
    else:
        expected = "corrupt or unsafe archive"
    spec = _publish(server, tmp_path, files, manifest)
    if damage == "truncated-archive":
        archive = server[0] / "archive.tar.gz"
        archive.write_bytes(archive.read_bytes()[:-200])
    root = tmp_path / "data" / "tiny"
    with pytest.raises(DataError, match=expected):
        ensure_dataset(root, spec)
    assert not root.exists() and _leftovers(root.parent) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_unreachable_url_says_what_where_and_how(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/food16.tar.gz"
    spec = DownloadConf(url=url, members=dict(MEMBERS), manifest="food16.sha256")
    data = ImageFolderData(name="food16", download=vars(spec), data_dir=str(tmp_path / "datasets"))
    with pytest.raises(DataError) as err:
        data.setup(16, MEAN, STD)
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "refused" in message.lower()
    assert str(tmp_path / "datasets" / "food16") in message
    assert "python -m lettucify data.root=/path/to/food16" in message
    assert _leftovers(tmp_path / "datasets") == []


# --------------------------------------------------------------------------- the reference data
REFERENCE = Path(os.environ.get("LETTUCIFY_DATA_DIR", "/nonexistent")) / "food16"


@pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="set LETTUCIFY_DATA_DIR to the folder holding food16/"
)
def test_food16_reference_data(tmp_path):
    listed = load_manifest(str(REFERENCE / "SHA256SUMS"))
    assert load_manifest("food16.sha256") == listed
    data = ImageFolderData(name="food16", data_dir=str(REFERENCE.parent), cache="off")
    data.setup(64, MEAN, STD, report_path=tmp_path / "bad.csv")
    assert data.root == REFERENCE and len(data.classes) == 16
    assert data.bad_images == []
    assert len(data.train_set) + len(data.val_set) == 199 and len(data.test_set) == 189
    assert {label for _, label in data.val_set.samples} == set(range(16))
    assert data.val_set[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize("augment", [AugmentConf(), AugmentConf(horizontal_flip=False, color_jitter=0.4)])
def test_training_augmentation_is_torchvisions_v2_pipeline_draw_for_draw(augment):
    from torchvision.transforms import v2

    from lettucify.data.transforms import TrainAugment

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    steps = [v2.RandomResizedCrop(64, scale=tuple(augment.random_resized_crop_scale), antialias=True)]
    steps += [v2.RandomHorizontalFlip()] if augment.horizontal_flip else []
    jitter = augment.color_jitter
    steps += [v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)] if jitter else []
    reference = v2.Compose([*steps, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    ours = TrainAugment(64, mean, std, augment)
    image = torch.randint(0, 256, (3, 96, 130), dtype=torch.uint8)
    outputs = []
    for seed in range(20):
        torch.manual_seed(seed)
        outputs.append(ours(image))
        torch.manual_seed(seed)
        assert torch.equal(outputs[-1], reference(image)), f"seed {seed}"
    assert len({output.sum().item() for output in outputs}) > 1  # random, not one fixed crop
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.manual_seed(0)
    assert torch.equal(ours(pil), outputs[0])  # a decoded photo (the cache off) is augmented alike
