"""The input buffer: the image's pixels (or a given input's spikes), one per write, stored for the
first layer stage.

What it keeps depends on the first layer (:class:`bitsnn.hwplan.HardwarePlan`):

- ``bitmap``: W-bit words of the input spike vector (event mode, or spike input in either mode):
  bit i is pixel i >= the model's input threshold (spike input) or pixel i != 0 (pixel input,
  event mode: an event per nonzero pixel). Read through ``words``.
- ``pixmem``: the 8-bit pixels themselves (pixel input): one per word in event mode, read
  through ``values`` by the cores that add +-x_i; W per word in dense mode, read through ``words``.

A convolution's image is stored in its padded map layout (:class:`bitsnn.hwplan.MapLayout`):
pixel (y, x) at address (y << wbits) | x.

Over T steps of ``rate`` or ``given`` input the bitmap holds T maps (:func:`bitsnn.hwplan.input_layout`:
each input's steps side by side). ``given``: the writes are every step's spikes in the store's
order (:func:`bitsnn.hwplan.stream_inputs`), bit = value != 0. ``rate``: the writes are the pixels;
one xorshift32 generator per step, started at :func:`bitsnn.hwmodel.rate_start_states`, advances
at each pixel, and the pixel's T bits [pixel > the generator's low byte] go in at once, so the
load takes no extra cycle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwmodel import rate_start_states
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
        self.layout = plan.layers[0].input_layout  # a map layout (a convolution's, or T steps), or None
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
        plan, lay = self.plan, self.layout
        W, n0 = plan.word, plan.input_values
        x, accept = self.data, self.en
        rate = plan.input_coding == "rate"
        # a rate pixel's T steps go in side by side as one item; anything else is one bit (or pixel)
        item_bits = 1 << lay.tbits if rate else 1
        per_word = W // item_bits
        pi = Signal(range(max(2, n0)))
        m.d.comb += self.last.eq(pi == n0 - 1)
        wpos = Signal(range(max(2, per_word)))
        widx = Signal(range(max(2, self.word_depth)))
        paddr = None
        if lay is None:
            word_end = (wpos == W - 1) | self.last
        else:
            # item j goes to address (its counters' fields side by side, innermost first): pixel
            # (y, x) to ((y << wbits) | x); given spikes to (((y << wbits | x) << tbits | t) << cbits | c)
            lw = ceil_log2(per_word)
            dims = ([("channel", lay.channels, lay.cbits), ("step", lay.steps, lay.tbits)]
                    if plan.input_coding == "given" else [])
            dims = [d for d in dims if d[1] > 1] + [("pixel_x", lay.width, lay.wbits), ("pixel_y", lay.height, 0)]
            ctrs = [Signal(range(max(2, n)), name=name) for name, n, _b in dims]
            paddr = Signal(range(max(2, lay.size // item_bits)), name="pixel_addr")
            nxt = Signal(len(paddr) + 1)
            m.d.comb += [paddr.eq(Cat(*[field(c, b) for c, (_n, _c, b) in zip(ctrs[:-1], dims[:-1])], ctrs[-1])),
                         nxt.eq(_next_address(ctrs, dims, paddr))]
            m.d.comb += [wpos.eq(paddr[:lw]), widx.eq(paddr >> lw)]
            word_end = self.last | ((nxt >> lw) != (paddr >> lw))
            with m.If(accept):
                with m.If(self.last):
                    m.d.sync += [c.eq(0) for c in ctrs]
                for j in reversed(range(len(ctrs) - 1)):  # counters 0..j wrap: counter j + 1 steps
                    with m.Elif(_wraps(ctrs, dims, j)):
                        m.d.sync += [c.eq(0) for c in ctrs[:j + 1]] + [ctrs[j + 1].eq(ctrs[j + 1] + 1)]
                with m.Else():
                    m.d.sync += ctrs[0].eq(ctrs[0] + 1)
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
        def word_store(name, item_bits, value, per_word=W):
            """A memory of ``per_word``-item words, each assembled item by item (the word's first
            item clears the rest) and written when it is complete; it serves the ``words`` readers."""
            mem = memory.Memory(shape=item_bits * per_word, depth=self.word_depth, init=[])
            m.submodules[name] = mem
            wp = mem.write_port()
            cur, nxt = Signal(item_bits * per_word), Signal(item_bits * per_word)
            first = (wpos == 0).replicate(item_bits)
            m.d.comb += nxt.eq(Cat(*[~first & cur[item_bits * i:item_bits * (i + 1)] for i in range(per_word)]))
            m.d.comb += nxt.word_select(wpos, item_bits).eq(value)
            m.d.comb += [wp.addr.eq(widx), wp.data.eq(nxt), wp.en.eq(accept & word_end)]
            with m.If(accept):
                m.d.sync += cur.eq(nxt)
            for port in self.words:
                serve_memory(m, port, mem.read_port())

        if self.dense_pixels:  # W pixels per word, for DenseCore
            word_store("pixmem", 8, x)
        elif rate:  # each pixel's T spikes from the generators
            word_store("bitmap", item_bits, self._rate_bits(m, x, accept), per_word)
        else:  # the spike vector: one bit per pixel (given coding: per input and step)
            word_store("bitmap", 1, (x != 0) if self.pixels_in or plan.input_coding == "given" else (x >= self.threshold))
        if self.pixels_in and not self.dense_pixels:  # the pixels, one per word, for the cores' values
            m.submodules.pixmem = pixmem = memory.Memory(shape=8, depth=self.n_store, init=[])
            pwp = pixmem.write_port()
            m.d.comb += [pwp.addr.eq(pi if lay is None else paddr), pwp.data.eq(x), pwp.en.eq(accept)]
            for port in self.values:
                serve_memory(m, port, pixmem.read_port())
        return m

    def _rate_bits(self, m, x, accept):
        """``rate`` coding: the pixel's spike at each step, [x > low byte of step t's generator
        after its advance]; every generator advances at each pixel and starts again after the last."""
        plan = self.plan
        bits = []
        for t, s0 in enumerate(rate_start_states(plan.input_seed, plan.steps, plan.n_inputs)):
            s = Signal(32, init=s0, name=f"rate_state{t}")
            a, b, c = Signal(32), Signal(32), Signal(32)
            m.d.comb += [a.eq(s ^ (s << 13)[:32]), b.eq(a ^ (a >> 17)), c.eq(b ^ (b << 5)[:32])]
            with m.If(accept):
                m.d.sync += s.eq(Mux(self.last, s0, c))
            bits.append(x > c[:8])
        return Cat(*bits)


def _wraps(ctrs, dims, j):
    """Whether counters 0..j are all at their last value."""
    w = ctrs[0] == dims[0][1] - 1
    for c, (_name, n, _b) in zip(ctrs[1:j + 1], dims[1:j + 1]):
        w = w & (c == n - 1)
    return w


def _next_address(ctrs, dims, addr, j=0):
    """The address of the next write: ``addr`` + 1 while counter ``j`` steps, else (it wraps) the
    one with counters 0..j at 0 and the next one stepped (the fields are padded, so that is the
    address's higher fields plus one)."""
    low = Const(0, 1)
    if j == len(ctrs) - 1:
        return Cat(field(low, sum(b for _n, _c, b in dims[:j])), ctrs[j] + 1)
    step = addr + 1 if j == 0 else Cat(field(low, sum(b for _n, _c, b in dims[:j])), field(ctrs[j] + 1, dims[j][2]),
                                       *[field(c, b) for c, (_n, _c, b) in zip(ctrs[j + 1:-1], dims[j + 1:-1])],
                                       ctrs[-1])
    return Mux(ctrs[j] == dims[j][1] - 1, _next_address(ctrs, dims, addr, j + 1), step)
