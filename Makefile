# The four ways to run linerec's work. Each sets up what it needs first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench lint bootstrap clean install uninstall schematics

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
	$(PY) bench/archive.py

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The line-interface board: checks it (ERC, isolation, voltage ratings, pin map), then writes
# the KiCad netlist, the BOM and the schematic picture into hardware/.
schematics: bootstrap
	$(PY) -m schematics.build hardware

# On the Pi: `sudo make install` (PARTS=agent on the archive host, PARTS="device agent" for both).
# DESTDIR=<dir> stages the tree without touching this machine; scripts/install.sh lists the settings.
install:
	@scripts/install.sh

# Keeps /etc/linerec and the recordings unless PURGE=1.
uninstall:
	@scripts/uninstall.sh

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
