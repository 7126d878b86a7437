"""Micro-batching: requests queue their images, one thread runs the model on batches of them.

A request's images stay together (one item, one future). The model thread takes the
first queued item, then more while they fit in ``max_batch_size`` images, waiting up to
``max_wait_s`` after the first for others to arrive (0: only what is queued already, so
an idle server adds no latency and a busy one batches). The queue holds at most
``max_queue`` images: past that, ``submit`` raises ``QueueFull`` at once instead of
letting waits grow without end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Deque, List, Optional

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue cannot take the images now; ``retry_after_s`` is a hint for the client."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(f"server busy: {queued} images queued (serve.max_queue_images={limit}); retry later")
        self.retry_after_s = retry_after_s


@dataclass
class _Item:
    images: np.ndarray
    future: Future


class MicroBatcher:
    """``submit(images) -> Future`` of ``run(images)``'s rows for them, run in batches on one thread.

    ``run`` maps ``[N, ...]`` to ``[N, ...]`` row by row; ``on_batch(size)`` is told the
    size of every batch it runs.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda size: None)
        self._items: Deque[_Item] = deque()
        self._queued = 0  # images in _items
        self._seconds_per_image = 0.01  # a running estimate, for Retry-After
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lettucify-batcher", daemon=True)

    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Run what is queued, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join()

    def submit(self, images: np.ndarray) -> Future:
        future: Future = Future()
        with self._changed:
            if self._stopping:
                raise QueueFull(self._queued, self.max_queue, retry_after_s=1)
            if self._queued and self._queued + len(images) > self.max_queue:
                wait = self._queued * self._seconds_per_image
                raise QueueFull(self._queued, self.max_queue, retry_after_s=max(1, round(wait)))
            self._items.append(_Item(images, future))
            self._queued += len(images)
            self._changed.notify()
        return future

    def _take(self) -> List[_Item]:
        """The next batch, once there is one; [] when stopping with nothing queued."""
        with self._changed:
            while not self._items and not self._stopping:
                self._changed.wait()
            deadline = time.monotonic() + self.max_wait_s
            while self._queued < self.max_batch_size and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch: List[_Item] = []
            size = 0
            while self._items and (not batch or size + len(self._items[0].images) <= self.max_batch_size):
                item = self._items.popleft()
                self._queued -= len(item.images)
                # A request that timed out or went away meanwhile is not run.
                if item.future.set_running_or_notify_cancel():
                    batch.append(item)
                    size += len(item.images)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._stopping and not self._items:
                    return
                continue
            images = batch[0].images if len(batch) == 1 else np.concatenate([i.images for i in batch])
            started = time.perf_counter()
            try:
                rows = self.run(images)
            except Exception as err:  # a failed run fails its requests, not the server
                log.exception("serve: a model run of %d images failed", len(images))
                for item in batch:
                    item.future.set_exception(err)
                continue
            elapsed = time.perf_counter() - started
            self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * elapsed / len(images)
            self.on_batch(len(images))
            start = 0
            for item in batch:
                item.future.set_result(rows[start : start + len(item.images)])
                start += len(item.images)
