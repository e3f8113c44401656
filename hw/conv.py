"""The convolution stage: an event-driven binary convolution over a ring of k accumulator rows.

Arithmetic (docs/hardware-model.md): a[o, y', x'] = sum over (c, ky, kx) of
s[c, y'+ky-p, x'+kx-p] * w[o, c, ky, kx] (zero padding p = k // 2), spike = [a >= theta_o]
(compare +1) or [a <= theta_o] (compare -1), then an optional 2 x 2 OR pool.

Events arrive in the order a router scans a :class:`bitsnn.hwplan.MapLayout` store: row by row,
position by position, channel innermost. An input event at (c, y, x) touches output rows
y-p .. y+p only, so the core keeps accumulators for just k output rows (a ring, slot r mod k):
before an event of row y it *flushes* every output row r < y - p that is still open (no later
event can reach it), and after the vector's last beat it flushes the rest. Flushing row r reads
its W x G accumulator words in order, writes the spikes into the output store and writes each
word back to its start value. Every row is flushed exactly once per vector, whatever the input,
which is what makes the cycle count exact (:class:`bitsnn.hwplan.ConvPlan`).

Accumulators (as in :class:`~bitsnn.hw.core.EventCore`'s registers): channel o's holds
``c_o * (a - theta_o)``, starting at ``-c_o * theta_o`` with the weight bits of a compare -1
channel inverted, so the spike is the accumulator's sign bit being 0: no comparator, no
threshold memory. They live in a memory of ``kernel`` slots x W positions x G groups, P lanes
wide, read and written every cycle (a transparent read: an update of the word written in the
same cycle sees the new value).

The output store (the next stage's input, a :class:`~bitsnn.hwplan.MapLayout` of the pooled maps)
is written through ``out`` with a per-bit enable: the first contribution to a pooled position
(its top-left output position) writes the group's P bits, the other three OR theirs in by writing
only their ones. A pool drops the last row or column of an odd map, as torch's max_pool2d does.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwplan import ConvPlan, ceil_log2

from .arith import bits_to_int, field
from .ports import read_port
from .router import beat_layout, quiet_on_error

__all__ = ["ConvCore", "store_write_signature"]


def store_write_signature(depth: int, width: int) -> wiring.Signature:
    """A writer's side of a bit-enabled write port: word ``addr``, ``data``, one enable per bit."""
    return wiring.Signature({"addr": Out(range(max(2, depth))), "data": Out(width), "en": Out(width)})


class ConvCore(wiring.Component):
    """One ``binary_conv2d`` layer as a stage (see the module docstring).

    Parameters: ``layer`` (a :class:`bitsnn.hwmodel.ConvLayer`), ``plan`` (its
    :class:`bitsnn.hwplan.ConvPlan`: lanes, groups, layouts), ``word`` (the output store's word
    width, a power of two at least the lanes).

    Ports: ``start`` In(1), a pulse: a new input vector begins (its router starts in the same
    cycle); ``events`` In(stream of router beats, one event each); ``values`` Out(read_port) of
    the buffered pixels (pixel input only; always present); ``out`` Out(store write port) into
    the output store; ``done`` Out(1), high for one cycle: the cycle the last flush write happens.
    """

    @quiet_on_error
    def __init__(self, layer, plan: ConvPlan, *, word: int = 32):
        if layer.kind != "binary_conv2d" or layer.is_output:
            raise TypeError(f"ConvCore takes a hidden binary_conv2d layer, not {layer!r:.60}")
        if not isinstance(plan, ConvPlan):
            raise TypeError(f"plan must be a ConvPlan, not {plan!r:.60}")
        if word & (word - 1) or word < plan.lanes:
            raise ValueError(f"word must be a power of two of at least {plan.lanes} bits, not {word}")
        self.layer, self.plan, self.word = layer, plan, word
        self.k = layer.kernel
        self.in_layout, self.out_layout = plan.in_layout, plan.out_layout
        self.P, self.G = plan.lanes, plan.groups
        c_out = layer.channels
        # per output channel: weight flip (compare -1), start value, accumulator width
        cmp_ = np.asarray(layer.compare, np.int64)
        th = np.asarray(layer.thresholds, np.int64)
        self.flip = cmp_ < 0
        self.init = -cmp_ * th
        self.acc_bits = plan.acc_bits
        self.n_store_in = self.in_layout.size
        self.out_words = -(-self.out_layout.size // word)
        super().__init__({
            "start": In(1),
            "events": In(stream.Signature(beat_layout(max(1, ceil_log2(self.n_store_in)), 1))),
            "values": Out(read_port(self.n_store_in, 8)),
            "out": Out(store_write_signature(self.out_words, word)),
            "done": Out(1),
        })
        self.c_out = c_out

    def _lane_rows(self):
        """(weight memory rows, start-value words per group, live-lane mask per group)."""
        L, P, G, k = self.layer, self.P, self.G, self.k
        A = self.acc_bits
        wb = L.kernels_pm1() > 0  # (C_out, C_in, k, k) bool
        rows = []
        for c in range(L.in_shape[0]):
            for t in range(k * k):
                ky, kx = divmod(t, k)
                for g in range(G):
                    bits = [int(wb[o, c, ky, kx] ^ self.flip[o]) if o < L.channels else 0
                            for o in (g * P + j for j in range(P))]
                    rows.append(bits_to_int(bits))
        inits, live = [], []
        for g in range(G):
            v, mask = 0, 0
            for j in range(P):
                o = g * P + j
                start = int(self.init[o]) if o < L.channels else -1  # a padding lane never fires
                v |= (start & ((1 << A) - 1)) << (j * A)
                mask |= int(o < L.channels) << j
            inits.append(v)
            live.append(mask)
        return rows, inits, live

    def elaborate(self, platform):
        m = Module()
        L, P, G, k, A = self.layer, self.P, self.G, self.k, self.acc_bits
        kk = k * k
        pad = k // 2
        c_in, H, W = L.in_shape
        lin, lout = self.in_layout, self.out_layout
        gb, xb, sb = ceil_log2(G), ceil_log2(W), ceil_log2(k)
        q = L.pool

        rows, inits, live = self._lane_rows()
        m.submodules.wmem = wmem = memory.Memory(shape=P, depth=len(rows), init=rows)
        wrp = wmem.read_port()
        depth = self.plan.acc_words
        m.submodules.accmem = accmem = memory.Memory(
            shape=P * A, depth=depth, init=[inits[a & (G - 1)] if G > 1 else inits[0] for a in range(depth)])
        acc_wp = accmem.write_port()
        acc_rp = accmem.read_port(transparent_for=(acc_wp,))

        # ---- the current beat, decoded: channel, row, column fields of the store address
        beat = self.events.payload
        i = beat.addr[0]
        ev_c = i[:lin.cbits] if lin.cbits else Const(0, 1)
        ev_x = i[lin.cbits:lin.cbits + lin.wbits] if lin.wbits else Const(0, 1)
        ev_y = i[lin.cbits + lin.wbits:]
        m.d.comb += self.values.addr.eq(i)

        running = Signal()
        tail = Signal()          # the last beat has been taken: flush the remaining rows
        fr = Signal(range(H + 1))  # next output row to flush
        sfr = Signal(range(max(2, k)))  # its ring slot
        fx = Signal(range(max(2, W)))
        fg = Signal(range(max(2, G)))
        # the kernel tap (ky, kx) and group of the event being applied, and its weight-memory word
        # (kept as counters: no division by k, no multiplication on the address path)
        ky, kx = Signal(range(max(2, k))), Signal(range(max(2, k)))
        ug = Signal(range(max(2, G)))
        wa = Signal(range(max(2, c_in * kk * G)))
        mid_flush = Signal()
        mid_upd = Signal()
        m.d.comb += [mid_flush.eq((fx != 0) | (fg != 0)), mid_upd.eq((ky != 0) | (kx != 0) | (ug != 0))]

        with m.If(self.start):
            m.d.sync += [running.eq(1), tail.eq(0), fr.eq(0), sfr.eq(0)]

        has_event = Signal()
        m.d.comb += has_event.eq(self.events.valid & (beat.count != 0) & ~tail)
        row_done = Signal()  # the beat's event can no longer reach output row fr
        m.d.comb += row_done.eq(fr + pad < ev_y)
        do_flush, do_upd, do_skip = Signal(), Signal(), Signal()
        with m.If(running & ~mid_upd):
            with m.If(mid_flush | (has_event & row_done) | (tail & (fr < H))):
                m.d.comb += do_flush.eq(1)
            with m.Elif(self.events.valid & ~tail):
                with m.If(beat.count == 0):
                    m.d.comb += do_skip.eq(1)
                with m.Else():
                    m.d.comb += do_upd.eq(1)
        with m.If(running & mid_upd):
            m.d.comb += do_upd.eq(1)

        # ---- stage 0: addresses
        oy = Signal(signed(len(ev_y) + 2))  # output row and column the tap reaches
        ox = Signal(signed(max(2, len(ev_x)) + 2))
        m.d.comb += [oy.eq(ev_y + pad - ky), ox.eq(ev_x + pad - kx)]
        tap_ok = Signal()
        m.d.comb += tap_ok.eq((oy >= 0) & (oy < H) & (ox >= 0) & (ox < W))
        # ring slot of output row oy: oy mod k (fr's slot sfr is fr mod k too), as a table of
        # (ev_y, ky) rather than a subtraction and a modulo on the address path
        slot = Signal(range(max(2, k)))
        kb = len(ky)
        table = [((yy + pad - kyy) % k) for yy in range(1 << len(ev_y)) for kyy in range(1 << kb)]
        m.d.comb += slot.eq(Array([Const(v, len(slot)) for v in table])[Cat(ky, ev_y)])

        upd_addr = Cat(ug[:gb], ox[:xb], slot[:sb])
        fl_addr = Cat(fg[:gb], fx[:xb], sfr[:sb])
        m.d.comb += acc_rp.addr.eq(Mux(do_flush, fl_addr, upd_addr))
        w_first = Signal.like(wa)  # an event's first weight word: its channel's kernel, tap 0, group 0
        m.d.comb += w_first.eq(ev_c * (kk * G))
        m.d.comb += wrp.addr.eq(Mux(mid_upd, wa, w_first))

        # counters
        with m.If(do_flush):
            with m.If(fg == G - 1):
                m.d.sync += fg.eq(0)
                with m.If(fx == W - 1):
                    m.d.sync += [fx.eq(0), fr.eq(fr + 1), sfr.eq(Mux(sfr == k - 1, 0, sfr + 1))]
                with m.Else():
                    m.d.sync += fx.eq(fx + 1)
            with m.Else():
                m.d.sync += fg.eq(fg + 1)
        last_step = Signal()
        m.d.comb += last_step.eq((ky == k - 1) & (kx == k - 1) & (ug == G - 1))
        with m.If(do_upd):
            m.d.sync += wa.eq(Mux(last_step, 0, wrp.addr + 1))
            with m.If(ug == G - 1):
                m.d.sync += ug.eq(0)
                with m.If(kx == k - 1):
                    m.d.sync += [kx.eq(0), ky.eq(Mux(ky == k - 1, 0, ky + 1))]
                with m.Else():
                    m.d.sync += kx.eq(kx + 1)
            with m.Else():
                m.d.sync += ug.eq(ug + 1)
        take = Signal()
        m.d.comb += take.eq(do_skip | (do_upd & last_step))
        m.d.comb += self.events.ready.eq(take)
        with m.If(take & beat.last):
            m.d.sync += tail.eq(1)
        # done: the last flush was issued last cycle (its write happens now)
        with m.If(running & tail & (fr == H) & ~mid_flush):
            m.d.comb += self.done.eq(1)
            m.d.sync += running.eq(0)

        # ---- stage 1: read-modify-write, or flush into the output store
        s1_upd, s1_flush = Signal(), Signal()
        s1_addr = Signal.like(acc_wp.addr)
        s1_g = Signal.like(fg)
        s1_x = Signal.like(fx)
        s1_r = Signal.like(fr)
        m.d.sync += [s1_upd.eq(do_upd & tap_ok), s1_flush.eq(do_flush),
                     s1_addr.eq(acc_rp.addr), s1_g.eq(Mux(do_flush, fg, ug)), s1_x.eq(fx), s1_r.eq(fr)]
        if L.input_kind == "pixels":
            v = Signal(signed(10))
            m.d.comb += v.eq(self.values.data)
        else:
            v = Const(1, signed(2))
        lanes_acc = [acc_rp.data[j * A:(j + 1) * A].as_signed() for j in range(P)]
        new = Cat(*[(a + Mux(wrp.data[j], v, -v))[:A] for j, a in enumerate(lanes_acc)])
        init_word = Signal(P * A)
        live_mask = Signal(P)
        with m.Switch(s1_g):
            for g in range(G):
                with m.Case(g):
                    m.d.comb += [init_word.eq(inits[g]), live_mask.eq(live[g])]
        m.d.comb += acc_wp.addr.eq(s1_addr)
        with m.If(s1_upd):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(new)]
        with m.If(s1_flush):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(init_word)]

        spikes = Signal(P)
        m.d.comb += spikes.eq(Cat(*[~a[-1] for a in lanes_acc]) & live_mask)
        # the pooled position and where its group's bits sit in the output store
        py = s1_r >> (q - 1) if q > 1 else s1_r
        px = s1_x >> (q - 1) if q > 1 else s1_x
        bit = Signal(range(max(2, lout.size)))
        # channel g*P + j, P * G = 2**cbits: the group's first bit is g << log2(P)
        m.d.comb += bit.eq(Cat(field(Const(0, 1), ceil_log2(P)), field(s1_g, gb), field(px, lout.wbits), py))
        lw = ceil_log2(self.word)
        off = bit[:lw] if lw else Const(0, 1)
        first = Signal()  # the pooled position's first contribution: write the group, not OR
        dropped = Signal()
        if q > 1:
            m.d.comb += first.eq(~s1_r[0] & ~s1_x[0])
            m.d.comb += dropped.eq(((s1_r == H - 1) & (H % 2 == 1)) | ((s1_x == W - 1) & (W % 2 == 1)))
        else:
            m.d.comb += first.eq(1)
        with m.If(s1_flush & ~dropped):
            m.d.comb += [
                self.out.addr.eq(bit >> lw),
                self.out.data.eq(Mux(first, spikes, (1 << P) - 1) << off),
                self.out.en.eq(Mux(first, (1 << P) - 1, spikes) << off),
            ]
        return m
