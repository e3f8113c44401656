"""The report's cited constants: Horowitz's 45 nm operation energies (ASIC) and the FPGA power
models per board (docs/report.md has every constant with its source)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Constant", "HOROWITZ_45NM", "FpgaPowerModel", "FPGA_POWER", "constants_table"]


@dataclass(frozen=True)
class Constant:
    """A cited number: ``value`` in ``unit``; ``source`` says where it comes from."""

    value: float
    unit: str
    source: str


_HOROWITZ = ('M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014, '
             "paper 1.1 (doi:10.1109/ISSCC.2014.6757323), table of rough energy costs per operation, "
             "45 nm, 0.9 V")

#: Horowitz 45 nm figures (ASIC, not FPGA). Only the values checked against two independent
#: reproductions of the table are used (docs/report.md lists them).
HOROWITZ_45NM = {
    "int8_add": Constant(0.03e-12, "J", _HOROWITZ + ": 8-bit integer add 0.03 pJ"),
    "int16_add": Constant(0.05e-12, "J", _HOROWITZ + ": 16-bit integer add 0.05 pJ"),
    "int32_add": Constant(0.1e-12, "J", _HOROWITZ + ": 32-bit integer add 0.1 pJ"),
    "fp32_add": Constant(0.9e-12, "J", _HOROWITZ + ": 32-bit float add 0.9 pJ"),
    "fp32_mult": Constant(3.7e-12, "J", _HOROWITZ + ": 32-bit float multiply 3.7 pJ"),
    "sram_8kb_read64": Constant(10e-12, "J", _HOROWITZ + ": 64-bit read from an 8 KB cache (SRAM) 10 pJ"),
}

_ICE40_POWER = ("tinyvision-ai-inc/ice40_power, README.md 'Results' table (commit 1af931e): core-rail "
                "current of an iCE40UP5K on the Lattice iCE40 UltraPlus Breakout Board, icestorm "
                "bitstreams, Joulescope JS110, VCC = 1.219 V")


@dataclass(frozen=True)
class FpgaPowerModel:
    """The constants of the FPGA energy estimate for one board; None means unknown."""

    device: str
    static_w: float | None
    static_source: str
    clock_j_per_cycle: float | None
    clock_source: str
    toggle_j: float | None
    toggle_source: str


# iCE40UP5K, from the measurement table cited above (currents in A, core rail 1.219 V):
#   static:  'Blank design' 85.6 uA                                   -> 104.3 uW
#   clock:   'External 12 MHz + 28 bit counter (32 LC's)' 613.5 uA minus 'External halted clock
#            (0 kHz) + 24 bit counter' 92.1 uA, per 12 MHz cycle       -> 52.97 pJ/cycle
#   toggle:  'External 12 MHz + 28*8 bit counter' 641.3 uA minus '+ 28 bit counter' 613.5 uA:
#            7 more 28-bit counters, each 2*(1 - 2**-28) ~ 2 bit toggles per cycle, at 12 MHz
#                                                                       -> 0.2017 pJ/toggle
_V_ICE40 = 1.219
_ICE40_STATIC = 85.6e-6 * _V_ICE40
_ICE40_CLOCK = (613.5e-6 - 92.1e-6) * _V_ICE40 / 12e6
_ICE40_TOGGLE = (641.3e-6 - 613.5e-6) * _V_ICE40 / (12e6 * 7 * 2 * (1 - 2.0**-28))
# ECP5 (LFE5U-85F): no trustworthy static or clock figure was found (docs/report.md); the toggle
# energy is the iCE40 one rescaled by C*V^2 to the ECP5 core supply of 1.1 V, i.e. the same
# effective switched capacitance per toggle (both are 40 nm Lattice fabrics) -- an assumption.
_ECP5_TOGGLE = _ICE40_TOGGLE * (1.1 / _V_ICE40) ** 2

FPGA_POWER = {
    "icebreaker": FpgaPowerModel(
        device="iCE40UP5K",
        static_w=_ICE40_STATIC,
        static_source=_ICE40_POWER + ": 'Blank design' 85.6 uA x 1.219 V (a measurement of one part, "
        "not the datasheet's typical figure)",
        clock_j_per_cycle=_ICE40_CLOCK,
        clock_source=_ICE40_POWER + ": (613.5 uA at 12 MHz - 92.1 uA halted) x 1.219 V / 12 MHz; a "
        "32-LC design, so the clock load of a bigger design is under-counted",
        toggle_j=_ICE40_TOGGLE,
        toggle_source=_ICE40_POWER + ": (641.3 - 613.5) uA x 1.219 V / (12 MHz x 7 counters x 2 toggles "
        "per cycle); includes the clock load of the added flip-flops, so it is an upper bound per toggle",
    ),
    "ulx3s-85f": FpgaPowerModel(
        device="LFE5U-85F",
        static_w=None,
        static_source="unknown: no trustworthy LFE5U-85F static figure found (ECP5 family data sheet "
        "FPGA-DS-02012 not readable with the tools used)",
        clock_j_per_cycle=None,
        clock_source="unknown: no ECP5 clock-network measurement found",
        toggle_j=_ECP5_TOGGLE,
        toggle_source="assumption: the iCE40UP5K energy per toggle rescaled by C*V^2 from 1.219 V to the "
        "ECP5 core supply 1.1 V (same effective capacitance per toggle); not an ECP5 measurement",
    ),
}


def constants_table(board: str | None) -> dict:
    table = {k: asdict(v) for k, v in HOROWITZ_45NM.items()}
    p = FPGA_POWER.get(board) if board else None
    if p is not None:
        table["fpga_static_w"] = {"value": p.static_w, "unit": "W", "source": p.static_source}
        table["fpga_clock_per_cycle"] = {"value": p.clock_j_per_cycle, "unit": "J", "source": p.clock_source}
        table["fpga_toggle"] = {"value": p.toggle_j, "unit": "J", "source": p.toggle_source}
    return table
