"""Bit toggles per signal from a VCD waveform (Amaranth, Icarus, Verilator), for the FPGA energy
estimate's toggle term."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import BitsnnError

__all__ = ["ToggleCounts", "count_toggles"]


@dataclass
class ToggleCounts:
    """Bit toggles per signal counted from a VCD file.

    ``toggles``: full hierarchical name -> bit toggles (0->1 or 1->0 of any bit; changes from or to
    x/z are not counted); ``widths``: name -> bits; ``cycles``: rising edges of the clock in the
    counted window (None when no clock was found); ``clock``: the clock's name; ``per_bit``
    (only when asked for): name -> toggles of each bit, least significant first.
    Signals sharing one VCD identifier are one net: it is counted once, under its first name.
    """

    toggles: dict[str, int]
    widths: dict[str, int]
    cycles: int | None
    clock: str | None
    t_start: int = 0
    t_end: int | None = None
    timescale: str = ""
    per_bit: dict[str, list[int]] | None = None

    @property
    def total(self) -> int:
        return int(sum(self.toggles.values()))

    def per_cycle(self) -> float:
        """Toggles per clock cycle over all counted signals."""
        if not self.cycles:
            raise BitsnnError("the waveform has no clock edges in the counted window: toggles per cycle unknown")
        return self.total / self.cycles

    def per_signal_per_cycle(self) -> dict[str, float]:
        if not self.cycles:
            raise BitsnnError("the waveform has no clock edges in the counted window: toggles per cycle unknown")
        return {k: v / self.cycles for k, v in self.toggles.items()}


def _parse_bits(value, size: int) -> tuple[int, int]:
    """A VCD value -> (bits with x/z as 0, mask of x/z bits)."""
    if isinstance(value, int):
        return value, 0
    s = str(value).lower()
    if len(s) < size:
        s = (s[0] if s and s[0] in "xz" else "0") * (size - len(s)) + s
    v = m = 0
    for ch in s:
        v <<= 1
        m <<= 1
        if ch == "1":
            v |= 1
        elif ch != "0":
            m |= 1
    return v, m


class _HeaderFixed(io.RawIOBase):
    """A VCD byte stream whose header (up to ``$enddefinitions``) is rewritten so that pyvcd can
    parse it: Amaranth names anonymous signals ``$signal``, which pyvcd rejects as a reference, so
    a reference starting with ``$`` gets a ``_`` instead. The value changes are streamed as is."""

    _VAR = re.compile(rb"(\$var\s+\S+\s+\d+\s+\S+\s+)\$(?!end\b)(\S+)")

    def __init__(self, f):
        head = bytearray()
        while True:
            line = f.readline()
            head += line
            if not line or b"$enddefinitions" in line:
                break
        self._head = memoryview(bytes(self._VAR.sub(rb"\1_\2", bytes(head))))
        self._f = f

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._f.readinto(b)


def count_toggles(path: str | os.PathLike, *, clock: str = "clk", exclude=(), t_start: int = 0,
                  t_end: int | None = None, per_bit: bool = False) -> ToggleCounts:
    """Count bit toggles per signal in a VCD (Amaranth's ``Simulator.write_vcd``, Icarus, Verilator).

    ``clock``: the last component of the clock's name; its net is excluded from the toggles (the
    clock network is costed per cycle, not per toggle) and its rising edges are the cycles.
    ``exclude``: more signal names (last component or full name) not to count.
    ``t_start``/``t_end``: count changes at VCD times t_start <= t < t_end (the values before the
    window are tracked, so the first change inside it counts correctly). The initial values
    (``$dumpvars`` or a signal's first value) are never toggles. ``per_bit``: also count each
    bit separately (slower).
    """
    from vcd.reader import TokenKind, VCDParseError, tokenize

    path = Path(path)
    exclude = set(exclude)
    names: dict[str, str] = {}  # id_code -> first full name
    sizes: dict[str, int] = {}
    skip: set[str] = set()
    clock_ids: set[str] = set()
    clock_name = None
    scope: list[str] = []
    state: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    bit_counts: dict[str, list[int]] = {}
    cycles = 0
    t = 0
    timescale = ""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BitsnnError(f"cannot read waveform {path}: {e.strerror}") from None
    try:
        with f:
            for tok in tokenize(_HeaderFixed(f)):
                kind = tok.kind
                if kind is TokenKind.CHANGE_SCALAR or kind is TokenKind.CHANGE_VECTOR:
                    idc, value = tok.data.id_code, tok.data.value
                    if idc not in sizes or idc in skip:
                        continue
                    new = _parse_bits(value, sizes[idc])
                    old = state.get(idc)
                    state[idc] = new
                    if old is None:
                        continue
                    inside = t >= t_start and (t_end is None or t < t_end)
                    if not inside:
                        continue
                    if idc in clock_ids:
                        if old == (0, 0) and new == (1, 0):
                            cycles += 1
                        continue
                    flips = (old[0] ^ new[0]) & ~(old[1] | new[1])
                    if flips:
                        counts[idc] = counts.get(idc, 0) + int(flips).bit_count()
                        if per_bit:
                            bc = bit_counts.setdefault(idc, [0] * sizes[idc])
                            while flips:
                                low = flips & -flips
                                bc[low.bit_length() - 1] += 1
                                flips ^= low
                elif kind is TokenKind.CHANGE_TIME:
                    t = tok.data
                elif kind is TokenKind.VAR:
                    var = tok.data
                    full = ".".join(scope + [var.reference])
                    idc = var.id_code
                    if var.type_.name in ("real", "realtime", "string", "event"):
                        skip.add(idc)
                        continue
                    if var.reference in exclude or full in exclude:
                        skip.add(idc)
                    if var.reference == clock and var.size == 1 and (clock_name is None or idc in clock_ids):
                        clock_ids.add(idc)
                        clock_name = clock_name or full
                    if idc not in names:
                        names[idc] = full
                        sizes[idc] = var.size
                elif kind is TokenKind.SCOPE:
                    scope.append(tok.data.ident)
                elif kind is TokenKind.UPSCOPE:
                    if scope:
                        scope.pop()
                elif kind is TokenKind.TIMESCALE:
                    ts = tok.data
                    timescale = f"{ts.magnitude.value} {ts.unit.value}"
    except VCDParseError as e:
        raise BitsnnError(f"{path}: not a readable VCD file ({e})") from None
    if not names:
        raise BitsnnError(f"{path}: the waveform declares no signals")
    toggles = {names[i]: counts.get(i, 0) for i in names if i not in skip and i not in clock_ids}
    widths = {names[i]: sizes[i] for i in names if i not in skip and i not in clock_ids}
    bits = None
    if per_bit:
        bits = {names[i]: bit_counts.get(i, [0] * sizes[i]) for i in names if i not in skip and i not in clock_ids}
    return ToggleCounts(toggles=toggles, widths=widths, cycles=cycles if clock_ids else None,
                        clock=clock_name, t_start=t_start, t_end=t_end, timescale=timescale, per_bit=bits)
