"""bitsnn.boards: bitstreams for amaranth-boards platforms with Yosys and nextpnr (YoWASP)."""
