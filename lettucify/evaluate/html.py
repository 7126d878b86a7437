"""Self-contained HTML reports: Jinja2 templates shipped in the package, images embedded.

A report opens from disk with no server and no network: its CSS is inline and every
figure is a ``data:`` URI, so the file alone can be mailed, attached to an MLflow run
or archived. Values are escaped by Jinja's autoescaping; nothing in a report runs script.
"""

from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path
from typing import Any, Optional

REPORT_FILE = "report.html"
TEMPLATES = Path(__file__).with_name("templates")


# A figure larger than this (the photo grid of confident mistakes: megabytes of PNG) is
# embedded as a JPEG at most EMBED_MAX_WIDTH wide, so that a report stays a few MB.
EMBED_MAX_BYTES = 1 << 20
EMBED_MAX_WIDTH = 1600


def embedded_image(path: Path) -> Optional[str]:
    """The PNG ``path`` as a ``data:`` URI, or None when there is no such file."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    kind = "png"
    if len(data) > EMBED_MAX_BYTES:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((EMBED_MAX_WIDTH, EMBED_MAX_WIDTH * image.height // max(1, image.width)))
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85)
        data, kind = out.getvalue(), "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def number(value: Any, digits: int = 3) -> str:
    """A table cell for a number: ``digits`` decimals, blank for None or NaN."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def percent(value: Any) -> str:
    return "" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def relative_link(target: Path, start: Path) -> str:
    """``target`` as a link from a page in ``start`` (forward slashes, as browsers want)."""
    return Path(os.path.relpath(target, start)).as_posix()


def render(template: str, **context: Any) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters.update(number=number, percent=percent)
    return environment.get_template(template).render(**context)


def write_html(path: Path, text: str) -> Path:
    """Written whole or not at all: a reader never opens half a report."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
