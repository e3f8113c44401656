"""A byte buffer with one write port and one synchronous read port, in single-port RAM on iCE40 UltraPlus.

On an iCE40 UltraPlus (``platform.device`` ``iCE40UP*``) the buffer is an ``SB_SPRAM256KA`` (16 k x 16
bit, one per 16 k bytes), which leaves the 4-kbit EBRs to the weights; everywhere else (simulation,
Verilog export, ECP5) it is a ``lib.memory.Memory``.

Single-port rule: a SPRAM has one address, so the buffer takes the write address while ``wr.en`` is
high and the read address otherwise. Users must not read in a cycle they write (the data read is
then undefined on SPRAM); the UART top never does, because it writes the image only while no
inference runs and reads it only while one does.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .wmem import SPRAM_DEPTH, WeightMemory, has_spram

__all__ = ["ByteBuffer", "has_spram", "SPRAM_DEPTH"]


class ByteBuffer(wiring.Component):
    """``depth`` bytes. Ports: ``wr`` (``addr``, ``data`` 8 bits, ``en``) and ``rd`` (``addr``,
    ``data``: the byte at the previous cycle's ``addr``), like ``lib.memory`` ports.

    A byte-wide :class:`~bitsnn.hw.wmem.WeightMemory` in SPRAM storage: SB_SPRAM256KA tiles on an
    iCE40 UltraPlus, a ``lib.memory`` powering up at zero elsewhere."""

    def __init__(self, depth: int):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self.depth = depth
        aw = range(max(2, depth))
        super().__init__({
            "wr": In(wiring.Signature({"addr": Out(aw), "data": Out(8), "en": Out(1)})),
            "rd": In(wiring.Signature({"addr": Out(aw), "data": In(8)})),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = WeightMemory(width=8, depth=self.depth, writable=True, storage="spram")
        m.d.comb += [mem.wr.addr.eq(self.wr.addr), mem.wr.data.eq(self.wr.data), mem.wr.en.eq(self.wr.en),
                     mem.rd.addr.eq(self.rd.addr), self.rd.data.eq(mem.rd.data)]
        return m
