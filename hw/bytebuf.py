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

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ByteBuffer", "has_spram"]

SPRAM_DEPTH = 16 * 1024


def has_spram(platform) -> bool:
    """True for an Amaranth iCE40 UltraPlus platform (the only iCE40s with SPRAM)."""
    dev = getattr(platform, "device", None)
    return isinstance(dev, str) and dev.upper().startswith("ICE40UP")


class ByteBuffer(wiring.Component):
    """``depth`` bytes. Ports: ``wr`` (``addr``, ``data`` 8 bits, ``en``) and ``rd`` (``addr``,
    ``data``: the byte at the previous cycle's ``addr``), like ``lib.memory`` ports."""

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
        if not has_spram(platform):
            m.submodules.mem = mem = memory.Memory(shape=unsigned(8), depth=self.depth, init=[])
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en),
                         rp.addr.eq(self.rd.addr), self.rd.data.eq(rp.data)]
            return m
        n_blocks = -(-self.depth // SPRAM_DEPTH)
        addr = Signal(range(max(2, self.depth)))
        m.d.comb += addr.eq(Mux(self.wr.en, self.wr.addr, self.rd.addr))
        sel_r = Signal(range(max(2, n_blocks)))
        outs = []
        for b in range(n_blocks):
            dout = Signal(16, name=f"spram{b}_out")
            hit = (addr >> 14) == b if n_blocks > 1 else Const(1)
            m.submodules[f"spram{b}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=addr[:14],
                i_DATAIN=self.wr.data,
                i_MASKWREN=Const(0b1111, 4),
                i_WREN=self.wr.en & hit,
                i_CHIPSELECT=1,
                i_CLOCK=ClockSignal(),
                i_STANDBY=0,
                i_SLEEP=0,
                i_POWEROFF=1,
                o_DATAOUT=dout,
            )
            outs.append(dout)
        if n_blocks > 1:
            m.d.sync += sel_r.eq(addr >> 14)
            with m.Switch(sel_r):
                for b, dout in enumerate(outs):
                    with m.Case(b):
                        m.d.comb += self.rd.data.eq(dout[:8])
        else:
            m.d.comb += self.rd.data.eq(outs[0][:8])
        return m
