# The course's two commands (see README): `make lab` opens the course, `make test` runs every test.
# Both create the environment (.venv) first if it is missing or older than pyproject.toml.
# A laptop without an NVIDIA GPU can save ~4 GB with the CPU build of torch:
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_INDEX ?=
PIP_EXTRA := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
LINT_PATHS := lessonlib tests notebooks benchmarks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: lab course test lint format venv bench clean sync student

$(STAMP): pyproject.toml lab-settings/overrides.json
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e ".[dev]"
	@# JupyterLab settings for the course: widgets saved with the notebook (a reopened lesson shows
	@# them, not "Error displaying widget"), lesson .md sources open as notebooks (jupytext).
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	cp lab-settings/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

venv: $(STAMP)

## Open the course in JupyterLab (the mode is picked by lessonlib.setup(): offline when there is no network).
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

## Execute every notebook headless; executed copies and HTML go to build/.
course: $(STAMP)
	@mkdir -p build
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 \
		--output-dir build $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to html --output-dir build $(addprefix build/,$(notdir $(NOTEBOOKS)))
	@echo "Executed notebooks and HTML are in build/"

## Lint, unit tests and every notebook under nbval, in offline mode (as CI runs it).
test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	LESSONLIB_MODE=offline MPLBACKEND=Agg $(BIN)/python -m pytest tests notebooks \
		--nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout=600 -p no:cacheprovider

## Solution-free copies of the lessons for handing out (cells tagged "solution" removed) in build/student/.
student: $(STAMP)
	@mkdir -p build/student
	$(BIN)/jupyter nbconvert --to notebook --output-dir build/student \
		--TagRemovePreprocessor.enabled=True \
		--TagRemovePreprocessor.remove_cell_tags solution $(NOTEBOOKS)
	@echo "Solution-free lessons are in build/student/"

## After editing a lesson outside JupyterLab: bring each .md source and its .ipynb back in step (newer wins).
sync: $(STAMP)
	$(BIN)/jupytext --sync $(sort $(wildcard notebooks/[0-9][0-9]_*.md))

lint:
	$(BIN)/ruff check $(LINT_PATHS)

format:
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

## Benchmarks (results go to BENCHMARKS.md by hand, with the command).
bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build .pytest_cache .ruff_cache
