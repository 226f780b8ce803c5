"""SIGINT/SIGTERM as a flag that the training loop checks between steps, so that an interrupted
run still finishes its step and writes a checkpoint."""
from __future__ import annotations

import signal
from typing import Any


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (a second signal is not caught)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
