"""A core's weight memory: block RAM initialised by the bitstream, optionally writable at run time,
or iCE40 UltraPlus SPRAM that the host fills over the UART.

``storage="bram"``: a ``lib.memory.Memory`` holding ``init`` (EBR on iCE40 and ECP5). With
``writable`` it also has a write port with byte enables, so WRITE_WEIGHTS can replace the weights
while the bitstream's values stay the power-on default.

``storage="spram"``: on an iCE40 UltraPlus (``platform.device`` ``iCE40UP*``) a grid of
``SB_SPRAM256KA`` (16 bits x 16 k words each; 16-bit columns side by side, 16 k-word blocks stacked).
SPRAM is not initialised by the bitstream: it must be written before use. Everywhere else
(simulation, Verilog export, ECP5) it is a ``lib.memory.Memory`` without ``init``, which powers up at
zero, so a test that forgets to load the weights fails. A SPRAM has one address: it takes the write
address while ``wr.en`` is non-zero and the read address otherwise; never read in a cycle you write.

Ports: ``rd`` (``addr``, ``data``: the word at the previous cycle's ``addr``) and, when writable,
``wr`` (``addr``, ``data`` the full padded width, ``en`` one enable per byte).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WeightMemory", "STORAGES", "SPRAM_BITS", "SPRAM_DEPTH", "has_spram"]

STORAGES = ("bram", "spram")
#: 16-bit words of one SB_SPRAM256KA
SPRAM_DEPTH = 16 * 1024
#: bits of one SB_SPRAM256KA
SPRAM_BITS = 16 * SPRAM_DEPTH


def has_spram(platform) -> bool:
    """True for an Amaranth iCE40 UltraPlus platform (the only iCE40s with SPRAM)."""
    dev = getattr(platform, "device", None)
    return isinstance(dev, str) and dev.upper().startswith("ICE40UP")


class WeightMemory(wiring.Component):
    """``depth`` words of ``width`` bits; see the module docstring.

    ``width_padded`` is ``width`` rounded up to whole bytes when writable (the write granularity).
    """

    def __init__(self, *, width: int, depth: int, init=(), writable: bool = False, storage: str = "bram"):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
        if storage == "spram" and not writable:
            raise ValueError("SPRAM is not initialised by the bitstream: a spram weight memory must be writable")
        self.width, self.depth, self.storage, self.writable = int(width), int(depth), storage, bool(writable)
        self.init = list(init) if storage == "bram" else []
        self.width_padded = -(-self.width // 8) * 8 if writable else self.width
        self.n_bytes = self.width_padded // 8
        aw = range(max(2, self.depth))
        ports = {"rd": In(wiring.Signature({"addr": Out(aw), "data": In(self.width)}))}
        if writable:
            ports["wr"] = In(wiring.Signature({"addr": Out(aw), "data": Out(self.width_padded),
                                               "en": Out(max(1, self.n_bytes))}))
        super().__init__(ports)

    def spram_blocks(self) -> tuple[int, int]:
        """(16-bit columns, 16 k-word rows) of SB_SPRAM256KA this memory takes on an iCE40 UltraPlus."""
        return -(-self.width_padded // 16), -(-self.depth // SPRAM_DEPTH)

    def elaborate(self, platform):
        m = Module()
        if self.storage == "spram" and has_spram(platform):
            return self._elaborate_spram(m)
        m.submodules.mem = mem = memory.Memory(shape=self.width_padded, depth=self.depth, init=self.init)
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd.addr), self.rd.data.eq(rp.data[:self.width])]
        if self.writable:
            wp = mem.write_port(granularity=8)
            m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en)]
        return m

    def _elaborate_spram(self, m):
        cols, rows = self.spram_blocks()
        writing = self.wr.en.any()
        addr = Signal(range(max(2, self.depth)))
        m.d.comb += addr.eq(Mux(writing, self.wr.addr, self.rd.addr))
        data = Cat(self.wr.data, Const(0, cols * 16 - self.width_padded))
        en = Cat(self.wr.en, Const(0, 2 * cols - self.n_bytes))  # one enable per byte lane
        row_r = Signal(range(max(2, rows)))
        m.d.sync += row_r.eq(addr >> 14)
        row_outs = []
        for r in range(rows):
            hit = (addr >> 14) == r if rows > 1 else Const(1)
            outs = []
            for c in range(cols):
                dout = Signal(16, name=f"spram{r}_{c}_out")
                lo, hi = en[2 * c], en[2 * c + 1]
                m.submodules[f"spram{r}_{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:14],
                    i_DATAIN=data[16 * c:16 * c + 16],
                    i_MASKWREN=Cat(lo, lo, hi, hi),  # one bit per nibble
                    i_WREN=(lo | hi) & hit,
                    i_CHIPSELECT=1,
                    i_CLOCK=ClockSignal(),
                    i_STANDBY=0,
                    i_SLEEP=0,
                    i_POWEROFF=1,
                    o_DATAOUT=dout,
                )
                outs.append(dout)
            row_outs.append(Cat(*outs))
        if rows > 1:
            with m.Switch(row_r):
                for r, word in enumerate(row_outs):
                    with m.Case(r):
                        m.d.comb += self.rd.data.eq(word[:self.width])
        else:
            m.d.comb += self.rd.data.eq(row_outs[0][:self.width])
        return m

