"""Ctrl-C and SIGTERM that no C extension can swallow.

The ``crema`` command turns SIGTERM into :class:`Terminated` and Ctrl-C into KeyboardInterrupt,
raised by Python signal handlers in the main thread, so that cleanup and one-line messages run.
Such an exception is raised wherever the main thread happens to be, and some C code clears any
pending exception (numpy comparing a dtype with another object does, inside pandas' ``to_csv``):
a signal landing there was lost and the job ran on to the end. So the handlers also record the
signal here, and long loops call :func:`raise_if_stopped` at their safe points: ``crema prepare``
between chunks, ``embed``/``predict`` after each flush, fine-tuning after each optimiser step, an
evaluation suite after each step (``pretrain`` stops through its own handler, at a checkpoint).
The command clears the record when it ends, so library code run later never sees it.

Every layer may import this module; it imports nothing from CREMA.
"""
from __future__ import annotations

import signal

_requested: int | None = None  # the signal that asked this process to stop, if any


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that ``except Exception``
    in a batch loop does not swallow it while ``finally`` and cleanup handlers still run."""


def request_stop(signum: int) -> None:
    """Record that ``signum`` (SIGINT or SIGTERM) arrived (called by the command's handlers)."""
    global _requested
    _requested = signum


def clear() -> None:
    """Forget an earlier request (a new command starts)."""
    global _requested
    _requested = None


def raise_if_stopped() -> None:
    """Raise what the recorded signal raises (KeyboardInterrupt for Ctrl-C, :class:`Terminated`
    for SIGTERM) if one arrived and its exception may have been lost."""
    if _requested == signal.SIGINT:
        raise KeyboardInterrupt
    if _requested is not None:
        raise Terminated(_requested)
