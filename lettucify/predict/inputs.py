"""What ``input=`` names: a folder (every file in it, recursively), one file, or a glob.

Every visible file is an input, not only those with an image's extension: a file that
is not an image gets a row saying so rather than being skipped without a word. When each
entry at the top of the folder is a folder, they are taken for class folders, as in an
ImageFolder tree, and each photo's true label is the folder it sits in.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from lettucify.errors import LettucifyError


@dataclass(frozen=True)
class Inputs:
    files: List[Path]
    # The class folder of each file, when the input is a folder of class folders.
    true_labels: Optional[List[str]] = None


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def list_inputs(spec: str) -> Inputs:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _visible(p, path))
        top = [p for p in path.iterdir() if _visible(p, path)]
        by_class = bool(top) and all(p.is_dir() for p in top)
        true_labels = [p.relative_to(path).parts[0] for p in files] if by_class else None
    elif path.is_file():
        files, true_labels = [path], None
    else:
        pattern = str(Path(spec).expanduser())
        files, true_labels = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()), None
    if not files:
        what = "is an empty folder" if path.is_dir() else "is no folder or file, and no file matches it as a glob"
        raise LettucifyError(f"input={spec} {what}: give a folder of photos, a photo or a glob such as 'photos/**/*.jpg'")
    return Inputs(files, true_labels)
