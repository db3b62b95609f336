# The four ways to run linerec's work. Each sets up what it needs first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench lint bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/linerec demo --keep demo-output

test: bootstrap
	$(PY) -m pytest

bench: bootstrap
	$(PY) bench/envelope.py
	$(PY) bench/line.py
	$(PY) bench/dsp.py
	$(PY) bench/pipeline.py
	$(PY) bench/transfer.py

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
