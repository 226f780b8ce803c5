"""Reading and writing dataclass configs as JSON: the round trip with its type and range checks.

:func:`to_dict` turns a (nested) config dataclass into plain JSON types; :func:`from_dict` rebuilds it,
checking every value against its field's annotation and the config's ``problems()`` (:func:`check_config`),
so that a hand-edited or damaged file fails with the field's name. :func:`save_json` writes a config
atomically; :func:`load_json` and :func:`read_json_object` read one back with one clear error.
The config dataclasses themselves are in :mod:`crema.config`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal, Mapping

from .atomic import atomic_write_text
from .errors import ConfigError


# ----------------------------------------------------------------------------- JSON round trip

def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (nested) as plain JSON-ready types (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Rebuild dataclass ``cls`` from :func:`to_dict` output (e.g. read from a JSON file).

    Every value is checked against the field's type (a number where a number belongs, finite,
    one of the allowed words for a ``Literal``...) and the config's ranges (:func:`check_config`),
    so that a hand-edited or damaged file fails here with the field's name, not deep inside a
    model with a traceback.

    Args:
        where: the field path of this config inside a larger one (``"preprocess."``), for messages.

    Raises:
        ConfigError (a ValueError): unknown keys, a value of the wrong type or out of range.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: expected an object of settings, "
                          f"got {_describe(data)}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: unknown config keys {sorted(unknown)}")
    missing = [name for name, f in known.items() if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: missing required keys {missing}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        _check_type(value, hints[name], f"{where}{name}")
        kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
    cfg = cls(**kwargs)
    check_config(cfg, where)
    return cfg


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """A type-checked JSON value as the field holds it: nested settings become their dataclass
    (also inside ``X | None``, ``tuple[X, ...]`` and ``dict[str, X]``), lists become tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, f"{where}.")
    if origin in (typing.Union, types.UnionType):
        # the checked value fits one member; a dataclass member applies to an object value
        inner = [a for a in args if dataclasses.is_dataclass(a)]
        if inner and isinstance(value, Mapping):
            return from_dict(inner[0], value, f"{where}.")
        plain = without_none(hint)
        return _coerce(Any if plain is hint else plain, value, where)
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args or (Any,) * len(value)
        return tuple(_coerce(h, v, f"{where}.{i}") for i, (h, v) in enumerate(zip(items, value)))
    return value


def without_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; anything else (a plain type, a union of several) unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


# ----------------------------------------------------------------------------- validation

def _describe(value: Any) -> str:
    """A value as a message shows it: its JSON kind and the value itself."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", tuple: "a list", dict: "an object", type(None): "null"}
    return f"{kinds.get(type(value), type(value).__name__)} ({json.dumps(value, default=str)[:60]})"


def _check_type(value: Any, hint: Any, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` (as JSON gives it) fits the annotation ``hint``."""
    problem = _type_problem(value, hint)
    if problem:
        raise ConfigError(f"{name}: expected {problem}, got {_describe(value)}")


def _type_problem(value: Any, hint: Any) -> str | None:
    """What ``value`` should have been, or None when it fits ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, arg) for arg in args]
        return None if None in problems else ", or ".join(p for p in problems if p)
    if hint is type(None):
        return None if value is None else "null"
    if origin is Literal:
        return None if value in args else "one of " + ", ".join(json.dumps(a) for a in args)
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            return "an object"
        for item in value.values():  # dict[str, X]: every value an X
            problem = _type_problem(item, args[1]) if len(args) == 2 else None
            if problem:
                return f"an object whose values are each {problem}"
        return None
    if origin is tuple:
        return _tuple_problem(value, args)
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, Mapping) else "an object of settings"
    return None  # Any and other annotations are not checked


def _tuple_problem(value: Any, args: tuple) -> str | None:
    """``tuple[X, ...]`` (any length) or ``tuple[X, Y]`` (fixed length), given as a JSON list."""
    if not isinstance(value, (list, tuple)):
        return "a list"
    if len(args) == 2 and args[1] is Ellipsis:
        item_hints = [args[0]] * len(value)
    elif len(value) != len(args):
        return f"a list of {len(args)} values"
    else:
        item_hints = list(args)
    for item, item_hint in zip(value, item_hints):
        problem = _type_problem(item, item_hint)
        if problem:
            return f"a list whose items are each {problem}"
    return None


def check_config(cfg: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` naming the first field of ``cfg`` outside its range (sampling
    rate and window positive, band edges ordered, model sizes positive...): the first of its
    ``problems()``, for a config class that has them (types are checked by ``from_dict``)."""
    check = getattr(type(cfg), "problems", None)
    problems = list(check(cfg)) if check else []
    if problems:
        raise ConfigError(f"{where}{problems[0]}")


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write a dataclass or a JSON-ready object to ``path`` atomically, pretty-printed."""
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``what``: "suite config", "run config"...), or one clear
    :class:`ConfigError` naming the file: missing, not JSON, or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a JSON object")
    return data


def load_json(path: str | os.PathLike, cls: type | None = None) -> Any:
    """Read ``path``; with ``cls``, rebuild that dataclass (types and ranges checked).

    Raises:
        ConfigError: the file is not JSON, or does not describe ``cls``; the message names it.
    """
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable JSON ({exc})") from None
    if cls is None:
        return data
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
