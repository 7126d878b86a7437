"""Serving throughput: Lettucify's server against `mlflow models serve` and a hand-written app.

    python benchmarks/serve.py --model-uri models:/lettucify-food16@candidate \
        [--tracking-uri sqlite:///outputs/mlflow.db] [--photos $LETTUCIFY_DATA_DIR/food16/test]

The same registered model is served three ways at once, each a process of its own:

    lettucify  python -m lettucify task=serve serve.tta_flip=false (ONNX Runtime), raw JPEG bodies
    mlflow     mlflow models serve --env-manager local (the version's pyfunc), base64 JSON
    plain      benchmarks/plain_server.py: FastAPI + eager PyTorch on raw JPEG bodies

A separate client process sends a fixed number of requests of real food16 photos to one
server at a time, at each concurrency, the servers interleaved and the whole repeated,
so that machine noise falls on all alike. It prints requests/s and p50/p99 latency
(medians over the rounds) and Lettucify's ratio to each reference.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the client
def payload(kind: str, jpeg: bytes) -> tuple[bytes, str]:
    if kind == "raw":
        return jpeg, "image/jpeg"
    return json.dumps({"inputs": [base64.b64encode(jpeg).decode()]}).encode(), "application/json"


def load(url: str, kind: str, photos: List[Path], concurrency: int, requests: int) -> Dict[str, float]:
    """Send ``requests`` requests from ``concurrency`` threads, each on a kept-alive connection."""
    bodies = [payload(kind, p.read_bytes()) for p in photos]
    parts = urlsplit(url)
    latencies: List[float] = []
    failures = [0]
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            body, content_type = bodies[n % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", parts.path, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                failures[0] += response.status != 200
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "failed": failures[0],
    }


# --------------------------------------------------------------------------- the servers
def wait_ready(process: subprocess.Popen, url: str, timeout: float = 300) -> None:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server for {url} exited with status {process.returncode}")
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            connection.request("GET", parts.path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer from {url} in {timeout:.0f} s")


def start_servers(args: argparse.Namespace, logs: Path) -> Dict[str, tuple]:
    """name -> (process, predict URL, payload kind)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": args.tracking_uri}
    ports = {name: free_port() for name in ("lettucify", "mlflow", "plain")}
    commands = {
        "lettucify": ([sys.executable, "-m", "lettucify", "task=serve", f"model_uri={args.model_uri}",
                       f"logger.tracking_uri={args.tracking_uri}", f"serve.port={ports['lettucify']}",
                       f"hydra.run.dir={logs / 'lettucify-run'}", *args.serve], "/ready", "/predict", "raw"),
        "mlflow": ([sys.executable, "-m", "mlflow", "models", "serve", "-m", args.model_uri, "--env-manager", "local",
                    "-h", "127.0.0.1", "-p", str(ports["mlflow"])], "/ping", "/invocations", "json"),
        "plain": ([sys.executable, str(REPO / "benchmarks" / "plain_server.py"), args.model_uri, str(ports["plain"]),
                   args.tracking_uri], "/ready", "/predict", "raw"),
    }
    servers = {}
    for name, (command, ready, route, kind) in commands.items():
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        base = f"http://127.0.0.1:{ports[name]}"
        servers[name] = (process, base + ready, base + route, kind)
    for name, (process, ready, _, _) in servers.items():
        wait_ready(process, ready)
    return {name: (process, route, kind) for name, (process, _, route, kind) in servers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/lettucify-food16@candidate")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'outputs' / 'mlflow.db'}")
    parser.add_argument("--photos", type=Path,
                        default=Path(os.environ.get("LETTUCIFY_DATA_DIR", REPO / "data")) / "food16" / "test")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    # The other two run the network once per image: so does Lettucify here, not the
    # mirror-image average it serves by default (twice the compute).
    parser.add_argument("--serve", nargs="*", default=["serve.tta_flip=false"], metavar="OVERRIDE",
                        help="overrides for Lettucify's server (default: serve.tta_flip=false)")
    # Set only in the client process: one measurement against one server.
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    photos = sorted(args.photos.rglob("*.jpg"))
    if not photos:
        raise SystemExit(f"no .jpg photos under {args.photos}: set --photos or LETTUCIFY_DATA_DIR")

    if args.url:
        print(json.dumps(load(args.url, args.kind, photos, int(args.concurrency), args.requests)))
        return

    logs = REPO / "outputs" / "benchmarks" / "serve"
    logs.mkdir(parents=True, exist_ok=True)
    servers = start_servers(args, logs)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: Dict[tuple, List[dict]] = {}
    try:
        for _ in range(args.rounds):
            for concurrency in levels:
                for name, (_, url, kind) in servers.items():
                    client = subprocess.run(
                        [sys.executable, __file__, "--url", url, "--kind", kind, "--photos", str(args.photos),
                         "--concurrency", str(concurrency), "--requests", str(args.requests)],
                        capture_output=True, text=True, check=True,
                    )
                    results.setdefault((name, concurrency), []).append(json.loads(client.stdout))
    finally:
        for process, _, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)

    print(f"{len(photos)} food16 photos, {args.requests} requests per measurement, {args.rounds} rounds, "
          f"{os.cpu_count()} cores; medians over rounds")
    print(f"{'server':<10} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}")
    median = {key: {m: statistics.median(r[m] for r in runs) for m in runs[0]} for key, runs in results.items()}
    for concurrency in levels:
        for name in servers:
            row = median[name, concurrency]
            print(f"{name:<10} {concurrency:>4} {row['rps']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
                  f"{row['failed']:>6.0f}")
        ours = median["lettucify", concurrency]["rps"]
        print(f"  ratio at {concurrency}: lettucify / mlflow {ours / median['mlflow', concurrency]['rps']:.1f}x, "
              f"lettucify / plain {ours / median['plain', concurrency]['rps']:.1f}x")


if __name__ == "__main__":
    main()
