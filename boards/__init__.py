"""bitsnn.boards: bitstreams for amaranth-boards platforms with Yosys and nextpnr (YoWASP).

One file per board (its platform, PLL and device totals); ``common`` holds the shared build.
"""

from __future__ import annotations

from bitsnn import BitsnnError

__all__ = ["BOARDS", "get_board"]

BOARDS = ("icebreaker", "ulx3s-85f")


def get_board(name: str):
    """The :class:`~bitsnn.boards.common.Board` called ``name``."""
    if name == "icebreaker":
        from .icebreaker import ICEBREAKER

        return ICEBREAKER
    if name == "ulx3s-85f":
        from .ulx3s import ULX3S_85F

        return ULX3S_85F
    raise BitsnnError(f"unknown board {name!r} (known: {', '.join(BOARDS)})")
