# Two commands on a fresh machine:  make demo  (train with energy tracking, offline, CPU)  and  make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export KERAS_BACKEND ?= torch
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint bench bench-all clean test-under-load

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	# torch is pinned here (CPU build), not in the package: users bring their own
	$(PY) -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, transformers, lightning, pytorch_lightning, keras, codecarbon, pynvml, wattwise"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/hf_train.py --output-dir runs/hf
	$(PY) examples/lightning_train.py --output-dir runs/lightning
	$(PY) examples/keras_train.py --output-dir runs/keras
	$(PY) examples/plain_loop.py --output-dir runs/loop --probe
	$(PY) examples/accelerate_loop.py --output-dir runs/accelerate

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/overhead.py

bench-all: bench  # also the forecast accuracy (about 11 min) and the cross-rank cost (about 3 min)
	$(PY) benchmarks/forecast_accuracy.py
	$(PY) benchmarks/distributed_overhead.py

clean:
	rm -rf runs lightning_logs

test-under-load: install  # the suite beside two busy CPU processes, as on a shared CI machine: it must pass all the same
	BUSY_PYTHON=$(PY) bash .ci/under-load sh -c '$(PY) -m ruff check . && $(PY) -m pytest -q'
