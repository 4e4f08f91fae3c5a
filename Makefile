# Two commands for a newcomer on a fresh machine: `make demo` and `make test`.
# Everything installs into ./.venv from PyPI, pinned by requirements-lock.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench lock clean

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

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check airflow_provider_openai_batch tests bench example_dags
	$(VENV)/bin/ruff format --check airflow_provider_openai_batch tests bench example_dags

# Results and the machine they ran on: docs/benchmarks.md.
bench: setup
	$(PY) bench/bench_input.py --mb 50 200
	$(PY) bench/bench_submit.py --mb 50 200
	$(PY) bench/bench_emulator.py --requests 50000 --line-bytes 4000
	$(PY) bench/bench_trigger.py --triggers 500 --seconds 10

lock:
	uv pip compile -q pyproject.toml --extra test --python-version 3.11 -o requirements-lock.txt

clean:
	rm -rf $(VENV) .demo
