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
LINT_PATHS := lessonlib tests notebooks benchmarks book conftest.py
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED := build/executed
ASSETS := book/node_modules/.package-lock.json
# nbval runs every lesson offline, as CI does, and keeps what it executed in $(EXECUTED) for the site and
# the slides (conftest.py), so the lessons run once per `make test`.
# Two pytest workers (pytest-xdist), each file on one worker: the English lessons and their Urdu twins
# run side by side, one torch thread each (the tiny models gain little from a second thread).
NBVAL := LESSONLIB_MODE=offline LESSONLIB_THREADS=1 $(BIN)/python -m pytest --nbval-lax \
	--nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 \
	-p no:cacheprovider --executed-dir $(EXECUTED) -n 2 --dist loadfile

.PHONY: lab course test lint format venv bench clean sync student site slides execute browser \
	cache-pretrained check-pretrained

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

## Open the course in JupyterLab on lesson 00 (the mode is picked by lessonlib.setup(): offline when there
## is no network). The server's root is the repository, so the lessons' ../images/ figures load.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb

## Execute every notebook headless; executed copies and HTML go to build/.
course: $(STAMP)
	@mkdir -p build
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 \
		--output-dir build $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to html --output-dir build $(addprefix build/,$(notdir $(NOTEBOOKS)))
	@echo "Executed notebooks and HTML are in build/"

## Lint, unit tests, every notebook under nbval (offline mode, as CI runs it), then the site and the
## slides built from those runs and the tests of what was built (tests/built, browser tests included).
test: $(STAMP) $(ASSETS) browser
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(NBVAL) tests notebooks --ignore=tests/built --durations=15
	$(BIN)/python book/make_site.py
	$(BIN)/python book/slides.py
	LESSONLIB_MODE=offline $(BIN)/python -m pytest tests/built -p no:cacheprovider

## Execute every lesson and its Urdu twin offline under nbval; the executed copies go to build/executed/
## (build/executed/ur/ for the twins).
execute: $(STAMP)
	$(NBVAL) notebooks

## The course website: execute the lessons offline, then build them with Jupyter Book 1 into
## build/site/_build/html (see the README for publishing it on GitHub Pages).
site: $(STAMP) $(ASSETS) execute
	$(BIN)/python book/make_site.py

## reveal.js slides of every lesson, offline, in build/slides/ (from the executed lessons; executes them
## first when build/executed is missing or older than the lessons).
slides: $(STAMP) $(ASSETS)
	$(BIN)/python book/make_site.py --check-executed || $(MAKE) execute
	$(BIN)/python book/slides.py

## Local copies of reveal.js, MathJax, require.js and the widgets' renderer for the site and the slides.
$(ASSETS): book/package.json book/package-lock.json
	$(BIN)/npm ci --prefix book --no-audit --no-fund --loglevel=error

## CI (CI=true, root) installs Debian's chromium for the browser tests; elsewhere they are skipped
## when no browser is installed (`apt-get install chromium` runs them).
browser:
	@if [ -n "$$CI" ] && ! command -v chromium >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

## Before class, on a machine with a network: download and sha256-check every pretrained weight file
## (ARGS="--dry-run", "--only clip,vqgan", "--skip dalle": see docs/instructors.md).
cache-pretrained: $(STAMP)
	$(BIN)/python -m lessonlib.classroom cache $(ARGS)

## Run the pretrained path of lessons 02-05 on the cached weights, hub switched off as in an offline
## classroom (PASS/FAIL/SKIP per step; ARGS=--download fetches what is missing first).
check-pretrained: $(STAMP)
	$(BIN)/python -m lessonlib.classroom check $(ARGS)

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
