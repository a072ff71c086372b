# One virtual environment (.venv) serves every make target and nox session.
# `make explore` and `make test` bootstrap everything on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(abspath $(VENV))/bin/python
STAMP  := $(VENV)/.installed
SIM    ?= icarus
WORKLOAD ?=
PYTEST_ARGS ?=

# pip prints one warning per package for the local mirrors it cannot use; hide only those.
PIP_FILTER := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help venv hdl-tools explore test imports sim sim-mutants sim-bench synth synth-vivado energy cosim bench clean

help:
	@echo "make explore   run the default mixed-precision search (WORKLOAD=path to pick another)"
	@echo "make test      run the default test suite"
	@echo "make imports   check the import contracts (layers, energy/sw/cosim one way)"
	@echo "make sim       run the RTL verification (SIM=icarus|verilator)"
	@echo "make synth     open yosys synthesis with a utilization table"
	@echo "make energy    per-layer DRAM energy table of WORKLOAD"
	@echo "make cosim     real layer tensors through the simulated RTL (POINT=int8|best|N, SIM=icarus|verilator)"
	@echo "make bench     speed benchmarks"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the Python environment into $(VENV) (first run: a few minutes)..."
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | $(PIP_FILTER)
	@$(PY) -c "import torch, torchvision, pytorch_quantization, pymoo, cocotb, pyuvm, zigzag" 
	@touch $(STAMP)

venv: $(STAMP)

# Icarus Verilog, yosys and a C++ compiler (Verilator's models, sw.quant.fused_quant's kernel) come from
# the system's packages.
hdl-tools:
	@if ! command -v iverilog >/dev/null || ! command -v yosys >/dev/null || ! command -v g++ >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing iverilog, yosys and g++ with apt-get..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog yosys g++ >/dev/null; \
	  elif ! command -v iverilog >/dev/null || ! command -v yosys >/dev/null; then \
	    echo "error: iverilog and yosys are required: install them (e.g. sudo apt-get install iverilog yosys)"; exit 1; \
	  fi; \
	fi

explore: $(STAMP)
	$(PY) -m sw explore $(WORKLOAD)

test: $(STAMP) hdl-tools
	$(PY) -m pytest $(PYTEST_ARGS)

imports: $(STAMP)
	$(abspath $(VENV))/bin/lint-imports

sim: $(STAMP) hdl-tools
	$(MAKE) -C hw sim SIM=$(SIM) PYTHON=$(PY)

sim-mutants: $(STAMP) hdl-tools
	$(MAKE) -C hw sim-mutants SIM=$(SIM) PYTHON=$(PY)

sim-bench: $(STAMP) hdl-tools
	$(MAKE) -C hw sim-bench PYTHON=$(PY)

synth: $(STAMP) hdl-tools
	$(MAKE) -C hw synth PYTHON=$(PY)

synth-vivado:
	$(MAKE) -C hw synth-vivado

energy: $(STAMP)
	$(PY) -m energy table $(WORKLOAD)

cosim: $(STAMP) hdl-tools
	$(PY) -m cosim $(WORKLOAD) --sim $(SIM) $(if $(POINT),--point $(POINT))

bench: $(STAMP)
	$(PY) -m nox -s bench

clean:
	rm -rf results build hw/sim_build .nox
