"""The measured tables of README.md, docs/RESULTS.md and docs/BENCHMARKS.md are the ones
``experiments/readme_tables.py`` makes from results/ (no figure typed by hand), and the pages a
newcomer reads carry no references to the lab they were written in."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "readme_tables.py"
OWN_PAGES = [ROOT / "README.md", *(ROOT / "docs" / name for name in ("RESULTS.md", "BENCHMARKS.md", "DESIGN.md",
                                                                      "MODEL_CARD.template.md")),
             ROOT / "experiments" / "README.md", *sorted((ROOT / "results").rglob("*.md"))]


def tables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_pages_show_the_committed_results():
    done = tables("--check")
    assert done.returncode == 0, done.stderr


def test_a_changed_figure_is_named_and_rewritten(tmp_path):
    page = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", page)
    text = page.read_text()
    block = re.search(r"<!-- table:shipped-model:start -->\n(.*?)<!-- table:shipped-model:end -->", text, re.DOTALL)
    assert block and "crema-mini-ecg12" in block.group(1)
    figure = re.search(r"\| 0\.\d{3} \|", block.group(1)).group(0)
    page.write_text(text[:block.start(1)] + block.group(1).replace(figure, "| 0.999 |", 1) + text[block.end(1):])
    done = tables("--check", str(page))
    assert done.returncode == 1 and f"{page}: table 'shipped-model' differs" in done.stderr
    assert tables(str(page)).returncode == 0
    assert page.read_text() == text


def test_an_unknown_table_is_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- table:no-such-table:start -->\nx\n<!-- table:no-such-table:end -->\n")
    done = tables("--check", str(page))
    assert done.returncode != 0 and "unknown table 'no-such-table'" in done.stderr


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_speak_to_users_not_to_the_lab(page):
    text = page.read_text()
    for pattern in (r"\.\./shared", r"\bissue \d", r"\bissue's\b", r"these machines", r"the GPU session",
                    r"the project set"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{page.name}: {pattern}"


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    start = lines.index("```bash")
    assert lines[start + 1].startswith("make demo") and lines[start + 2].startswith("make test")
    assert start < 5
