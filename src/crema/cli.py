"""The ``crema`` command. Each area registers its own subcommands in a ``commands`` module.

What reaches the user here is one line per problem, never a Python traceback: CREMA's own
errors (bad input, named by file and problem), a failed write (``no space left on device: PATH``,
``cannot write PATH: reason``), a flag out of its range (exit 2, as argparse's own errors), Ctrl-C
(exit 130) and SIGTERM (exit 143; raised as :class:`Terminated` so that the same cleanup runs as
for Ctrl-C: temporary files and folders removed, pool workers stopped). Any other exception (a
bug, or a library's error CREMA did not foresee) also becomes one line, ``crema CMD: error:
TYPE: message``, with exit status 1; ``--debug`` (or ``CREMA_DEBUG=1``) prints its traceback too.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import signal
import sys
import threading
import traceback
from typing import Iterator

from . import __version__, interrupts
from .errors import CremaError, describe_write_error, printable
from .kernels import allocator_environment
from .flags import UsageError
from .interrupts import Terminated

# Modules that define ``register(subparsers)``, with the commands each registers; each subcommand
# sets ``func(args) -> int``. Naming the commands here lets ``crema embed ...`` import only the module
# that defines ``embed`` (the others pull in training, evaluation and the viewer: about 0.5 s of a
# one-record job); tests/test_cli.py checks this table against what the modules register.
COMMAND_MODULES = {
    "crema.data.commands": ("prepare", "label", "info"),
    "crema.data.convert": ("convert",),
    "crema.train.commands": ("pretrain",),
    "crema.eval.commands": ("probe", "finetune", "evaluate", "report"),
    "crema.use.commands": ("embed", "predict", "plot", "embed-map", "export", "export-onnx"),
    "crema.viz.commands": ("plot-reconstruction",),
    "crema.serve.commands": ("serve",),
    "crema.demo": ("demo",),
    "crema.weights.commands": ("models",),
}

EXIT_INTERRUPTED = 128 + signal.SIGINT   # 130, what shells report for Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM   # 143
EXIT_USAGE = 2                           # what argparse exits with for a bad command line
DEBUG_ENV = "CREMA_DEBUG"                # set to 1 to print the traceback of every error
DEBUG_HELP = "print the Python traceback of an error (also: environment variable CREMA_DEBUG=1)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``crema`` parser: every command, or only ``command``'s module's commands when it is one
    of :data:`COMMAND_MODULES` (what :func:`main` does for a command line that names one)."""
    parser = argparse.ArgumentParser(
        prog="crema", description="Self-supervised foundation models for 12-lead ECGs.")
    parser.add_argument("--version", action="version", version=f"crema {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [name for name, commands in COMMAND_MODULES.items() if command is None or command in commands]
    for name in modules or COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module
                raise
            continue
        module.register(sub)
    for subparser in sub.choices.values():
        # also after the command (`crema embed ... --debug`); SUPPRESS keeps a `crema --debug CMD`
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def command_named(argv: list[str]) -> str | None:
    """The command word of a ``crema`` command line: its first argument that is not an option
    (the top-level options take no values), or None."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the block, and record it and Ctrl-C in
    :mod:`crema.interrupts` so that an exception C code swallowed still stops the command (main
    thread only; commands that stop gracefully, such as ``pretrain``, install their own handler
    inside)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def raise_terminated(signum: int, frame) -> None:
        if os.getpid() != owner:  # a forked worker inherited this handler: die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        interrupts.request_stop(signum)  # in case C code clears the exception raised below
        raise Terminated(signum)

    def raise_interrupt(signum: int, frame) -> None:
        interrupts.request_stop(signum)
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    interrupts.clear()
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    # Ctrl-C only where Python's own handler is in place (a background job keeps ignoring it)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, raise_interrupt)
    try:
        yield
        interrupts.raise_if_stopped()  # the exception was lost somewhere: still end as stopped
    finally:
        interrupts.clear()  # library code run after this command must not see its signal
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)


def reexec_with_allocator_settings() -> None:
    """Replace this process by the same command with glibc's allocator tunables set, once
    (:attr:`crema.kernels.KernelPolicy.malloc_tunables`; glibc reads them only at process start,
    mallopt from inside Python comes too late).

    Same PID, arguments and open files, so shells, ``torchrun`` and SLURM see one process. Does
    nothing where :func:`crema.kernels.allocator_environment` says so, or when the original
    command line is unknown (an embedded interpreter).
    """
    env = allocator_environment(dict(os.environ), sys.platform, platform.libc_ver()[0])
    argv = getattr(sys, "orig_argv", None)
    if env is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # could not re-execute (exotic launcher): run on with the default allocator


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console command itself, not a caller passing its own arguments
        reexec_with_allocator_settings()
    parser = build_parser(command_named(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        with _sigterm_raises():
            return int(args.func(args) or 0)
    except UsageError as exc:
        return _fail(args.command, str(exc), EXIT_USAGE, debug)
    except CremaError as exc:
        return _fail(args.command, str(exc), debug=debug)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `crema info DIR | head` closed stdout early: fine
            sys.stderr.close()
            return 0
        return _fail(args.command, describe_write_error(None, exc), debug=debug)
    except UnicodeError as exc:  # a name that is not valid UTF-8 reached a text output
        return _fail(args.command, f"a file or folder name is not valid UTF-8 ({exc.reason}); rename it",
                     debug=debug)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", EXIT_INTERRUPTED)
    except Terminated:
        return _fail(args.command, "terminated (SIGTERM)", EXIT_TERMINATED)
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        return _fail(args.command, unexpected_error(exc), debug=debug)


def unexpected_error(exc: BaseException) -> str:
    """The one line for an exception CREMA did not raise on purpose: its type and message, and
    how to see where it came from."""
    detail = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {detail[0]}" if detail and detail[0] else type(exc).__name__
    return f"{text} (unexpected; run again with --debug for the traceback)"


def _fail(command: str, message: str, code: int = 1, debug: bool = False) -> int:
    """Print ``crema COMMAND: error: MESSAGE`` on stderr (``crema COMMAND: MESSAGE`` for a
    signal), with names made printable, the traceback before it when ``debug``; return ``code``."""
    if debug:
        traceback.print_exc()
    label = "error: " if code in (1, EXIT_USAGE) else ""
    print(f"crema {command}: {label}{printable(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
