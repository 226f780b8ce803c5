"""argparse flags made from the fields of a config dataclass, so that the CLI never restates them.

A config field carries its type, its default and a trailing comment that says what it means::

    steps: int = 1000                       # optimiser steps in total

:func:`add_field_flags` turns chosen fields into flags: ``--steps`` with ``type=int``, choices
from a ``Literal``, ``nargs="+"`` for a tuple, a switch for a bool (``--no-X`` when the field
defaults to True), and the comment (with continuation lines) as the help, followed by the
default. :func:`flag_values` reads the given flags back as field values. Only the standard library
is imported: the CLI builds every parser at start-up.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any, Literal, Mapping

from .config import without_none


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
            if default is True:
                flag = f"--no-{dest.replace('_', '-')}"
                help_text = f"turn off: {help_text}"
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
