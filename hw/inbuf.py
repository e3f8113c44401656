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
        pi = Signal(range(max(2, n0)))
        m.d.comb += self.last.eq(pi == n0 - 1)
        with m.If(accept):
            m.d.sync += pi.eq(Mux(self.last, 0, pi + 1))
        rate = plan.input_coding == "rate"
        if self.dense_pixels:  # W pixels per word, for DenseCore
            item_bits, value = 8, x
        elif rate:  # a pixel's T steps side by side (padded to a power of two)
            item_bits, value = 1 << lay.tbits, self._rate_bits(m, x, accept)
        else:  # the spike vector: one bit per input (given coding: one per input and step)
            item_bits = 1
            value = (x != 0) if self.pixels_in or plan.input_coding == "given" else (x >= self.threshold)
        per_word = W * (8 if self.dense_pixels else 1) // item_bits
        lw = ceil_log2(per_word)
        if lay is None:
            addr = nxt = None
            wpos = Signal(range(max(2, per_word)))
            widx = Signal(range(max(2, self.word_depth)))
            word_end = (wpos == per_word - 1) | self.last
            with m.If(accept):
                with m.If(self.last | (wpos == per_word - 1)):
                    m.d.sync += wpos.eq(0)
                with m.Else():
                    m.d.sync += wpos.eq(wpos + 1)
                with m.If(self.last):
                    m.d.sync += widx.eq(0)
                with m.Elif(wpos == per_word - 1):
                    m.d.sync += widx.eq(widx + 1)
        else:
            # the item of write j goes to address (fields of the counters, innermost first), rows and
            # each field padded to a power of two; the counters skip the padding
            if plan.input_coding == "given":
                dims = [("channel", lay.channels, lay.cbits), ("step", lay.steps, lay.tbits)]
            else:
                dims = []
            dims += [("pixel_x", lay.width, lay.wbits), ("pixel_y", lay.height, None)]
            addr, nxt = _count_through(m, dims, accept, self.last)
            wpos, widx = addr[:lw], addr >> lw
            word_end = self.last | ((nxt >> lw) != (addr >> lw))

        # a memory of words, each assembled item by item (the word's first item clears the rest)
        # and written when it is complete; it serves the ``words`` readers
        mem = memory.Memory(shape=item_bits * per_word, depth=self.word_depth, init=[])
        m.submodules["pixmem" if self.dense_pixels else "bitmap"] = mem
        wp = mem.write_port()
        cur, nxt_word = Signal(item_bits * per_word), Signal(item_bits * per_word)
        first = (wpos == 0).replicate(item_bits)
        m.d.comb += nxt_word.eq(Cat(*[~first & cur[item_bits * i:item_bits * (i + 1)] for i in range(per_word)]))
        m.d.comb += nxt_word.word_select(wpos, item_bits).eq(value)
        m.d.comb += [wp.addr.eq(widx), wp.data.eq(nxt_word), wp.en.eq(accept & word_end)]
        with m.If(accept):
            m.d.sync += cur.eq(nxt_word)
        for port in self.words:
            serve_memory(m, port, mem.read_port())

        if self.pixels_in and not self.dense_pixels:  # the pixels, one per word, for the cores' values
            m.submodules.pixmem = pixmem = memory.Memory(shape=8, depth=self.n_store, init=[])
            pwp = pixmem.write_port()
            m.d.comb += [pwp.addr.eq(pi if lay is None else addr), pwp.data.eq(x), pwp.en.eq(accept)]
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


def _count_through(m, dims, accept, last):
    """Counters over ``dims`` ((name, count, bits), innermost first; the outermost's bits None:
    unpadded), advanced at each ``accept`` and cleared after the ``last`` write: (the address now,
    the address of the next write), each the counters' fields side by side."""
    dims = [d for d in dims[:-1] if d[1] > 1] + dims[-1:]
    ctrs = [Signal(range(max(2, n)), name=name) for name, n, _b in dims]
    carry, nxt = Const(1, 1), []
    for j, (ctr, (_name, n, _b)) in enumerate(zip(ctrs, dims)):
        step = ctr + 1 if j == len(dims) - 1 else Mux(ctr == n - 1, 0, ctr + 1)
        nxt.append(Mux(carry, step, ctr))
        carry = carry & (ctr == n - 1)
    with m.If(accept):
        for ctr, v in zip(ctrs, nxt):
            m.d.sync += ctr.eq(Mux(last, 0, v))

    def address(values):
        return Cat(*[field(v, b) for v, (_n, _c, b) in zip(values[:-1], dims[:-1])], values[-1])

    return address(ctrs), address(nxt)
