# Two commands for a newcomer on a fresh machine: `make demo` and `make test`.
# Everything installs into ./.venv from PyPI, pinned by requirements-lock.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench lock clean test-matrix lock-matrix dist test-deploy test-browser chromium

setup: $(STAMP)

# uv makes the install take seconds; plain venv + pip is the fallback where uv is missing or fails.
$(STAMP): pyproject.toml requirements-lock.txt
	@set -e; \
	if command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv >/dev/null 2>&1; then \
	  UV="$$(command -v uv || echo python3 -m uv)"; \
	  $$UV venv -q --allow-existing --python 3.11 $(VENV) 2>/dev/null || $$UV venv -q --allow-existing $(VENV); \
	  $$UV pip install -q --python $(PY) -c requirements-lock.txt -e '.[test]'; \
	else \
	  python3 -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip; \
	  $(PY) -m pip install -q -c requirements-lock.txt -e '.[test]'; \
	fi
	@touch $@

demo: setup
	$(PY) -m airflow_provider_openai_batch.demo

test: setup chromium
	$(PY) -m pytest

# The batch pages in Debian's chromium (headless, Playwright from PyPI) against real Airflow processes; the
# screenshots land in docs/. CI runs as root on a fresh machine: chromium comes from apt when missing.
test-browser: setup chromium
	$(PY) -m pytest tests/system/test_batch_pages_browser.py -m system

chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update && apt-get install -y chromium chromium-driver; }

# The provider where users run it (docs/deployment.md): PostgreSQL 15 (on the machine image), Redis (installed here
# when missing), the CeleryExecutor on two workers and two triggerers, with faults in every process.
test-deploy: setup
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }
	$(PY) -m pytest tests/deployment -v --timeout 900

# The wheel and sdist in dist/, to install elsewhere until a release is on PyPI (uv builds them in seconds).
DIST ?= dist
dist:
	@command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv; \
	UV="$$(command -v uv || echo python3 -m uv)"; $$UV build -q -o $(DIST) .
	@ls $(DIST)/*.whl

# The layout's rules (docs/architecture.md) are checked with lint: tests/unit/test_layout.py reads the imports.
lint: setup
	$(VENV)/bin/ruff check airflow_provider_openai_batch tests bench example_dags
	$(VENV)/bin/ruff format --check airflow_provider_openai_batch tests bench example_dags
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_layout.py

# Results and the machine they ran on: docs/benchmarks.md.
bench: setup
	$(PY) bench/bench_input.py --mb 50 200
	$(PY) bench/bench_submit.py --mb 50 200
	$(PY) bench/bench_emulator.py --requests 50000 --line-bytes 4000
	$(PY) bench/bench_trigger.py --triggers 1000 --others 0 1500
	$(PY) bench/bench_pages.py --batches 500 --views 20

lock:
	uv pip compile -q pyproject.toml --extra test --python-version 3.11 -o requirements-lock.txt

# The suites against the latest patch of each supported Airflow minor: one venv per minor (.venv-3.1, ...),
# pinned by requirements-lock-<minor>.txt, built by uv in seconds. `make test` has already run everything on
# the newest minor; here each minor runs the unit and integration suites, where the provider meets Airflow
# (the emulator's own suite tests an HTTP contract no Airflow version touches, and the system suite starts
# Airflow's processes, which `make test` and `make test-deploy` cover), within CI's 90 minutes.
AIRFLOW_MINORS ?= 3.1 3.2 3.3
MATRIX_JOBS ?= 1

test-matrix: $(foreach v,$(AIRFLOW_MINORS),.venv-$(v)/.installed)
	scripts/test-matrix.sh $(MATRIX_JOBS) $(AIRFLOW_MINORS)

# uv only: the pip fallback of `setup` would take minutes per minor.
.venv-%/.installed: requirements-lock-%.txt pyproject.toml
	@set -e; command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv; \
	UV="$$(command -v uv || echo python3 -m uv)"; \
	$$UV venv -q --allow-existing --python 3.11 .venv-$* 2>/dev/null || $$UV venv -q --allow-existing .venv-$*; \
	$$UV pip install -q --python .venv-$*/bin/python -c requirements-lock-$*.txt -e '.[test]'
	@touch $@

# Per-minor pins beyond the provider's own. Airflow 3.2.2 caps neither fastapi nor svcs, and both break its
# Execution API: fastapi 0.137+ at start-up, svcs 26 on every task call ('State' has no 'svcs_registry').
lock-matrix:
	@for v in $(AIRFLOW_MINORS); do \
	  case $$v in \
	    3.2) pins='fastapi<0.137 svcs<26';; \
	    *) pins='';; \
	  esac; \
	  printf '%s\n' "apache-airflow==$$v.*" $$pins | uv pip compile -q pyproject.toml - --extra test \
	    --python-version 3.11 --custom-compile-command "make lock-matrix" -o requirements-lock-$$v.txt; \
	done

clean:
	rm -rf $(VENV) .demo dist
