"""bitsnn.boards: bitstreams for amaranth-boards platforms with Yosys and nextpnr (YoWASP).

One file per board (its platform, PLL and device totals); ``common`` holds the shared build.
"""

from __future__ import annotations

from typing import NamedTuple

from bitsnn import BitsnnError

__all__ = ["BOARDS", "BoardFacts", "FACTS", "board_facts", "get_board"]

BOARDS = ("icebreaker", "ulx3s-85f")


class BoardFacts(NamedTuple):
    """What the tools after a build need to know of a board, as plain data (no amaranth):
    its name, FPGA, family and default PLL clock in Hz. The board files build from these."""

    name: str
    device: str
    family: str
    clk_freq: float


FACTS = {
    "icebreaker": BoardFacts("icebreaker", "iCE40UP5K-SG48", "ice40", 24e6),
    "ulx3s-85f": BoardFacts("ulx3s-85f", "LFE5U-85F-6BG381C", "ecp5", 50e6),
}


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
