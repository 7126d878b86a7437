"""A stream of real requests from a process of its own, for the deployment tests.

    python tests/traffic.py URL PHOTO OUT.json --concurrency 8 --min-requests 2000 --until FILE

Sends PHOTO to URL from ``concurrency`` threads until at least ``min-requests`` have been
answered and FILE exists, then writes one record per request to OUT.json: start time,
latency, status (0: no answer), and the colour and model version that answered.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-requests", type=int, default=2000)
    parser.add_argument("--until", type=Path, required=True)
    args = parser.parse_args()
    body = args.photo.read_bytes()
    records, lock = [], threading.Lock()

    def done() -> bool:
        with lock:
            return len(records) >= args.min_requests and args.until.exists()

    def worker() -> None:
        session = requests.Session()
        while not done():
            started = time.time()
            try:
                answer = session.post(args.url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
                status = answer.status_code
                model = answer.json().get("model", {}) if status == 200 else {}
            except (requests.RequestException, ValueError):
                status, model = 0, {}
            record = {"t": started, "latency_ms": 1000 * (time.time() - started), "status": status,
                      "colour": model.get("deployment"), "version": model.get("version")}
            with lock:
                records.append(record)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    args.out.write_text(json.dumps(sorted(records, key=lambda r: r["t"])))


if __name__ == "__main__":
    main()
