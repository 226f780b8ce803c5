"""A SIGTERM that no C extension can swallow.

The ``crema`` command turns SIGTERM into :class:`Terminated`, raised by a Python signal handler
in the main thread, so that cleanup and one-line messages run as for Ctrl-C. Such an exception is
raised wherever the main thread happens to be, and some C code clears any pending exception (numpy
comparing a dtype with another object does, inside pandas' ``to_csv``): a SIGTERM landing there
was lost and the job ran on to the end. So the handler also records the request here, and long
loops call :func:`raise_if_terminated` at their safe points (between chunks of work).

Every layer may import this module; it imports nothing from CREMA.
"""
from __future__ import annotations

import signal

_requested = False


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that ``except Exception``
    in a batch loop does not swallow it while ``finally`` and cleanup handlers still run."""


def request_termination() -> None:
    """Record that SIGTERM arrived (called by the command's signal handler)."""
    global _requested
    _requested = True


def clear() -> None:
    """Forget an earlier request (a new command starts)."""
    global _requested
    _requested = False


def termination_requested() -> bool:
    return _requested


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived and its exception may have been lost."""
    if _requested:
        raise Terminated(signal.SIGTERM)
