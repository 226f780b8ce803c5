# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The torch version `make` installs (another: make TORCH_PIN="torch==X.Y"); pyproject accepts torch>=2.2.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test browser-test venv venv-dev bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e .
	# Compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI), an editable install would
	# otherwise recompile crema's modules at every command's start.
	$(PY) -m compileall -q src
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	$(VENV)/bin/crema demo --out runs/demo

test: venv-dev
	$(PY) -m pytest -q tests

# The viewer's end-to-end test in a real headless browser: Debian's chromium (from apt, never a
# browser download; sudo unless root) driven by Playwright for Python (a dev extra).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-test: venv-dev
	command -v chromium >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	$(PY) -m pytest -q tests/test_serve.py

bench: venv-dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
