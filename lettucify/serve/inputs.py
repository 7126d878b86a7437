"""A request's body -> the encoded images in it, or a RequestError saying what is wrong.

``/predict`` and ``/score`` take raw bytes (``image/jpeg``, ``image/png``, ``image/webp``),
a multipart form with one or more ``file`` fields, or JSON ``{"image": b64}`` /
``{"images": [b64, ...]}``; the V2 ``infer`` route takes one ``BYTES`` input of base64
images. Which reader a body gets is looked up by its content type.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Awaitable, Callable, Dict, List

from starlette.requests import Request

from lettucify.serve.limits import RequestError

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
ACCEPTED = ", ".join(IMAGE_TYPES + ("multipart/form-data", "application/json"))


def _base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(400, f"{where} must be a base64 string, not {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f"{where} is not valid base64 ({err})") from None


async def json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise RequestError(400, "empty body: send an image")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"invalid JSON ({err})") from None


async def _raw(request: Request) -> List[bytes]:
    return [await request.body()]


async def _multipart(request: Request) -> List[bytes]:
    try:
        form = await request.form()
    except RequestError:
        raise
    except Exception as err:  # python-multipart's and Starlette's parse errors
        raise RequestError(400, f"malformed multipart body ({err})") from None
    files = form.getlist("file")
    if not files:
        raise RequestError(400, "multipart body has no 'file' field: send the image(s) as file=@photo.jpg")
    if any(isinstance(f, str) for f in files):
        raise RequestError(400, "multipart field 'file' must be a file upload, not text")
    try:
        return [await f.read() for f in files]
    finally:
        await form.close()


async def _json(request: Request) -> List[bytes]:
    payload = await json_body(request)
    if not isinstance(payload, dict) or not ({"image", "images"} & payload.keys()):
        raise RequestError(400, 'JSON body must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')
    if "image" in payload:
        return [_base64(payload["image"], "image")]
    images = payload["images"]
    if not isinstance(images, list):
        raise RequestError(400, f"images must be a list of base64 strings, not {type(images).__name__}")
    return [_base64(text, f"images[{i}]") for i, text in enumerate(images)]


_READERS: Dict[str, Callable[[Request], Awaitable[List[bytes]]]] = {
    **{kind: _raw for kind in IMAGE_TYPES},
    "multipart/form-data": _multipart,
    "application/json": _json,
}


async def predict_images(request: Request) -> List[bytes]:
    """The images of a ``/predict`` request (at least one; each may still fail to decode)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    reader = _READERS.get(kind)
    if reader is None:
        raise RequestError(415, f"content type {kind or '(none)'!r} is not accepted: send {ACCEPTED}")
    images = await reader(request)
    if not images:
        raise RequestError(400, "no images in the request")
    return images


def v2_images(payload: Any) -> List[bytes]:
    """The images of a V2 ``infer`` body: one input, datatype BYTES, shape [N], N base64 strings."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or len(payload["inputs"]) != 1:
        raise RequestError(400, 'V2 infer body must be {"inputs": [one input]}')
    tensor = payload["inputs"][0]
    if not isinstance(tensor, dict):
        raise RequestError(400, "V2 input must be an object with name, datatype, shape and data")
    if tensor.get("datatype") != "BYTES":
        raise RequestError(400, f"V2 input datatype must be BYTES (base64 images), not {tensor.get('datatype')!r}")
    data = tensor.get("data")
    if not isinstance(data, list) or not data:
        raise RequestError(400, "V2 input data must be a non-empty list of base64 images")
    if tensor.get("shape") != [len(data)]:
        raise RequestError(400, f"V2 input shape must be [{len(data)}] for {len(data)} images, not {tensor.get('shape')!r}")
    return [_base64(text, f"inputs[0].data[{i}]") for i, text in enumerate(data)]
