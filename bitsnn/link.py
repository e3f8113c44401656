"""The board link, computed once: UART bit rates (divisor, tolerance, each board's USB bridge and
default rate) and the time an image takes over the link.

Plain Python (no amaranth, no NumPy): the UART cores (:mod:`bitsnn.hw.uart`), ``bitsnn build``,
``bitsnn report``, ``bitsnn run`` and ``benchmarks/bench_link.py`` all take these facts from here.

**Rates.** The design's UART divides its clock by an integer ``divisor = round(clk / baud)``
(:func:`baud_divisor`). Two checks decide whether a rate works (:func:`check_rate`):

- the two ends' rates agree within :data:`MAX_RATE_ERROR`: the design's ``clk / divisor`` against
  the rate the board's USB bridge really makes for the requested one (:class:`Bridge`, whose
  fractional baud divisor cannot hit every rate);
- the design's receiver samples every bit of a frame, start to stop, at least
  :data:`SAMPLE_MARGIN` of a bit away from the bit's edges, at the bridge's real rate. The receiver
  (:class:`bitsnn.hw.uart.UARTRx`) samples bit k at ``divisor // 2 + k * divisor + phi`` clock
  cycles after the start edge, ``phi`` in [0, 1) (the edge's phase against the clock).

**Throughput** (:func:`link_timing`): an INFER request carries one image and its reply the
result, so with the line kept busy (the host sends the next request before the last reply
arrives), an image costs ``max(up, down, compute)`` seconds, where ``up`` and ``down`` are the
frames' bytes times 10 bits over the rate (a pixel INFER carries the image's nonzero pixels, so a
mean over images gives the mean rate) and ``compute`` the design's run
(:func:`bitsnn.protocol.run_cycles`) over its clock. LOAD, RUN and READ (8-bit pixels, the
fallback) go one after the other: ``up + compute + down``. Neither counts the host's own turnaround (USB
latency), which only a board measures: ``bitsnn run`` prints what it measured beside this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["MIN_DIVISOR", "DEFAULT_MIN_DIVISOR", "MAX_RATE_ERROR", "SAMPLE_MARGIN", "BITS_PER_BYTE",
           "Bridge", "BRIDGES", "baud_divisor", "check_rate", "default_baud", "RateError", "LinkTiming",
           "link_timing"]

#: the smallest clock/baud ratio the receiver's mid-bit sampling supports
MIN_DIVISOR = 4
#: a board's default rate keeps at least this many clock cycles per bit (sampling within 1/8 bit
#: of each bit's middle); ``--baud`` may go down to MIN_DIVISOR
DEFAULT_MIN_DIVISOR = 8
#: the most the design's rate and the bridge's may differ (each receiver then drifts by less than
#: a fifth of a bit over a 10-bit frame)
MAX_RATE_ERROR = 0.02
#: the design's receiver samples each bit at least this fraction of a bit away from its edges
SAMPLE_MARGIN = 0.2
#: 8N1: start bit, 8 data bits, stop bit
BITS_PER_BYTE = 10


class RateError(ValueError):
    """A bit rate the design or the board's bridge cannot carry."""


@dataclass(frozen=True)
class Bridge:
    """A USB-UART bridge's baud generator (FTDI application notes AN232B-05 and AN_120): the rate is
    ``base / n`` where n is 1, 1.5, or at least 2 in steps of 1/8. ``max_baud``: the fastest rate
    its data sheet gives."""

    name: str
    base: int
    max_baud: int

    def divisors(self):
        yield Fraction(1)
        yield Fraction(3, 2)
        n = Fraction(2)
        while self.base / n >= 300:
            yield n
            n += Fraction(1, 8)

    def actual(self, baud: float) -> float:
        """The rate the bridge makes when asked for ``baud`` (its nearest divisor)."""
        want = Fraction(self.base) / Fraction(baud).limit_denominator(10**6)
        if want <= Fraction(5, 4):
            n = Fraction(1)
        elif want < Fraction(7, 4):
            n = Fraction(3, 2)
        else:
            n = max(Fraction(2), Fraction(round(want * 8), 8))
        return float(self.base / n)

    def exact_rates(self, at_most: float):
        """The rates the bridge makes exactly, fastest first, up to ``at_most``."""
        out = []
        for n in self.divisors():
            r = self.base / n
            if r <= at_most and r == int(r):
                out.append(int(r))
        return sorted(set(out), reverse=True)


#: the bridges on the supported boards: iCEBreaker's FT2232H (12 Mbaud, 12 MHz base in its
#: high-speed mode) and ULX3S's FT231X (3 Mbaud, 3 MHz base)
BRIDGES = {
    "FT2232H": Bridge("FT2232H", 12_000_000, 12_000_000),
    "FT231X": Bridge("FT231X", 3_000_000, 3_000_000),
}


def baud_divisor(clk_freq: float, baud: float) -> int:
    """Clock cycles per bit; RateError when the clock is too slow for the baud rate or the
    rounding error exceeds MAX_RATE_ERROR."""
    if not (clk_freq > 0 and baud > 0) or not (math.isfinite(clk_freq) and math.isfinite(baud)):
        raise RateError(f"clock frequency {clk_freq!r} and baud rate {baud!r} must be positive")
    div = round(clk_freq / baud)
    if div < MIN_DIVISOR:
        raise RateError(
            f"clock {clk_freq / 1e6:g} MHz is too slow for {baud:g} baud: {clk_freq / baud:.2f} cycles per bit, "
            f"at least {MIN_DIVISOR} needed"
        )
    err = abs(clk_freq / div - baud) / baud
    if err > MAX_RATE_ERROR:
        raise RateError(f"{baud:g} baud is {err:.1%} off with divisor {div} at {clk_freq / 1e6:g} MHz "
                        f"(limit {MAX_RATE_ERROR:.0%})")
    return div


def _sample_margin(divisor: int, cycles_per_bit: float) -> float:
    """The worst distance, in bits, of the receiver's samples of a frame's 10 bits from the bits'
    edges, when the line's bit lasts ``cycles_per_bit`` clock cycles."""
    worst = 1.0
    for k in range(BITS_PER_BYTE):
        for phi in (0.0, 1.0):
            pos = (divisor // 2 + k * divisor + phi) / cycles_per_bit - k
            worst = min(worst, pos, 1.0 - pos)
    return worst


def check_rate(clk_freq: float, baud: float, bridge: Bridge | None = None) -> int:
    """The divisor for ``baud`` at ``clk_freq``, after checking that the design's UART and the
    bridge (when given) carry it; RateError with a one-line reason otherwise."""
    if bridge is not None and baud > bridge.max_baud:
        raise RateError(f"{baud:g} baud is above the {bridge.name}'s maximum of {bridge.max_baud:g}")
    div = baud_divisor(clk_freq, baud)
    design = clk_freq / div
    line = float(baud)
    if bridge is not None:
        line = bridge.actual(baud)
        err = abs(design - line) / line
        if err > MAX_RATE_ERROR:
            raise RateError(f"{baud:g} baud: the design makes {design:.0f} and the {bridge.name} {line:.0f}, "
                            f"{err:.1%} apart (limit {MAX_RATE_ERROR:.0%})")
    margin = _sample_margin(div, clk_freq / line)
    if margin < SAMPLE_MARGIN:
        raise RateError(f"{baud:g} baud at {clk_freq / 1e6:g} MHz: the receiver samples {margin:.2f} of a bit from "
                        f"an edge (at least {SAMPLE_MARGIN} needed)")
    return div


def default_baud(clk_freq: float, bridge: Bridge) -> int:
    """The fastest rate that the bridge makes exactly and the design carries with at least
    DEFAULT_MIN_DIVISOR cycles per bit and its rate within 1 % of the bridge's."""
    for rate in bridge.exact_rates(min(bridge.max_baud, clk_freq / DEFAULT_MIN_DIVISOR)):
        try:
            div = check_rate(clk_freq, rate, bridge)
        except RateError:
            continue
        if abs(clk_freq / div - rate) / rate <= 0.01:
            return rate
    raise RateError(f"no rate of the {bridge.name} suits a {clk_freq / 1e6:g} MHz clock")


@dataclass(frozen=True)
class LinkTiming:
    """One image over the link: bytes each way, seconds, images/s (see the module docstring).
    ``pipelined``: the host keeps several requests in flight (INFER); otherwise each request waits
    for the last reply (LOAD, RUN, READ)."""

    baud: float
    up_bytes: float  # a mean, for pixel INFERs (their nonzero pixels travel)
    down_bytes: int
    compute_s: float
    pipelined: bool = True

    @property
    def up_s(self) -> float:
        return self.up_bytes * BITS_PER_BYTE / self.baud

    @property
    def down_s(self) -> float:
        return self.down_bytes * BITS_PER_BYTE / self.baud

    @property
    def streamed_s(self) -> float:
        """Per image with the line kept busy: the slowest of uplink, downlink and compute."""
        return max(self.up_s, self.down_s, self.compute_s)

    @property
    def one_at_a_time_s(self) -> float:
        return self.up_s + self.compute_s + self.down_s

    @property
    def per_image_s(self) -> float:
        return self.streamed_s if self.pipelined else self.one_at_a_time_s

    @property
    def images_per_s(self) -> float:
        return 1.0 / self.per_image_s

    @property
    def bound(self) -> str:
        if not self.pipelined:
            return "round-trip"
        return max((self.up_s, "uplink"), (self.down_s, "downlink"), (self.compute_s, "compute"))[1]

    def formula(self) -> str:
        if self.pipelined:
            return (f"max({self.up_bytes:.4g} B up x {BITS_PER_BYTE} / {self.baud:g} baud, {self.down_bytes} B down x "
                    f"{BITS_PER_BYTE} / {self.baud:g} baud, {self.compute_s * 1e6:.1f} us compute)")
        return (f"({self.up_bytes:.4g} B up + {self.down_bytes} B down) x {BITS_PER_BYTE} / {self.baud:g} baud + "
                f"{self.compute_s * 1e6:.1f} us compute")

    def as_dict(self) -> dict:
        return {"baud": self.baud, "pipelined": self.pipelined, "up_bytes": self.up_bytes,
                "down_bytes": self.down_bytes, "up_s": self.up_s, "down_s": self.down_s, "compute_s": self.compute_s,
                "per_image_s": self.per_image_s, "images_per_s": self.images_per_s, "bound": self.bound,
                "formula": self.formula()}


def link_timing(*, n_inputs: int, n_words: int, infer: bool, baud: float, compute_s: float,
                infer_pixels: bool = False, nonzero: float = 0.0) -> LinkTiming:
    """One image of a design with ``n_inputs`` inputs and ``n_words`` result words over a link at
    ``baud``: INFER, pipelined, when the design serves it (with ``infer_pixels``, the image's
    ``nonzero`` pixels travel too: a mean over images gives the mean rate), else LOAD, RUN and READ."""
    from .protocol import image_traffic

    up, down = image_traffic(n_inputs, n_words, infer=infer, nonzero=nonzero if infer_pixels else 0.0)
    return LinkTiming(float(baud), up, down, float(compute_s), bool(infer))
