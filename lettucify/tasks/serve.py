"""``task=serve``: answer HTTP requests with a checkpoint's or a registered version's labels.

    python -m lettucify task=serve model_uri=models:/lettucify-food16@champion
    python -m lettucify task=serve checkpoint=outputs/runs/.../checkpoints/last.pt serve.port=9000

The model is loaded (an alias pinned to the version it points at now), exported for its
backend, and served by uvicorn on ``serve.host:serve.port`` (lettucify/serve/). The URL
goes to stdout once the socket is bound; SIGTERM or Ctrl-C stops taking connections,
lets the requests in flight finish (``serve.graceful_shutdown_s``) and returns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from lettucify.config import ServeBackend
from lettucify.errors import LettucifyError

log = logging.getLogger(__name__)

# The model name a checkpoint (not a registered version) is served under.
CHECKPOINT_MODEL_NAME = "lettucify"


def _model(cfg: DictConfig) -> Tuple[Dict[str, Optional[str]], Dict[str, Optional[str]]]:
    """(what the answers say: name, version, alias, deployment; what to load)."""
    source = {"checkpoint": cfg.checkpoint, "model_uri": cfg.model_uri, "tracking_uri": cfg.logger.tracking_uri}
    if cfg.checkpoint:
        name, version, alias = CHECKPOINT_MODEL_NAME, None, None
    else:
        from lettucify.tracking.registry import resolve_version

        name, version, alias = resolve_version(cfg.model_uri, cfg.logger.tracking_uri)
        if version is not None:  # load the version the alias points at now, whatever it does next
            source["model_uri"] = f"models:/{name}/{version}"
    if cfg.serve.model_name:
        name, version, alias = cfg.serve.model_name, cfg.serve.model_version, None
    return {"name": name, "version": version, "alias": alias, "deployment": cfg.serve.deployment}, source


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on the connections it
    # accepts; without it every keep-alive request waited ~40 ms on a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise LettucifyError(f"cannot listen on {host}:{port} (serve.host, serve.port): {err.strerror or err}") from None
    sock.set_inheritable(True)  # worker processes take it over
    return sock


@contextmanager
def _signals_end_the_server() -> Iterator[None]:
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully; here they have
    done their job by then, so the task returns normally (exit status 0)."""
    saved = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run(cfg: DictConfig) -> None:
    from lettucify.models.build import require_one_source

    require_one_source("serve", cfg.checkpoint, cfg.model_uri)
    import uvicorn

    from lettucify.serve.app import SPEC_ENV, app_from_environment, create_app
    from lettucify.serve.inference import BACKENDS, load_net
    from lettucify.serve.metrics import MULTIPROCESS_DIR

    settings = cfg.serve
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    identity, source = _model(cfg)
    net, classes, preprocess = load_net(source, settings.tta_flip)
    spec: Dict[str, Any] = {
        "serve": OmegaConf.to_container(settings, resolve=True, enum_to_str=True),
        "model": identity, "classes": classes, "preprocess": preprocess,
        "source": source, "tta_flip": settings.tta_flip,
        **BACKENDS[ServeBackend(settings.backend)].prepare(net, preprocess, run_dir),
    }
    sock = _bind(settings.host, settings.port)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    options = dict(
        log_config=None, access_log=False, timeout_graceful_shutdown=settings.graceful_shutdown_s, workers=settings.workers,
    )
    what = f"{identity['name']} version {identity['version']}" if identity["version"] else (cfg.checkpoint or cfg.model_uri)
    print(f"Serving {what} at {url} (API docs at {url}/docs)", flush=True)
    with _signals_end_the_server():
        if settings.workers == 1:
            uvicorn.Server(uvicorn.Config(create_app(spec, net), **options)).run(sockets=[sock])
        else:
            from uvicorn.supervisors import Multiprocess

            spec_file = run_dir / "serve_spec.json"
            spec_file.write_text(json.dumps(spec, indent=2) + "\n")
            metrics_dir = run_dir / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir()
            os.environ.update({SPEC_ENV: str(spec_file), MULTIPROCESS_DIR: str(metrics_dir)})
            config = uvicorn.Config(f"{app_from_environment.__module__}:{app_from_environment.__name__}", factory=True, **options)
            Multiprocess(config, sockets=[sock]).run()
    log.info("serve: stopped")
