"""bitsnn.boards: bitstreams for amaranth-boards platforms with Yosys and nextpnr (YoWASP).

One file per board (its platform, PLL and device totals); ``common`` holds the shared build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from bitsnn import BitsnnError
from bitsnn.options import BOARDS

__all__ = ["BOARDS", "BoardFacts", "DeviceTotals", "FACTS", "board_facts", "get_board", "known_rates"]


@dataclass(frozen=True)
class DeviceTotals:
    """What one FPGA offers, from its datasheet."""

    logic: int  # LUT4-based logic cells (iCE40 LC, ECP5 TRELLIS_COMB)
    ffs: int
    bram_blocks: int
    bram_bits_per_block: int
    spram_blocks: int = 0
    spram_bits_per_block: int = 0
    dsp: int = 0

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.bram_bits_per_block


class BoardFacts(NamedTuple):
    """What the tools after a build need to know of a board, as plain data (no amaranth):
    its name, FPGA, family, default PLL clock in Hz, USB-UART bridge
    (:data:`bitsnn.link.BRIDGES`) and device totals. The board files build from these."""

    name: str
    device: str
    family: str
    clk_freq: float
    bridge: str
    totals: DeviceTotals

    def default_baud(self, clk_freq: float | None = None) -> int:
        """The UART rate a build gets without ``--baud``: the fastest this board's bridge carries
        reliably at the design clock (:func:`bitsnn.link.default_baud`)."""
        from bitsnn.link import BRIDGES, default_baud

        return default_baud(clk_freq or self.clk_freq, BRIDGES[self.bridge])


FACTS = {
    # iCE40 UltraPlus family datasheet (FPGA-DS-02008): 5,280 LUT4s (each with a flip-flop),
    # 30 sysMEM EBR of 4 kbit, 4 SPRAM of 256 kbit, 8 DSP (MAC16).
    "icebreaker": BoardFacts("icebreaker", "iCE40UP5K-SG48", "ice40", 24e6, "FT2232H",
                             DeviceTotals(logic=5280, ffs=5280, bram_blocks=30, bram_bits_per_block=4096,
                                          spram_blocks=4, spram_bits_per_block=256 * 1024, dsp=8)),
    # ECP5 family datasheet (FPGA-DS-02012): LFE5U-85: 84k LUT4s, 208 sysMEM EBR of 18 kbit, 156
    # 18x18 multipliers.
    "ulx3s-85f": BoardFacts("ulx3s-85f", "LFE5U-85F-6BG381C", "ecp5", 50e6, "FT231X",
                            DeviceTotals(logic=83640, ffs=83640, bram_blocks=208, bram_bits_per_block=18432, dsp=156)),
}

#: the rate of builds made before the rate was a build option
LEGACY_BAUD = 115200


def known_rates(clk_freq: float | None = None) -> list[int]:
    """The rates a host tries to find a board's (``bitsnn run`` without ``--baud``): each board's
    default at its default clock (and at ``clk_freq``, when given), then LEGACY_BAUD."""
    rates = [f.default_baud() for f in FACTS.values()]
    if clk_freq:
        for f in FACTS.values():
            try:
                rates.append(f.default_baud(clk_freq))
            except ValueError:
                continue  # no rate of this board's bridge suits that clock
    return list(dict.fromkeys([*rates, LEGACY_BAUD]))


def board_facts(name: str) -> BoardFacts:
    """The plain facts of board ``name`` (``bitsnn report`` uses them without importing amaranth)."""
    if name not in FACTS:
        raise BitsnnError(f"unknown board {name!r} (known: {', '.join(BOARDS)})")
    return FACTS[name]


def get_board(name: str):
    """The :class:`~bitsnn.boards.common.Board` called ``name``."""
    if name == "icebreaker":
        from .icebreaker import ICEBREAKER

        return ICEBREAKER
    if name == "ulx3s-85f":
        from .ulx3s import ULX3S_85F

        return ULX3S_85F
    raise BitsnnError(f"unknown board {name!r} (known: {', '.join(BOARDS)})")
