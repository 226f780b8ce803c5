"""The ``crema`` command line builds only the parser of the command it is given."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from crema.cli import COMMAND_MODULES, build_parser, command_named


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The command words a parser accepts."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("module_name", sorted(COMMAND_MODULES))
def test_each_module_registers_exactly_the_commands_the_table_names(module_name):
    parser = argparse.ArgumentParser()
    importlib.import_module(module_name).register(parser.add_subparsers(dest="command"))
    assert _commands(parser) == set(COMMAND_MODULES[module_name])


def test_the_full_parser_has_every_command_and_a_named_one_only_its_module():
    every = {c for commands in COMMAND_MODULES.values() for c in commands}
    assert _commands(build_parser()) == every
    assert _commands(build_parser("finetune")) == set(COMMAND_MODULES["crema.eval.commands"])
    assert _commands(build_parser("no-such-command")) == every


@pytest.mark.parametrize("argv, expected", [
    (["embed", "crema-mini-ecg12", "x"], "embed"),
    (["--debug", "predict", "--debug"], "predict"),
    (["--version"], None),
    ([], None),
])
def test_command_named_is_the_first_word_that_is_not_an_option(argv, expected):
    assert command_named(argv) == expected


def test_an_embed_command_line_does_not_import_training_evaluation_or_the_viewer():
    code = ("import sys; from crema.cli import build_parser, command_named; "
            "build_parser(command_named(['embed', 'm', 'x'])).parse_args(['embed', 'm', 'x', '--out', 'y']); "
            "print(sorted(m for m in ('crema.train.commands', 'crema.eval.commands', 'crema.serve.commands', "
            "'crema.data.commands') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_misspelt_command_is_answered_with_every_command(capsys):
    from crema.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["embd", "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'embd'" in err and "embed" in err and "pretrain" in err
