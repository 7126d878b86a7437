"""Stop at a step boundary on SIGTERM (what a preempted cloud VM receives) or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Optional

log = logging.getLogger(__name__)

# Exit statuses: 75 is EX_TEMPFAIL ("try again later"), what a preempted job is;
# 130 is the shell's convention for Ctrl-C.
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130


class GracefulStop:
    """Context manager that turns SIGTERM/SIGINT into a flag the loop checks between steps.

    A second Ctrl-C falls through to Python's default and stops at once.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED

    def request(self, signum: int) -> None:
        """Stop as if ``signum`` had arrived, unless a signal already did."""
        self.signum = self.signum or signum

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "received %s: finishing this step, then writing a checkpoint", signal.Signals(signum).name
        )

    def __enter__(self) -> "GracefulStop":
        # Signal handlers can only be installed from the main thread (tests may train in others).
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
