"""PLL parameter solvers for the boards' clock generators, the searches that `icepll` and
`ecppll` (Project IceStorm / Trellis) do, with the same limits:

- iCE40 ``SB_PLL40`` (SIMPLE feedback): f_out = f_in * (DIVF+1) / ((DIVR+1) * 2**DIVQ), phase
  detector f_in/(DIVR+1) in 10..133 MHz, VCO f_out * 2**DIVQ in 533..1066 MHz.
- ECP5 ``EHXPLLL`` (feedback from CLKOP): f_out = f_in * CLKFB_DIV / CLKI_DIV, phase detector
  f_in/CLKI_DIV in 3.125..400 MHz, VCO f_out * CLKOP_DIV in 400..800 MHz, f_out 10..400 MHz.

Each returns the setting whose output is closest to the request (the first one found on a tie)
together with the frequency it gives, which is what the design is then constrained to (ECP5 ties
go to the VCO nearest 600 MHz, as in ecppll).
"""

from __future__ import annotations

from bitsnn import BitsnnError

__all__ = ["ice40_pll", "ecp5_pll"]


def _filter_range(f_pfd_mhz: float) -> int:
    """SB_PLL40 loop filter setting for a phase-detector frequency (icepll's table)."""
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd_mhz < limit:
            return value
    return 6


def ice40_pll(f_in: float, f_out: float) -> dict:
    """{"divr", "divf", "divq", "filter_range", "freq"} for an SB_PLL40 from f_in to about f_out (Hz)."""
    fin, want = f_in / 1e6, f_out / 1e6
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if best is None or abs(out - want) < abs(best[0] - want):
                    best = (out, divr, divf, divq, _filter_range(pfd))
    if best is None or abs(best[0] - want) > 0.01 * want:
        raise BitsnnError(f"no iCE40 PLL setting gives {want:g} MHz from {fin:g} MHz (within 1 %)")
    out, divr, divf, divq, fr = best
    return {"divr": divr, "divf": divf, "divq": divq, "filter_range": fr, "freq": out * 1e6}


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """{"clki_div", "clkfb_div", "clkop_div", "clkop_cphase", "freq"} for an EHXPLLL (Hz)."""
    fin, want = f_in / 1e6, f_out / 1e6
    best = None
    for clki in range(1, 129):
        pfd = fin / clki
        if not 3.125 <= pfd <= 400:
            continue
        for fb in range(1, 81):
            out = pfd * fb
            if not 10 <= out <= 400:
                continue
            for op in range(1, 129):
                vco = out * op
                if not 400 <= vco <= 800:
                    continue
                key = (abs(out - want), abs(vco - 600))  # ecppll: ties go to the VCO nearest 600 MHz
                if best is None or key < best[0]:
                    best = (key, out, clki, fb, op)
    if best is None or best[0][0] > 0.01 * want:
        raise BitsnnError(f"no ECP5 PLL setting gives {want:g} MHz from {fin:g} MHz (within 1 %)")
    _key, out, clki, fb, op = best
    return {"clki_div": clki, "clkfb_div": fb, "clkop_div": op, "clkop_cphase": max(0, op // 2 - 1),
            "freq": out * 1e6}
