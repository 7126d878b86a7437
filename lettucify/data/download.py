"""Fetch a dataset archive once, check it against its sha256 manifest, install it atomically.

The archive is downloaded and unpacked in a temporary folder next to the dataset's
folder and renamed into place only once every file is verified, so an interrupted or
corrupt download never leaves a half dataset where the next run would take it as whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Dict, Optional, Sequence, Union

from lettucify.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def is_dataset(root: Path) -> bool:
    return all((root / split).is_dir() for split in SPLITS)


def ensure_dataset(
    root: Path, spec, looked_in: Optional[Sequence[Union[str, Path]]] = None
) -> Path:
    """Return ``root``, downloading ``spec`` (a DownloadConf) there first when it is absent.

    ``spec.members`` maps a folder of ``root`` to one inside the archive's top-level
    folder; ``spec.manifest`` is a manifest packaged in lettucify/data/manifests/ or, when
    it holds a "/", a path to one. ``looked_in`` are the locations named in the advice
    when the download fails (default: ``root``).
    """
    root = Path(root)
    if is_dataset(root):
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} exists but has no train/ and test/ folders: fix or remove it")
    manifest = load_manifest(spec.manifest)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Same filesystem as root, so that the final rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-download-", dir=root.parent))
    try:
        archive = tmp / "archive.tar.gz"
        _download(spec.url, archive, root, looked_in or [root])
        staged = tmp / root.name
        _extract(archive, dict(spec.members), staged, spec.url)
        _verify(staged, manifest, spec.url)
        try:
            os.replace(staged, root)
        except OSError:
            if not is_dataset(root):
                raise
            log.info("%s was installed by another process meanwhile; using it", root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("installed %s (%d files verified)", root, len(manifest))
    return root


def load_manifest(manifest: str) -> Dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` listing (``<hex>  ./train/a/1.jpg``)."""
    if "/" in manifest or os.sep in manifest:
        text = Path(manifest).read_text()
    else:
        text = resources.files("lettucify.data").joinpath("manifests", manifest).read_text()
    digests: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        # sha256sum marks binary mode with "*"; paths start with "./".
        relative = PurePosixPath(name.strip().lstrip("*"))
        if len(digest) != 64 or relative.is_absolute() or ".." in relative.parts:
            raise DataError(f"manifest {manifest}: malformed line {line!r}")
        digests[relative.as_posix()] = digest.lower()
    return digests


def _download(url: str, dest: Path, root: Path, looked_in: Sequence[Union[str, Path]]) -> None:
    log.info("downloading %s for %s", url, root)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, dest.open("wb") as f:
            shutil.copyfileobj(response, f, _CHUNK)
    except OSError as err:  # URLError, HTTPError and timeouts are OSErrors
        # A bare URLError wraps the socket error; an HTTPError's text has its status.
        reason = err.reason if type(err) is urllib.error.URLError else err
        places = ", ".join(str(p) for p in looked_in)
        raise DataError(
            f"could not download {url} ({reason}); looked for the dataset in {places}; "
            f"to use a copy you have, point data.root at it: "
            f"python -m lettucify data.root=/path/to/{root.name}"
        ) from None


def _extract(archive: Path, members: Dict[str, str], dest: Path, url: str) -> None:
    """Unpack the archive folders named in ``members`` to ``dest/<split>``, and nothing else."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            entries = tar.getmembers()
            tops = {PurePosixPath(e.name).parts[0] for e in entries if PurePosixPath(e.name).parts}
            if len(tops) != 1:
                raise DataError(f"{url}: expected one top-level folder, found {len(tops)}")
            top = tops.pop()
            renamed = {}
            for entry in entries:
                # Regular files only: a link could point outside the dataset.
                if not entry.isreg():
                    continue
                for split, folder in members.items():
                    prefix = f"{top}/{folder.strip('/')}/"
                    if entry.name.startswith(prefix):
                        renamed[entry.name] = f"{split}/{entry.name[len(prefix):]}"

            def rename(entry: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
                # The "data" filter then refuses absolute paths and ".." escapes.
                return tarfile.data_filter(entry.replace(name=renamed[entry.name]), path)

            tar.extractall(dest, members=[e for e in entries if e.name in renamed], filter=rename)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{url}: corrupt or unsafe archive ({err})") from None
    for split, folder in members.items():
        if not (dest / split).is_dir():
            raise DataError(f"{url}: the archive has no {folder}/ folder for {split}/")


def _verify(staged: Path, manifest: Dict[str, str], url: str) -> None:
    """Every manifest file present with its sha256; files it does not list are dropped."""
    for relative, expected in manifest.items():
        path = staged / relative
        if not path.is_file():
            raise DataError(f"{url}: {relative} is missing from the archive")
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != expected:
            raise DataError(f"{url}: {relative} has sha256 {actual}, the manifest says {expected}")
    for path in sorted(staged.rglob("*"), reverse=True):
        relative = path.relative_to(staged).as_posix()
        if path.is_file() and relative not in manifest:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
