# Two commands on a fresh machine: `make demo` (install and run PaCoRe) and `make test` (install and test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint typecheck unit wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# pytest exits 5 when it collects nothing: say so plainly instead of failing with a bare status.
unit: install
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

test: lint typecheck unit

# Build the wheel, install it into a fresh venv, and check the installed CLI and subpackages.
wheel-check: install
	rm -rf dist /tmp/pacore-wheel-venv
	$(BIN)/python -m build --wheel --outdir dist . >/dev/null
	$(PYTHON) -m venv /tmp/pacore-wheel-venv
	/tmp/pacore-wheel-venv/bin/pip install --quiet dist/*.whl
	cd /tmp && /tmp/pacore-wheel-venv/bin/pacore --help >/dev/null
	cd /tmp && /tmp/pacore-wheel-venv/bin/python $(CURDIR)/tests/fixtures/wheel_check_graphs.py /tmp/pacore-wheel-venv/bin/pacore
	cd /tmp && /tmp/pacore-wheel-venv/bin/python -c "import importlib.util as u, pacore_graph.graphs, pacore_graph.tools; assert u.find_spec('graphs') is None and u.find_spec('tools') is None, 'top-level graphs/tools leaked'"
	@echo "wheel OK: pacore --help and pacore graphs run from a wheel install"

clean:
	rm -rf $(VENV) dist build *.egg-info
