"""Co-simulation of the generated Verilog (cocotb 2.x on Icarus Verilog or Verilator) against the
golden model: see docs/cosim.md."""
