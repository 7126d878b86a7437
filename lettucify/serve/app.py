"""The HTTP routes: ``/predict`` (and ``/score``), the Open Inference Protocol (KServe V2),
health, readiness, metrics, the OpenAPI docs at ``/docs`` and the try-it page at ``/``.

``create_app(spec)`` builds the app from a serving spec, the plain dict ``task=serve``
writes (``lettucify.tasks.serve``): settings, model identity, classes, preprocessing and
what the backend prepared. Nothing heavy runs on the event loop: decoding and
preprocessing run on a pool of ``serve.decode_threads`` threads, the model on the
micro-batcher's thread. Every refusal is ``{"error": "..."}`` with a 4xx (or 503/504).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, List, Mapping, Optional

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from torch import nn

from lettucify import __version__
from lettucify.config import ServeBackend, ServeConf
from lettucify.data.images import BadImageError
from lettucify.serve.auth import ApiKey
from lettucify.serve.batching import MicroBatcher, QueueFull
from lettucify.serve.inference import BACKENDS, Labeller, Preprocessor, probabilities
from lettucify.serve.inputs import json_body, predict_images, v2_images
from lettucify.serve.limits import BodyLimit, RequestError, error_body, image_error, within
from lettucify.serve.metrics import Metrics, Observe

log = logging.getLogger(__name__)

# Where a server process started by uvicorn (serve.workers > 1) finds its spec.
SPEC_ENV = "LETTUCIFY_SERVE_SPEC"
MB = 1 << 20
PAGE_DIR = Path(__file__).with_name("page")
PAGE_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
# The page loads only its own files and sends photos only to this server; no-cache: a new
# version of the package is seen at the next load.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class Score(BaseModel):
    label: str
    score: float


class Prediction(Score):
    top_k: List[Score]


class ModelIdentity(BaseModel):
    name: str
    version: Optional[str]
    alias: Optional[str]
    deployment: Optional[str]


class PredictAnswer(BaseModel):
    predictions: List[Prediction]
    model: ModelIdentity


class ErrorAnswer(BaseModel):
    error: str


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in ("image/jpeg", "image/png", "image/webp")},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "byte"}, "images": {"type": "array", "items": {"type": "string", "format": "byte"}}},
                }
            },
        },
    }
}
ERRORS = {code: {"model": ErrorAnswer} for code in (400, 401, 413, 415, 422, 503, 504)}


class Service:
    """The loaded model behind the routes: images in, class probabilities out."""

    def __init__(self, spec: Mapping[str, Any], settings: ServeConf, net: Optional[nn.Module]) -> None:
        self.spec = spec
        self.settings = settings
        self.identity = dict(spec["model"])
        self.classes: List[str] = list(spec["classes"])
        self.labeller = Labeller(self.classes, settings.top_k)
        self.preprocessor = Preprocessor(spec["preprocess"], settings.max_image_pixels)
        self.metrics = Metrics(**self.identity)
        self.net = net
        self.ready = False
        self.batcher: Optional[MicroBatcher] = None
        self.pool: Optional[ThreadPoolExecutor] = None

    def start(self) -> None:
        """Load the model, run it once (the warm-up), start the threads; then ready."""
        backend = BACKENDS[ServeBackend(self.settings.backend)]
        run = probabilities(backend.load(self.spec, self.settings.intra_op_threads, self.net))
        run(np.zeros((1, *self.preprocessor.shape), np.float32))
        self.pool = ThreadPoolExecutor(self.settings.decode_threads, thread_name_prefix="lettucify-decode")
        self.batcher = MicroBatcher(
            run, self.settings.max_batch_size, self.settings.max_batch_wait_ms / 1000,
            self.settings.max_queue_images, on_batch=self.metrics.batch_size.observe,
        ).start()
        self.ready = True
        log.info("serve: ready (%s backend, %d classes)", self.settings.backend, len(self.classes))

    def stop(self) -> None:
        self.ready = False
        if self.batcher:
            self.batcher.stop()
        if self.pool:
            self.pool.shutdown()

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        try:
            return self.preprocessor(data, name)
        except BadImageError as err:
            raise image_error(err) from None

    async def probabilities(self, request: Request, images: List[bytes]) -> np.ndarray:
        if not self.ready:
            raise RequestError(503, "the model is not loaded yet", {"Retry-After": "1"})
        count = len(images)
        request.state.images = count
        if count > self.settings.max_batch_images:
            raise RequestError(413, f"{count} images is over serve.max_batch_images={self.settings.max_batch_images}")
        loop = asyncio.get_running_loop()
        names = ["image"] if count == 1 else [f"image {i + 1} of {count}" for i in range(count)]
        arrays = await asyncio.gather(*(loop.run_in_executor(self.pool, self._decode, data, name) for data, name in zip(images, names)))
        return await asyncio.wrap_future(self.batcher.submit(np.stack(arrays)))


def _json(payload: Any, status: int = 200, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(json.dumps(payload).encode(), status, headers=dict(headers or {}), media_type="application/json")


def _error(status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(error_body(message), status, headers=dict(headers or {}), media_type="application/json")


def create_app(spec: Mapping[str, Any], net: Optional[nn.Module] = None) -> FastAPI:
    """The server app for ``spec``; ``net``, when given, is the already loaded network
    (the torch backend then runs it instead of loading it again)."""
    settings = ServeConf(**spec["serve"])
    service = Service(spec, settings, net)
    name = service.identity["name"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(service.start)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="Lettucify", summary="Food photo classifier", lifespan=lifespan,
        description=f"Serving {name} version {service.identity['version']}; classes: {', '.join(service.classes)}.",
    )

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> Response:
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(QueueFull)
    async def busy(request: Request, err: QueueFull) -> Response:
        return _error(503, str(err), {"Retry-After": str(err.retry_after_s)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        return _error(err.status_code, str(err.detail), err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Response:
        return _error(400, "; ".join(str(e.get("msg")) for e in err.errors()) or "invalid request")

    async def answer(request: Request, top_k: Optional[int]) -> Response:
        probs = await service.probabilities(request, await predict_images(request))
        return _json({"predictions": service.labeller(probs, top_k), "model": service.identity})

    # task=predict asks for every class (top_k=0) to score a deployment on labelled photos.
    TOP_K = Query(None, ge=0, description="labels in top_k (default serve.top_k; 0: every class)")

    @app.post("/predict", response_model=PredictAnswer, responses=ERRORS, openapi_extra=PREDICT_BODY)
    async def predict(request: Request, top_k: Optional[int] = TOP_K) -> Response:
        """Label one or more photos: raw image bytes, a multipart ``file`` upload, or base64 JSON."""
        return await within(answer(request, top_k), settings.request_timeout_s)

    @app.post("/score", response_model=PredictAnswer, responses=ERRORS, openapi_extra=PREDICT_BODY)
    async def score(request: Request, top_k: Optional[int] = TOP_K) -> Response:
        """``/predict`` under the name Azure ML clients call."""
        return await within(answer(request, top_k), settings.request_timeout_s)

    @app.get("/health")
    async def health() -> Response:
        """The process answers."""
        return _json({"status": "ok"})

    @app.get("/ready", responses={503: {"model": ErrorAnswer}})
    async def ready() -> Response:
        """The model is loaded and has run once."""
        return _json({"status": "ready"}) if service.ready else _error(503, "the model is not loaded yet")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    if settings.page:
        files = {path.name: (path.read_bytes(), PAGE_TYPES[path.suffix]) for path in PAGE_DIR.iterdir() if path.suffix in PAGE_TYPES}

        def page_file(file: str) -> Response:
            if file not in files:
                raise RequestError(404, f"no page file {file!r}")
            content, media_type = files[file]
            return Response(content, media_type=media_type, headers=PAGE_HEADERS)

        @app.get("/", include_in_schema=False)
        async def page() -> Response:
            return page_file("index.html")

        @app.get("/page/{file}", include_in_schema=False)
        async def page_asset(file: str) -> Response:
            return page_file(file)

    # ------------------------------------------------------------------ Open Inference Protocol (V2)
    def known(model_name: str) -> None:
        if model_name != name:
            raise RequestError(404, f"unknown model {model_name!r}: this server serves {name!r}")

    @app.get("/v2")
    async def v2_server() -> Response:
        return _json({"name": "lettucify", "version": __version__, "extensions": []})

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return _json({"ready": True}) if service.ready else _error(503, "the model is not loaded yet")

    @app.get("/v2/models/{model_name}")
    async def v2_metadata(model_name: str) -> Response:
        known(model_name)
        size = service.preprocessor.shape
        return _json({
            "name": name,
            "versions": [service.identity["version"]] if service.identity["version"] else [],
            "platform": settings.backend,
            "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(service.classes)]},
            ],
            "parameters": {"classes": service.classes, "input_size": size[1]},
        })

    @app.get("/v2/models/{model_name}/ready")
    async def v2_model_ready(model_name: str) -> Response:
        known(model_name)
        return _json({"name": name, "ready": service.ready}, 200 if service.ready else 503)

    async def v2_answer(request: Request) -> Response:
        payload = await json_body(request)
        probs = await service.probabilities(request, v2_images(payload))
        labels = [service.classes[i] for i in probs.argmax(axis=1)]
        return _json({
            "model_name": name,
            "model_version": service.identity["version"] or "",
            "id": payload.get("id", ""),
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
                {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape), "data": probs.ravel().tolist()},
            ],
        })

    @app.post("/v2/models/{model_name}/infer", responses=ERRORS)
    async def v2_infer(model_name: str, request: Request) -> Response:
        """``{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [N], "data": [<base64>, ...]}]}``"""
        known(model_name)
        return await within(v2_answer(request), settings.request_timeout_s)

    # Outermost last: observe everything, then the key, then the body's size.
    app.add_middleware(BodyLimit, max_bytes=round(settings.max_body_mb * MB), drain_timeout_s=settings.request_timeout_s)
    app.add_middleware(ApiKey, key=os.environ.get(settings.api_key_env) or None)
    app.add_middleware(Observe, metrics=service.metrics, routes=app.router.routes)
    return app


def app_from_environment() -> FastAPI:
    """The app of a server process uvicorn started (``serve.workers`` > 1), from ``$LETTUCIFY_SERVE_SPEC``."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    return create_app(json.loads(Path(os.environ[SPEC_ENV]).read_text()))
