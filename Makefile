# The two quick-start commands (README): `make demo` and `make test`.
# Both create .venv on first use with the pinned, CPU-safe dependency set, then reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test test-fast bench setup clean-artifacts

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

setup: $(BIN)/.installed

# Sets up the environment and runs the demo pipeline on the embedded synthetic world.
# One BLAS/OpenMP thread: the demo's tiny models run faster single-threaded, and oversubscribed
# threads on a busy 2-core machine made training ten times slower (override: OMP_NUM_THREADS=2 make demo).
# The second core still works: estimate-nodes trains its appearance encoder in a second process and
# train loads data in a worker (bench/second_core.py).
demo: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/uniseg run pipeline.yaml

# Sets up the environment and runs the whole test suite.
test: setup
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-artifacts:
	rm -rf artifacts/*/ data/synth pipeline.lock
