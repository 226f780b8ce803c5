"""argparse flags made from the fields of a config dataclass, so that the CLI never restates them.

A config field carries its type, its default and a trailing comment that says what it means::

    steps: int = 1000                       # optimiser steps in total

:func:`add_field_flags` turns chosen fields into flags: ``--steps`` with ``type=int``, choices
from a ``Literal``, ``nargs="+"`` for a tuple, a switch for a bool (``--no-X`` when the field
defaults to True), and the comment (with continuation lines) as the help, followed by the
default. :func:`flag_values` reads the given flags back as field values. Only the standard library
is imported: the CLI builds every parser at start-up.

Ranges are checked the argparse way, as one line naming the flag (``argument --dpi: must be at
least 1, got 0``, exit status 2): plain flags with :func:`number_in` as their ``type``, and flags
made from config fields by :func:`check_flag_ranges`, which phrases the config's own ``problems()``
(the one range check of each field, also applied to config files) with the flag's name.
:func:`device_flag` refuses a device this machine does not have.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
import typing
from typing import Any, Callable, Literal, Mapping

from .config_io import without_none
from .errors import ConfigError


class UsageError(ConfigError):
    """A flag holds a value outside its range; the message starts ``argument --FLAG:`` as
    argparse's own errors do, and the CLI exits with argparse's status 2."""


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: its comment}`` for a dataclass: the comment after the field, and the comment-only
    lines right below it that are indented deeper than the fields (the comment wrapped on)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, tuple[int, str, bool]] = {}  # line -> (column, text, whole line is the comment)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start
            alone = not lines[row - 1][:column].strip()
            comments[row] = (column, token.string.lstrip("#").strip(), alone)
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        row = node.end_lineno
        if row not in comments or comments[row][2]:
            continue
        parts = [comments[row][1]]
        while row + 1 in comments and comments[row + 1][2] and comments[row + 1][0] > node.col_offset:
            row += 1
            parts.append(comments[row][1])
        found[node.target.id] = " ".join(parts)
    return found


def _type_options(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field annotation: ``type``, ``choices``, ``nargs``."""
    hint = without_none(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        values = typing.get_args(hint)
        return {"choices": list(values)} if isinstance(values[0], str) else {"type": type(values[0]),
                                                                             "choices": list(values)}
    if origin is tuple and typing.get_args(hint)[1:] == (Ellipsis,):
        return {"nargs": "+", **_type_options(typing.get_args(hint)[0])}
    if hint in (int, float):
        return {"type": hint}
    if hint is str:
        return {}
    raise TypeError(f"no flag for a field of type {hint!r}")


def _default_note(value: Any) -> str:
    """`` (default X)`` for the help, or nothing for an empty or None default."""
    if value is None or value == "" or value == ():
        return ""
    return f" (default {value})"


def add_field_flags(parser: argparse.ArgumentParser | Any, cls: type, flags: Mapping[str, str], *,
                    keep_defaults: bool, options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Add one flag per ``dest -> field`` of dataclass ``cls`` to ``parser``.

    Args:
        parser: an ``ArgumentParser`` (or an argument group).
        cls: the config dataclass whose fields the flags set.
        flags: flag dest -> field name; the flag is ``--dest`` with ``-`` for ``_`` (``--no-dest``
            for a bool field that defaults to True).
        keep_defaults: True: a flag not given holds the field's default. False: it holds None, so
            that only the flags the user gave override another config (``--config``, ``--resume``).
        options: dest -> extra argparse keywords (``metavar``, ``required``, narrower ``choices``);
            a ``note`` replaces the ``(default X)`` that follows the help.
    """
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for dest, name in flags.items():
        extra = dict((options or {}).get(dest, {}))
        default = defaults[name]
        if default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} has no plain default to show")
        note = extra.pop("note", None)
        if note is None:
            note = "" if extra.get("required") else _default_note(default)
        elif note:
            note = f" ({note})"
        help_text = (comments.get(name, "") + note).replace("%", "%%")
        flag = f"--{dest.replace('_', '-')}"
        if without_none(hints[name]) is bool:  # a switch: its default goes without saying
            help_text = comments.get(name, "").replace("%", "%%")
            if default is True:  # the comment says what the field does when on, as it is by default
                flag = f"--no-{dest.replace('_', '-')}"
                help_text = f"{help_text} (on by default; this flag turns it off)"
            kwargs: dict[str, Any] = {"action": "store_const", "const": not default}
        else:
            kwargs = _type_options(hints[name])
        # a required flag has no default to keep (argparse refuses a command line without it)
        kwargs["default"] = default if keep_defaults and not extra.get("required") else None
        parser.add_argument(flag, dest=dest, help=help_text, **{**kwargs, **extra})


def flag_values(args: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    """``{field: value}`` of the flags in ``args`` that hold a value (not None); lists become
    tuples, as the frozen configs store them."""
    values = {}
    for dest, name in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def flag_name(dest: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return f"--{dest.replace('_', '-')}"


def number_in(kind: type, low: float | None = None, high: float | None = None, *,
              low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: the text as ``kind`` (int or float), finite and within
    ``[low, high]`` (an open end with ``low_open``/``high_open``), else argparse's one-line error
    (``argument --dpi: must be at least 1, got 0``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_KIND_WORDS.get(kind, kind.__name__)}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {_range_words(low, high, low_open, high_open)}, got {text}")
        return value

    parse.__name__ = kind.__name__  # what argparse names in its own messages
    return parse


_KIND_WORDS = {int: "a whole number", float: "a number"}


def _range_words(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    if low is None:
        return f"{'below' if high_open else 'at most'} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_flag_ranges(cfg: Any, flags: Mapping[str, str], where: str = "") -> None:
    """Raise for the first of ``cfg.problems()`` (a config's range checks): a :class:`UsageError`
    naming the flag (``argument --mask-ratio: must be in [0, 1), got 1.0``) when a flag of
    ``flags`` (dest -> field) sets that field, else a ConfigError naming ``where`` + the field."""
    check = getattr(type(cfg), "problems", None)
    problems = list(check(cfg)) if check else []
    if not problems:
        return
    dest_of = {name: dest for dest, name in flags.items()}
    for problem in problems:
        name, _, detail = problem.partition(": ")
        if name in dest_of:
            raise UsageError(f"argument {flag_name(dest_of[name])}: {detail}")
    raise ConfigError(f"{where}{problems[0]}")


def device_flag(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``...
    that this machine has; imports torch only when the flag is given (the command needs it anyway).
    """
    if text == "auto":
        return text
    import torch  # only here: the CLI builds its parsers without torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA GPU(s) (cuda:0 to "
                                             f"cuda:{count - 1})")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: no Apple MPS device is available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: CREMA runs on cpu, cuda or mps")
    return text
