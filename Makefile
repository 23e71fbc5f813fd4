# make demo: create .venv, install atf, backtest the default bot on generated data, write a report.
# make test: create .venv, install atf with its test and ml extras, run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

# torch first, by exact version: the CPU build on this disk; anything else pulls the CUDA build.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,ml]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/atf backtest config/strategies/rsi_bb_atr.yaml --output results/demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 -q

bench: $(VENV)/.installed-test
	$(BIN)/python backtests/bench_backtest.py

clean:
	rm -rf $(VENV) results .pytest_cache
