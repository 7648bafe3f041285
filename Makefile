# Two commands do all set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= $(shell command -v python3.11 || command -v python3)

.PHONY: run test lint unit setup browser prometheus demo clean

TEST_HOOKS := lily_dagster_tests/fixtures/lily_test_hooks
EMULATOR := tools/atlan-emulator

$(STAMP): setup.py pyproject.toml $(TEST_HOOKS)/pyproject.toml $(EMULATOR)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# A third-party hook package, registered through the lily_dagster.hooks entry point.
	$(PY) -m pip install -q --disable-pip-version-check -e $(TEST_HOOKS)
	@# The Atlan emulator (`lily atlan-emulator`), a distribution of its own for tests and benchmarks.
	$(PY) -m pip install -q --disable-pip-version-check -e $(EMULATOR)
	@touch $(STAMP)

# Bytecode for the project's own modules, written once: with PYTHONDONTWRITEBYTECODE set
# (as on the CI machine), every `lily` process, run worker and code server otherwise compiles
# them again (~0.1 s each, thousands of processes in the suite). Stale files are recompiled
# in memory by Python, so this is only ever a cache.
BYTECODE := $(PY) -m compileall -q -j 0 lily_dagster lily_dagster_tests tools benchmarks >/dev/null

setup: $(STAMP)

# The UI tests (lily_dagster_tests/ui) drive Debian's Chromium with Playwright (`make test`
# installs it; `make run` does not need it); nothing is downloaded at test time (never `playwright install`). Installed quietly when missing, if
# apt-get is there and we are root; otherwise the UI tests are skipped, naming the browser.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1
browser:
	@test -x $(CHROMIUM) || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the UI tests (apt-get)"; \
	    $(APT_CHROMIUM) || { apt-get update -qq >/dev/null 2>&1 && $(APT_CHROMIUM); } \
	      || echo "could not install chromium: the UI tests will be skipped"; \
	  else echo "no $(CHROMIUM) (apt-get as root installs it): the UI tests will be skipped"; fi; }

# The metrics tests run Debian's Prometheus (a real server scraping the receiver) and its
# promtool (checks deploy/prometheus/alerts.yml); `make test` installs them like chromium.
APT_PROMETHEUS := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus for the metrics tests (apt-get)"; \
	    $(APT_PROMETHEUS) || { apt-get update -qq >/dev/null 2>&1 && $(APT_PROMETHEUS); } \
	      || echo "could not install prometheus: the Prometheus tests will fail, naming it"; \
	  else echo "no promtool (apt-get as root installs Debian's prometheus): the Prometheus tests will fail"; fi; }

# The whole local stack on embedded defaults: Kafka-compatible broker, Dagster UI and
# daemon (http://127.0.0.1:3000), demo traffic. Ctrl-C stops it; so does any signal to make:
# exec makes lily make's own child (make passes SIGTERM on to it), and --stop-with-parent
# stops it when make dies of a signal it does not pass on (SIGHUP, SIGQUIT, SIGKILL).
run: setup
	@$(BYTECODE)
	exec $(VENV)/bin/lily dev --stop-with-parent

# Lint, types, then the full suite on PYTEST_WORKERS workers (pytest-xdist); loadgroup keeps
# the contract suite on one worker (its conftest groups it), so its stacks are built once.
# The 30 slowest tests are listed at the end (where the suite's 15 minutes go).
PYTEST_WORKERS ?= 2
test: setup browser prometheus lint
	@$(BYTECODE)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=30

# The unit tests alone (marker `unit`: lily_dagster_tests/lib), under a minute on 2 cores.
unit: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m unit -q lily_dagster_tests/lib

lint: setup
	$(VENV)/bin/ruff check lily_dagster lily_dagster_tests benchmarks tools
	$(VENV)/bin/ruff format --check lily_dagster lily_dagster_tests benchmarks tools
	$(VENV)/bin/mypy
	@# Every definition loads (the code location, as the daemon and the UI load it).
	LILY_HOME=$$(mktemp -d) VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg check defs

demo: setup
	$(VENV)/bin/lily demo

clean:
	rm -rf .lily .pytest_cache .mypy_cache .ruff_cache
