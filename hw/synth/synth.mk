# Synthesis targets, included by hw/Makefile (`-include synth/synth.mk`); also usable on
# its own from hw/: `make -f synth/synth.mk synth`.
#
#   make synth         open flow: yosys synth_xilinx over a configuration matrix, prints a
#                      utilization table (SYNTH_ARGS="--lanes 1 --word-width 32 --float fp32"
#                      picks a subset; see `python synth/yosys_flow.py --help`)
#   make synth-vivado  Vivado non-project flow for one configuration when vivado is on PATH
#                      (VIVADO_ARGS="-lanes 4 -impl"; see synth/vivado/synth.tcl)

SYNTH_DIR   := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
PYTHON      ?= python3
SYNTH_ARGS  ?=
VIVADO      ?= vivado
VIVADO_ARGS ?=

.PHONY: synth synth-vivado

synth:
	$(PYTHON) $(SYNTH_DIR)/yosys_flow.py $(SYNTH_ARGS)

synth-vivado:
	@if command -v $(VIVADO) >/dev/null 2>&1; then \
	  mkdir -p $(SYNTH_DIR)/results/vivado && \
	  echo "$(VIVADO) -mode batch -nojournal -log $(SYNTH_DIR)/results/vivado/vivado.log -source $(SYNTH_DIR)/vivado/synth.tcl -tclargs $(VIVADO_ARGS)" && \
	  $(VIVADO) -mode batch -nojournal -log $(SYNTH_DIR)/results/vivado/vivado.log \
	    -source $(SYNTH_DIR)/vivado/synth.tcl -tclargs $(VIVADO_ARGS); \
	else \
	  echo "vivado is not on PATH, so nothing was run. To synthesize with Vivado (2022.1 or later):"; \
	  echo "  1. source <Vivado install>/settings64.sh   (puts vivado on PATH)"; \
	  echo "  2. make synth-vivado VIVADO_ARGS=\"-lanes 1 -word_w 32 -bf16 0 -period 10\"   (from hw/)"; \
	  echo "     or: vivado -mode batch -nojournal -source $(SYNTH_DIR)/vivado/synth.tcl -tclargs -lanes 1"; \
	  echo "  Add -impl to place and route, -family zynqmp (or -part PART) for UltraScale+,"; \
	  echo "  -help for every option. Reports go to $(SYNTH_DIR)/results/vivado/<configuration>/."; \
	fi
