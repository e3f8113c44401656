"""The input buffer: the image's pixels, one per write, stored for the first layer stage.

What it keeps depends on the first layer (:class:`bitsnn.hwplan.HardwarePlan`):

- ``bitmap``: W-bit words of the input spike vector (event mode, or spike input in either mode):
  bit i is pixel i >= the model's input threshold (spike input) or pixel i != 0 (pixel input,
  event mode: an event per nonzero pixel). Read through ``words``.
- ``pixmem``: the 8-bit pixels themselves (pixel input): one per word in event mode, read
  through ``values`` by the cores that add +-x_i; W per word in dense mode, read through ``words``.

A convolution's image is stored in its padded map layout (:class:`bitsnn.hwplan.MapLayout`):
pixel (y, x) at address (y << wbits) | x.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwplan import HardwarePlan, ceil_log2

from .arith import field
from .ports import read_port, serve_memory

__all__ = ["InputBuffer"]


class InputBuffer(wiring.Component):
    """Stores one image for the first stage.

    Parameters: ``plan`` (the :class:`~bitsnn.hwplan.HardwarePlan`), ``input_threshold`` (spike
    input), ``pixels_in`` (the model takes 8-bit pixels), ``n_words`` and ``n_values``: how many
    readers of the word store and of the pixel values to serve.

    Ports: ``data`` In(8) and ``en`` In(1): write the next pixel (in order; the write after the
    last pixel starts the next image); ``last`` Out(1): the next write is the image's last pixel;
    ``words`` In(read_port(word_depth, word_width)) x n_words: the first stage's input vector
    (:attr:`word_width` is W, or 8W for pixels in dense mode); ``values`` In(read_port(n, 8)) x
    n_values: the pixels (event mode, pixel input).
    """

    def __init__(self, plan: HardwarePlan, *, input_threshold: int, pixels_in: bool, n_words: int = 1,
                 n_values: int = 0):
        self.plan, self.threshold, self.pixels_in = plan, int(input_threshold), bool(pixels_in)
        W = plan.word
        self.layout = plan.layers[0].input_layout  # a convolution's padded map layout, or None
        self.n_store = self.layout.size if self.layout else plan.n_inputs
        self.dense_pixels = plan.mode == "dense" and self.pixels_in
        self.word_depth = -(-self.n_store // W)
        self.word_width = 8 * W if self.dense_pixels else W
        super().__init__({
            "data": In(8),
            "en": In(1),
            "last": Out(1),
            "words": In(read_port(self.word_depth, self.word_width)).array(n_words),
            "values": In(read_port(self.n_store, 8)).array(n_values),
        })

    def elaborate(self, platform):
        m = Module()
        W, n0, lay = self.plan.word, self.plan.n_inputs, self.layout
        x, accept = self.data, self.en
        pi = Signal(range(max(2, n0)))
        m.d.comb += self.last.eq(pi == n0 - 1)
        wpos = Signal(range(max(2, W)))
        widx = Signal(range(max(2, self.word_depth)))
        paddr = None
        if lay is None:
            word_end = (wpos == W - 1) | self.last
        else:
            # pixel (y, x) goes to bit ((y << wbits) | x) of the store: rows padded to a power of two
            lw = ceil_log2(W)
            cx = Signal(range(max(2, lay.width)), name="pixel_x")
            cy = Signal(range(max(2, lay.height)), name="pixel_y")
            paddr = Signal(range(max(2, lay.size)), name="pixel_addr")
            nxt = Signal(len(paddr) + 1)
            m.d.comb += [paddr.eq(Cat(field(cx, lay.wbits), cy)),
                         nxt.eq(Mux(cx == lay.width - 1, Cat(field(Const(0, 1), lay.wbits), cy + 1), paddr + 1))]
            m.d.comb += [wpos.eq(paddr[:lw]), widx.eq(paddr >> lw)]
            word_end = self.last | ((nxt >> lw) != (paddr >> lw))
            with m.If(accept):
                with m.If(self.last):
                    m.d.sync += [cx.eq(0), cy.eq(0)]
                with m.Elif(cx == lay.width - 1):
                    m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.Else():
                    m.d.sync += cx.eq(cx + 1)
        with m.If(accept):
            with m.If(self.last):
                m.d.sync += pi.eq(0)
                if lay is None:
                    m.d.sync += [wpos.eq(0), widx.eq(0)]
            with m.Else():
                m.d.sync += pi.eq(pi + 1)
                if lay is None:
                    with m.If(wpos == W - 1):
                        m.d.sync += [wpos.eq(0), widx.eq(widx + 1)]
                    with m.Else():
                        m.d.sync += wpos.eq(wpos + 1)
        def word_store(name, item_bits, value):
            """A memory of W-item words, each assembled item by item (the word's first item clears
            the rest) and written when it is complete; it serves the ``words`` readers."""
            mem = memory.Memory(shape=item_bits * W, depth=self.word_depth, init=[])
            m.submodules[name] = mem
            wp = mem.write_port()
            cur, nxt = Signal(item_bits * W), Signal(item_bits * W)
            first = (wpos == 0).replicate(item_bits)
            m.d.comb += nxt.eq(Cat(*[~first & cur[item_bits * i:item_bits * (i + 1)] for i in range(W)]))
            m.d.comb += nxt.word_select(wpos, item_bits).eq(value)
            m.d.comb += [wp.addr.eq(widx), wp.data.eq(nxt), wp.en.eq(accept & word_end)]
            with m.If(accept):
                m.d.sync += cur.eq(nxt)
            for port in self.words:
                serve_memory(m, port, mem.read_port())

        if self.dense_pixels:  # W pixels per word, for DenseCore
            word_store("pixmem", 8, x)
        else:  # the spike vector: one bit per pixel
            word_store("bitmap", 1, (x != 0) if self.pixels_in else (x >= self.threshold))
        if self.pixels_in and not self.dense_pixels:  # the pixels, one per word, for the cores' values
            m.submodules.pixmem = pixmem = memory.Memory(shape=8, depth=self.n_store, init=[])
            pwp = pixmem.write_port()
            m.d.comb += [pwp.addr.eq(pi if lay is None else paddr), pwp.data.eq(x), pwp.en.eq(accept)]
            for port in self.values:
                serve_memory(m, port, pixmem.read_port())
        return m
