# kiln: `make demo` runs the main job on the bundled sample, `make test` runs the tests.
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build by default. On a GPU machine: make install TORCH_SPEC="torch==2.13.0" with a CUDA
# index configured for pip, or install torch yourself first and use TORCH_SPEC=.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.kiln-installed

.PHONY: install browser demo test test-fast lint format clean

install: $(STAMP)

# torch is installed on its own first: a bare torch requirement with no torch present pulls a
# multi-GB CUDA build. constraints.txt pins the versions kiln is tested with. Last, DeepSpeed's
# CPU communication op is compiled once into the venv (model/ds_ops.py says why).
$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m model.ds_ops
	touch $@

# The report test drives a real headless Chromium. Installed from Debian's packages when it is
# missing and apt-get can run as root; a failure is tolerated (the test then skips and says why).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "make browser: could not install chromium; the browser test will skip"; \
	else echo "make browser: no chromium and no root apt-get; the browser test will skip"; fi

demo: install
	$(BIN)/kiln run

test: install lint browser
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf kiln-out .pytest_cache .ruff_cache
