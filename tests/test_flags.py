"""CLI flags made from config fields (crema.flags): names, types, defaults and help follow the field."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from crema.config import FinetuneConfig, ObjectiveConfig, PretrainConfig
from crema.flags import add_field_flags, field_comments, flag_values


@dataclass(frozen=True)
class Toy:
    """A config with one field of each kind the helper handles."""

    steps: int = 10                         # optimiser steps
    rate: float | None = None               # a rate; None = the other
    mode: Literal["a", "b"] = "a"           # which mode: a is the
                                            # first, b the second
    items: tuple[str, ...] = ()             # things, 100% of them
    fast: bool = False                      # go fast
    safe: bool = True                       # stay safe
    # a section comment, not a field's


def _parser(keep_defaults: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_field_flags(p, Toy, {"steps": "steps", "rate": "rate", "mode": "mode", "item": "items", "fast": "fast",
                             "safe": "safe"}, keep_defaults=keep_defaults)
    return p


def test_comments_are_read_with_their_continuation_lines():
    comments = field_comments(Toy)
    assert comments["mode"] == "which mode: a is the first, b the second"
    assert comments["safe"] == "stay safe"  # the section comment below is no continuation


def test_flags_take_type_choices_and_switches_from_the_field():
    args = _parser(True).parse_args(["--steps", "3", "--rate", "0.5", "--mode", "b", "--item", "x", "y",
                                     "--fast", "--no-safe"])
    assert (args.steps, args.rate, args.mode, args.item, args.fast, args.safe) == (3, 0.5, "b", ["x", "y"], True, False)
    with pytest.raises(SystemExit):
        _parser(True).parse_args(["--mode", "c"])
    defaults = _parser(True).parse_args([])
    assert (defaults.steps, defaults.rate, defaults.mode, defaults.fast, defaults.safe) == (10, None, "a", False, True)


def test_without_defaults_only_given_flags_have_values():
    args = _parser(False).parse_args(["--steps", "4", "--item", "x"])
    assert flag_values(args, {"steps": "steps", "rate": "rate", "item": "items", "safe": "safe"}) == {
        "steps": 4, "items": ("x",)}


def test_help_is_the_comment_and_the_default():
    helps = {a.dest: a.help for a in _parser(False)._actions}
    assert helps["steps"] == "optimiser steps (default 10)"
    assert helps["rate"] == "a rate; None = the other"
    assert helps["item"] == "things, 100%% of them"  # argparse formats help with %
    assert helps["safe"] == "stay safe (on by default; this flag turns it off)"
    _parser(False).format_help()


@pytest.mark.parametrize("cls", [PretrainConfig, ObjectiveConfig, FinetuneConfig])
def test_every_config_field_has_a_comment(cls):
    """The help of a generated flag is its field's comment: none may be missing."""
    assert set(field_comments(cls)) == set(cls.__dataclass_fields__)
