# The same commands run on a developer's machine and in CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all install system-deps test test-fast test-min-deps check-install lint demo bench clean

all: test

# System packages the tests use: redis-server (real Redis in tests), chromium (browser test),
# mosquitto (a real MQTT broker; Debian puts it in /usr/sbin).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v mosquitto || test -x /usr/sbin/mosquitto; } >/dev/null 2>&1 || missing="$$missing mosquitto"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,redis,django,mqtt,metrics,inspect]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests bench examples scripts
	$(VENV)/bin/ruff format --check src tests bench examples scripts
	$(VENV)/bin/mypy

# A plain `pip install .` (no extras) into a fresh environment under build/: every public
# module imports, the requirements are what the code imports, and `kanal serve` answers an
# HTTP request and a WebSocket. pip's cache keeps it quick after the first run.
CHECK_VENV := build/check-install
check-install: install
	rm -rf $(CHECK_VENV) build/lib build/bdist.*
	$(PYTHON) -m venv --without-pip $(CHECK_VENV)
	$(PY) -m pip --python $(CHECK_VENV)/bin/python install -q .
	$(CHECK_VENV)/bin/python scripts/check_install.py

test: system-deps install lint check-install
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -x -m "not slow and not browser"

# The fast suite against the lowest version of every dependency that pyproject.toml allows
# (constraints/minimum.txt), in an environment of its own under build/.
MIN_VENV := build/min-deps
test-min-deps: system-deps
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(MIN_VENV)/bin/python -m pip install -q -c constraints/minimum.txt -e '.[test,redis,django,mqtt,metrics,inspect]'
	$(MIN_VENV)/bin/pytest -q -m "not slow and not browser" -p no:cacheprovider

# The chat example on http://127.0.0.1:8000/ (KANAL_LAYER picks the layer; memory:// by default).
demo: install
	$(PY) -m examples.chat --host 127.0.0.1 --port 8000

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
