# Two commands for users: `make demo` and `make test`. Both install what they need first (the demo
# only the Python environment: no root, no apt; the tests promtool too).
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced-stamp

.PHONY: setup promtool demo test unit integration lint bench chaos clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode (and compileall before the tests): every `python -m worker` a test starts imports
# from .pyc files, even where PYTHONDONTWRITEBYTECODE keeps Python from writing them (compiling the
# libraries on each start costs seconds of CPU).
$(STAMP): $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

setup: $(STAMP) promtool  ## install the locked dependencies (runtime + dev) into .venv, and promtool

# promtool and prometheus (alert rule checks and the real-Prometheus test) from Debian's package,
# installed only where promtool is missing; as root directly, else through sudo without a prompt.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus </dev/null; }
	@promtool --version 2>&1 | head -n 1

demo: $(STAMP)  ## start local stand-in servers, the worker, publish events, print what landed; KEEP=1 leaves the servers up
	$(VENV)/bin/python -m tests.demo

# The tests in parallel processes (pytest-xdist), each with its own stand-in servers; most wait on
# servers and timeouts rather than the CPU. The chaos scenarios run one after another in one process
# (one group: pytest_xdist_make_scheduler in tests/conftest.py). PYTEST_XDIST= runs all in one process.
PYTEST_XDIST ?= -n 4 --dist loadgroup

test: setup lint  ## lint, type-check, unit and integration tests against real servers
	$(VENV)/bin/python -m compileall -q worker schemas tests
	$(VENV)/bin/pytest $(PYTEST_XDIST)

# The unit tests, and those of the tests' own tools (support, demo, benchmarks) but the one needing a server.
unit: setup
	$(VENV)/bin/pytest $(PYTEST_XDIST) -m "not integration" tests/unit tests/support tests/demo tests/benchmarks

integration: setup
	$(VENV)/bin/pytest $(PYTEST_XDIST) tests/integration

bench: setup  ## ceilings, naive baseline, floor loop and the worker, as ratios; rewrites docs/benchmarks.md, its chart and docs/flamegraphs/worker-drain.svg (py-spy)
	$(VENV)/bin/python -m tests.benchmarks

chaos: setup  ## the fault-injection suite at full scale; rewrites docs/reliability.md
	CHAOS_SCALE=full CHAOS_REPORT=docs/reliability.md $(VENV)/bin/pytest tests/chaos

lint: setup
	$(VENV)/bin/ruff check worker schemas tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(TOOLS) $(VENV) .pytest_cache .mypy_cache .ruff_cache
