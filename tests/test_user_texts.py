"""What a newcomer with a clone reads: the pages, the model cards, the config descriptions and every
``--help`` text name no private folder or issue number, install hints work from a clone (CREMA is
not on a package index), and every model argument says that shipped model names work."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

import crema
from crema.cli import build_parser, main
from crema.errors import CremaError, ReadError

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = re.compile(r"\.\./shared|\bissues? #?\d|crema-ecg\[|these machines|GPU session", re.IGNORECASE)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _config_texts(path: Path) -> list[str]:
    """The prose of a config file: its ``description`` and ``_comment`` entries, at any depth."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("description", "_comment") and isinstance(value, str):
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text()))
    return found


def test_pages_cards_configs_and_help_name_no_private_folder_or_issue():
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in
             [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
              *sorted((ROOT / "src" / "crema" / "weights").glob("*/MODEL_CARD.md"))]}
    for path in sorted((ROOT / "configs").rglob("*.json")):
        texts[str(path.relative_to(ROOT))] = "\n".join(_config_texts(path))
    texts["crema --help"] = build_parser().format_help()
    for name, sub in _subparsers().items():
        texts[f"crema {name} --help"] = sub.format_help()
    assert len([t for t in texts if t.startswith("configs/")]) >= 5
    found = {name: sorted(set(PRIVATE.findall(text))) for name, text in texts.items() if PRIVATE.search(text)}
    assert found == {}


def test_every_model_argument_says_shipped_names_work():
    seen = []
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.dest in ("checkpoint", "pretrained"):
                seen.append(f"{name} {action.dest}")
                assert "shipped model" in " ".join((action.help or "").split()), (name, action.dest, action.help)
    # the commands that load a model by name: each is checked above
    for expected in ("embed checkpoint", "predict checkpoint", "plot checkpoint", "probe checkpoint",
                     "finetune checkpoint", "evaluate checkpoint", "export checkpoint", "export-onnx checkpoint",
                     "plot-reconstruction checkpoint", "serve checkpoint", "serve pretrained"):
        assert expected in seen


HINT = "pip install -e '.[{}]'"


def test_serve_without_its_extra_says_how_to_install_it_from_a_clone(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)          # import uvicorn now raises ImportError
    assert main(["serve", "crema-mini-ecg12"]) == 1
    err = capsys.readouterr().err
    assert "crema serve needs the serve extra (uvicorn is missing)" in err and HINT.format("serve") in err


def test_a_clinical_format_without_its_package_says_how_to_install_it(monkeypatch, tmp_path):
    from crema.data.formats.common import require

    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ReadError) as error:
        require("pydicom", tmp_path / "ecg.dcm")
    assert str(error.value).startswith(f"{tmp_path / 'ecg.dcm'}: reading this format needs the optional package "
                                       "'pydicom'") and HINT.format("formats") in str(error.value)


def test_onnx_export_without_its_extra_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export-onnx", "crema-mini-ecg12", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "ONNX export needs the onnx extra (onnx is missing)" in err and HINT.format("onnx") in err
    assert not list(tmp_path.iterdir())


def test_parquet_output_without_pyarrow_says_how_to_install_it(monkeypatch):
    from crema.use.commands import _require_pyarrow

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(CremaError, match=re.escape(HINT.format("parquet"))):
        _require_pyarrow()


def test_the_install_hints_match_the_extras_the_package_declares():
    tomllib = pytest.importorskip("tomllib")                  # Python 3.11+

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("serve", "formats", "onnx", "parquet"):
        assert extra in extras, extra
    assert crema.errors.install_hint("serve") == f"from the CREMA clone, {HINT.format('serve')}"


def test_a_damaged_shipped_model_says_how_to_restore_it_from_the_clone(tmp_path, monkeypatch):
    import shutil

    import crema.weights as weights

    folder = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "REGISTRY", folder / "models.json")
    weights._verified.cache_clear()
    try:
        target = folder / "crema-mini-ecg12" / "model.safetensors"
        target.write_bytes(target.read_bytes()[:-1] + b"\x00")
        with pytest.raises(CremaError) as damaged:
            crema.load("crema-mini-ecg12", device="cpu")
        target.unlink()
        weights._verified.cache_clear()
        with pytest.raises(CremaError) as missing:
            crema.load("crema-mini-ecg12", device="cpu")
    finally:
        weights._verified.cache_clear()
    for error in (damaged, missing):
        assert "git checkout src/crema/weights" in str(error.value) and "reinstall" not in str(error.value)
    assert "python -m crema.weights --update crema-mini-ecg12" in str(damaged.value)
