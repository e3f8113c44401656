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

Over time (:attr:`bitsnn.hwplan.ConvPlan.timed`) the accumulators start at 0 (or at the biases,
:attr:`~bitsnn.hwplan.ConvPlan.bias_in_acc`) and hold c_o * a. For an input that is the same at
every step, a flushed word is held for T cycles, one a step, and its last cycle resets it. For
T input maps (:attr:`~bitsnn.hwplan.ConvPlan.banks`) each step has a bank of accumulators, the
lowest field of the word address: an event at step t adds into bank t, and the flush reads (and
resets) the word's T banks in turn. Either way the neurons' membrane lanes
(:class:`bitsnn.hw.neuron.MembraneLanes`) run the position's T steps and write each step's
spikes into that step's map of the output store. Events come position by position, each
position's steps together, so the rows close in order as at one step.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitsnn import kinds
from bitsnn.hwplan import ConvPlan, ceil_log2

from .arith import bits_to_int, field, ints_to_word, lane_term, popcount
from .neuron import MembraneLanes
from .ports import read_port
from .router import beat_layout, quiet_on_error

__all__ = ["ConvCore", "WindowCore", "store_write_signature", "write_pooled"]


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
        if not kinds.of(layer).output_is_map or layer.is_output:
            raise TypeError(f"ConvCore takes a hidden convolution, not {layer!r:.60}")
        if not isinstance(plan, ConvPlan):
            raise TypeError(f"plan must be a ConvPlan, not {plan!r:.60}")
        if plan.in_layout.signs > 1:
            raise TypeError("ConvCore takes unsigned spike maps or pixels, not signed spikes")
        if word & (word - 1) or word < plan.lanes:
            raise ValueError(f"word must be a power of two of at least {plan.lanes} bits, not {word}")
        self.layer, self.plan, self.word = layer, plan, word
        self.k = layer.kernel
        self.in_layout, self.out_layout = plan.in_layout, plan.out_layout
        self.P, self.G = plan.lanes, plan.groups
        c_out = layer.channels
        self.acc_bits = plan.acc_bits
        # per group: start values and live lanes; per output channel: weight flip (compare -1)
        self.inits, self.live, self.flip = _start_values(layer, self.P, self.G, self.acc_bits, plan.timed,
                                                         plan.bias_in_acc)
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
        wk = L.kernels_int()  # (C_out, C_in, k, k)
        rows = []
        for c in range(L.in_shape[0]):
            for t in range(k * k):
                ky, kx = divmod(t, k)
                for g in range(G):
                    chans = [g * P + j for j in range(P)]
                    if L.bits == 1:
                        rows.append(bits_to_int([int((wk[o, c, ky, kx] > 0) ^ self.flip[o]) if o < L.channels else 0
                                                 for o in chans]))
                    else:  # a compare -1 channel's weights negated; a padding lane's 0
                        rows.append(ints_to_word([(-1 if self.flip[o] else 1) * int(wk[o, c, ky, kx])
                                                  if o < L.channels else 0 for o in chans], L.bits))
        return rows, self.inits, self.live

    def elaborate(self, platform):
        m = Module()
        L, P, G, k, A = self.layer, self.P, self.G, self.k, self.acc_bits
        kk = k * k
        pad = k // 2
        c_in, H, W = L.in_shape
        lin, lout = self.in_layout, self.out_layout
        gb, xb, sb = ceil_log2(G), ceil_log2(W), ceil_log2(k)

        rows, inits, live = self._lane_rows()
        m.submodules.wmem = wmem = memory.Memory(shape=P * L.bits, depth=len(rows), init=rows)
        wrp = wmem.read_port()
        depth = self.plan.acc_words
        B = self.plan.banks  # T accumulator banks for T input maps (the bank is the lowest address field)
        bb = ceil_log2(B)
        m.submodules.accmem = accmem = memory.Memory(
            shape=P * A, depth=depth, init=[inits[(a >> bb) & (G - 1)] if G > 1 else inits[0] for a in range(depth)])
        acc_wp = accmem.write_port()
        acc_rp = accmem.read_port(transparent_for=(acc_wp,))

        # ---- the current beat, decoded: channel, row, column fields of the store address
        beat = self.events.payload
        i = beat.addr[0]
        ev_c = i[:lin.cbits] if lin.cbits else Const(0, 1)
        tb = lin.tbits  # the input map's step field (T input maps), between the channel and the column
        ev_t = i[lin.cbits:lin.cbits + tb]
        xo = lin.cbits + tb
        ev_x = i[xo:xo + lin.wbits] if lin.wbits else Const(0, 1)
        ev_y = i[xo + lin.wbits:]
        m.d.comb += self.values.addr.eq(i)

        running = Signal()
        tail = Signal()          # the last beat has been taken: flush the remaining rows
        fr = Signal(range(H + 1))  # next output row to flush
        frp = Signal(range(H + 1 + pad))  # fr + pad, kept as a register: no adder before row_done's compare
        sfr = Signal(range(max(2, k)))  # its ring slot
        fx = Signal(range(max(2, W)))
        fg = Signal(range(max(2, G)))
        # the kernel tap (ky, kx) and group of the event being applied, and its weight-memory word
        # (kept as counters: no division by k, no multiplication on the address path)
        ky, kx = Signal(range(max(2, k))), Signal(range(max(2, k)))
        ug = Signal(range(max(2, G)))
        wa = Signal(range(max(2, c_in * kk * G)))
        T = self.plan.steps
        ft = Signal(range(T)) if T > 1 else None  # the step of the word being flushed (over T steps)
        mid_flush = Signal()
        mid_upd = Signal()
        if T > 1:
            m.d.comb += [mid_flush.eq((fx != 0) | (fg != 0) | (ft != 0)), mid_upd.eq((ky != 0) | (kx != 0) | (ug != 0))]
        else:
            m.d.comb += [mid_flush.eq((fx != 0) | (fg != 0)), mid_upd.eq((ky != 0) | (kx != 0) | (ug != 0))]

        with m.If(self.start):
            m.d.sync += [running.eq(1), tail.eq(0), fr.eq(0), frp.eq(pad), sfr.eq(0)]

        has_event = Signal()
        m.d.comb += has_event.eq(self.events.valid & (beat.count != 0) & ~tail)
        row_done = Signal()  # the beat's event can no longer reach output row fr
        m.d.comb += row_done.eq(frp < ev_y)
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

        if B > 1:  # the event's step picks its bank; the flush reads the word's banks in turn
            upd_addr = Cat(ev_t[:bb], ug[:gb], ox[:xb], slot[:sb])
            fl_addr = Cat(ft[:bb], fg[:gb], fx[:xb], sfr[:sb])
        else:
            upd_addr = Cat(ug[:gb], ox[:xb], slot[:sb])
            fl_addr = Cat(fg[:gb], fx[:xb], sfr[:sb])
        m.d.comb += acc_rp.addr.eq(Mux(do_flush, fl_addr, upd_addr))
        w_first = Signal.like(wa)  # an event's first weight word: its channel's kernel, tap 0, group 0
        m.d.comb += w_first.eq(ev_c * (kk * G))
        m.d.comb += wrp.addr.eq(Mux(mid_upd, wa, w_first))

        # counters (over T steps each flushed word is held for T cycles)
        advance = do_flush
        if T > 1:
            advance = Signal()
            m.d.comb += advance.eq(do_flush & (ft == T - 1))
            with m.If(do_flush):
                m.d.sync += ft.eq(Mux(ft == T - 1, 0, ft + 1))
        with m.If(advance):
            with m.If(fg == G - 1):
                m.d.sync += fg.eq(0)
                with m.If(fx == W - 1):
                    m.d.sync += [fx.eq(0), fr.eq(fr + 1), frp.eq(frp + 1), sfr.eq(Mux(sfr == k - 1, 0, sfr + 1))]
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
        s1_t = Signal(range(T)) if T > 1 else None
        m.d.sync += [s1_upd.eq(do_upd & tap_ok), s1_flush.eq(do_flush),
                     s1_addr.eq(acc_rp.addr), s1_g.eq(Mux(do_flush, fg, ug)), s1_x.eq(fx), s1_r.eq(fr)]
        if T > 1:
            m.d.sync += s1_t.eq(ft)
        if L.input_kind == "pixels":
            v = Signal(signed(10))
            m.d.comb += v.eq(self.values.data)
        else:
            v = Const(1, signed(2))
        lanes_acc = [acc_rp.data[j * A:(j + 1) * A].as_signed() for j in range(P)]
        new = Cat(*[(a + lane_term(wrp.data, j, L.bits, v))[:A] for j, a in enumerate(lanes_acc)])
        init_word = Signal(P * A)
        live_mask = Signal(P)
        with m.Switch(s1_g):
            for g in range(G):
                with m.Case(g):
                    m.d.comb += [init_word.eq(inits[g]), live_mask.eq(live[g])]
        m.d.comb += acc_wp.addr.eq(s1_addr)
        with m.If(s1_upd):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(new)]
        # the flushed word is reset: at its last step (one bank), or each bank as it is read
        with m.If(s1_flush if T == 1 or B > 1 else s1_flush & (s1_t == T - 1)):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(init_word)]

        spikes = Signal(P)
        if self.plan.timed:  # the membrane lanes, one step a cycle
            lanes = MembraneLanes(L, P, G, self.plan.membrane_bits, bias_in_acc=self.plan.bias_in_acc).build(
                m, lanes_acc, s1_g, Const(1, 1) if T == 1 else s1_t == 0, s1_flush)
            m.d.comb += spikes.eq(Cat(*lanes) & live_mask)
        else:  # the accumulator holds c_o * (a - theta_o): its sign
            m.d.comb += spikes.eq(Cat(*[~a[-1] for a in lanes_acc]) & live_mask)
        write_pooled(m, self.out, L, lout, P, G, self.word, spikes, s1_flush, s1_r, s1_x, s1_g, s1_t)
        return m



class WindowCore(wiring.Component):
    """One ``binary_conv2d`` layer of spike maps as a sliding-window stage.

    Output positions in store order (row by row, position by position), each lane group in turn,
    each kernel tap (ky, kx) in turn: one tap a cycle. A tap reads the input store word holding
    the C_in channels s of input position (y + ky - p, x + kx - p) (zero outside the map); lane j
    adds 2 * popcount(s AND w_j) to its accumulator register and one shared counter n adds
    popcount(s), so lane j's sum of s * (+-1) is acc_j - n without a subtraction on the adders'
    path. w_j is the tap's kernel of channel g*P + j (inverted for a compare -1 channel). The word
    is read, its C_in bits picked out and registered (the tap's weights looked up from the table
    and registered beside them), and added, in three pipelined cycles.
    acc_j starts at -c_o * theta_o, as in :class:`ConvCore`, so after the last tap the sign of
    acc_j - n is the spike, written into the output store (OR pool: :func:`write_pooled`) the next
    cycle. The cycle count is the same for every input
    (:meth:`bitsnn.hwplan.ConvPlan.window_stage_cycles`).

    Ports: ``start`` In(1), a pulse: the input store is ready; ``src`` Out(read_port) of the input
    store; ``out`` Out(store write port); ``done`` Out(1), high the cycle the last spikes are
    written; ``seen`` Out: the input spikes of this vector (each input position's channels are
    counted once, at the centre tap of the output position at the same place, group 0).
    """

    @quiet_on_error
    def __init__(self, layer, plan: ConvPlan, *, word: int = 32):
        if not kinds.of(layer).output_is_map or layer.bits != 1 or layer.is_output:
            raise TypeError(f"WindowCore takes a hidden convolution with +-1 kernels, not {layer!r:.60}")
        if not isinstance(plan, ConvPlan) or plan.engine != "window":
            raise TypeError(f"plan must be a window ConvPlan, not {plan!r:.60}")
        if word & (word - 1) or word < plan.lanes or plan.in_channels_padded > word:
            raise ValueError(f"word must be a power of two of at least {max(plan.lanes, plan.in_channels_padded)} "
                             f"bits, not {word}")
        self.layer, self.plan, self.word = layer, plan, word
        self.k, self.P, self.G, self.acc_bits = layer.kernel, plan.lanes, plan.groups, plan.acc_bits
        self.in_layout, self.out_layout = plan.in_layout, plan.out_layout
        self.Cp = plan.in_channels_padded
        self.inits, self.live, self.flip = _start_values(layer, self.P, self.G, self.acc_bits, plan.timed)
        self.in_words = -(-self.in_layout.size // word)
        self.out_words = -(-self.out_layout.size // word)
        super().__init__({
            "start": In(1),
            "src": Out(read_port(self.in_words, word)),
            "out": Out(store_write_signature(self.out_words, word)),
            "done": Out(1),
            "seen": Out(range(self.in_layout.size + 1)),
        })

    def weight_rows(self) -> list[int]:
        """The weight table: row g * k*k + t holds tap t's weights of group g, lane j's C_in-padded
        bits at j * Cp (compare -1 channels inverted, padding channels and lanes 0)."""
        L, P, G, k, Cp = self.layer, self.P, self.G, self.k, self.Cp
        wb = L.kernels_pm1() > 0  # (C_out, C_in, k, k)
        c_in = L.in_shape[0]
        rows = []
        for g in range(G):
            for t in range(k * k):
                ky, kx = divmod(t, k)
                bits = np.zeros(P * Cp, np.uint8)
                for j in range(P):
                    o = g * P + j
                    if o < L.channels:
                        bits[j * Cp:j * Cp + c_in] = wb[o, :, ky, kx] ^ self.flip[o]
                rows.append(bits_to_int(bits))
        return rows

    def elaborate(self, platform):
        m = Module()
        L, P, G, k, A, Cp, W = self.layer, self.P, self.G, self.k, self.acc_bits, self.Cp, self.word
        kk, pad = k * k, k // 2
        _c, H, Wd = L.in_shape
        lin = self.in_layout
        lw, cb = ceil_log2(W), lin.cbits

        # ---- issue: output position (y, x), group g, step t (timed), tap (ky, kx); wa = g * k*k + tap
        T = self.plan.steps
        running = Signal()
        y, x = Signal(range(max(2, H))), Signal(range(max(2, Wd)), name="x")
        g = Signal(range(max(2, G)), name="g")
        t = Signal(range(T)) if T > 1 else None
        ky, kx = Signal(range(max(2, k))), Signal(range(max(2, k)))
        wa = Signal(range(max(2, G * kk)))
        last_tap = Signal()
        m.d.comb += last_tap.eq((ky == k - 1) & (kx == k - 1))
        last_pos = Signal()
        if T > 1:
            m.d.comb += last_pos.eq(last_tap & (t == T - 1) & (g == G - 1) & (x == Wd - 1) & (y == H - 1))
        else:
            m.d.comb += last_pos.eq(last_tap & (g == G - 1) & (x == Wd - 1) & (y == H - 1))

        def next_group():  # the next lane group, or after the last the next position
            with m.If(g == G - 1):
                m.d.sync += g.eq(0)
                with m.If(x == Wd - 1):
                    m.d.sync += [x.eq(0), y.eq(y + 1)]
                with m.Else():
                    m.d.sync += x.eq(x + 1)
            with m.Else():
                m.d.sync += g.eq(g + 1)

        with m.If(self.start):
            m.d.sync += [running.eq(1), y.eq(0), x.eq(0), g.eq(0), ky.eq(0), kx.eq(0), wa.eq(0)]
            if T > 1:
                m.d.sync += t.eq(0)
        with m.Elif(running):
            with m.If(kx == k - 1):
                m.d.sync += kx.eq(0)
                with m.If(ky == k - 1):
                    m.d.sync += ky.eq(0)
                    if T > 1:  # the position's next step; after its last, the next group
                        m.d.sync += t.eq(Mux(t == T - 1, 0, t + 1))
                        with m.If(t == T - 1):
                            next_group()
                    else:
                        next_group()
                with m.Else():
                    m.d.sync += ky.eq(ky + 1)
            with m.Else():
                m.d.sync += kx.eq(kx + 1)
            if T > 1:
                with m.If(last_tap & (t != T - 1)):  # the same group's taps again, at the next step
                    m.d.sync += wa.eq(wa - (kk - 1))
                with m.Else():
                    m.d.sync += wa.eq(Mux(wa == G * kk - 1, 0, wa + 1))
            else:
                m.d.sync += wa.eq(Mux(wa == G * kk - 1, 0, wa + 1))
            with m.If(last_pos):
                m.d.sync += running.eq(0)

        iy = Signal(signed(len(y) + 2))
        ix = Signal(signed(len(x) + 2))
        m.d.comb += [iy.eq(y + ky - pad), ix.eq(x + kx - pad)]
        inside = Signal()
        m.d.comb += inside.eq((iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd))
        bit = Signal(range(max(2, lin.size)))  # the tap's first channel bit in the input store
        if lin.tbits:  # step t's input maps
            m.d.comb += bit.eq(Cat(field(Const(0, 1), cb), field(t, lin.tbits), field(ix, lin.wbits),
                                   iy[:max(1, len(iy) - 2)]))
        else:
            m.d.comb += bit.eq(Cat(field(Const(0, 1), cb), field(ix, lin.wbits), iy[:max(1, len(iy) - 2)]))
        m.d.comb += self.src.addr.eq(bit >> lw)

        # ---- select: the tap's word arrives; its C_in channels, zero outside the map, registered
        b_valid, b_in, b_first, b_last, b_centre = Signal(), Signal(), Signal(), Signal(), Signal()
        b_slot = Signal(max(1, lw - cb))
        b_y, b_x, b_g, b_wa = Signal.like(y), Signal.like(x), Signal.like(g), Signal.like(wa)
        m.d.sync += [b_valid.eq(running), b_wa.eq(wa), b_in.eq(inside), b_first.eq((ky == 0) & (kx == 0)),
                     b_last.eq(last_tap), b_centre.eq((ky == pad) & (kx == pad) & (g == 0)),
                     b_y.eq(y), b_x.eq(x), b_g.eq(g)]
        # the step rides along the pipeline (timed)
        b_t, s_t, c_t = (Signal.like(t), Signal.like(t), Signal.like(t)) if T > 1 else (t, t, t)
        if T > 1:
            m.d.sync += b_t.eq(t)
        if lw > cb:
            m.d.sync += b_slot.eq(bit[cb:lw])
        s = Signal(Cp)
        s_valid, s_first, s_last, s_centre = Signal(), Signal(), Signal(), Signal()
        s_y, s_x, s_g = Signal.like(y), Signal.like(x), Signal.like(g)
        word_bits = self.src.data.word_select(b_slot, Cp) if lw > cb else self.src.data[:Cp]
        m.d.sync += [s.eq(Mux(b_in, word_bits, 0)), s_valid.eq(b_valid), s_first.eq(b_first), s_last.eq(b_last),
                     s_centre.eq(b_centre), s_y.eq(b_y), s_x.eq(b_x), s_g.eq(b_g)]
        if T > 1:
            m.d.sync += s_t.eq(b_t)

        # ---- accumulate: lane j adds 2 * popcount(s AND w_j), a shared counter n adds popcount(s);
        # lane j's sum is acc_j - n (kept apart so that no subtraction sits on the adders' path)
        # the weights as logic, looked up from the tap number while the word is selected and
        # registered beside it (no table on the adders' path): G*k*k rows of P*C bits are few and
        # wide, which block RAM (at most 16 or 36 bits wide) holds badly
        wrow = Signal(P * Cp)
        with m.Switch(b_wa):
            for r, v in enumerate(self.weight_rows()):
                with m.Case(r):
                    m.d.sync += wrow.eq(v)
        ns = Signal(range(Cp + 1))
        m.d.comb += ns.eq(popcount(s))
        with m.If(self.start):
            m.d.sync += self.seen.eq(0)
        with m.Elif(s_valid & s_centre):
            m.d.sync += self.seen.eq(self.seen + ns)
        init_word = Signal(P * A)
        live_mask = Signal(P)
        with m.Switch(s_g):
            for gg in range(G):
                with m.Case(gg):
                    m.d.comb += [init_word.eq(self.inits[gg]), live_mask.eq(self.live[gg])]
        # acc_j runs from c*(-theta) up by at most 2R, n up to R: one bit more than the sum's width
        accs = [Signal(signed(A + 1), name=f"acc{j}") for j in range(P)]
        n = Signal(range(self.layer.fan_in + 1))
        with m.If(s_valid):
            m.d.sync += n.eq(Mux(s_first, 0, n) + ns)
            for j, acc in enumerate(accs):
                base = Mux(s_first, init_word[j * A:(j + 1) * A].as_signed(), acc)
                m.d.sync += acc.eq(base + (popcount(s & wrow[j * Cp:(j + 1) * Cp]) << 1))

        # ---- write: the position's spikes (its accumulators after the last tap)
        c_valid = Signal()
        c_y, c_x, c_g = Signal.like(y), Signal.like(x), Signal.like(g)
        c_live = Signal(P)
        m.d.sync += [c_valid.eq(s_valid & s_last), c_y.eq(s_y), c_x.eq(s_x), c_g.eq(s_g), c_live.eq(live_mask)]
        if T > 1:
            m.d.sync += c_t.eq(s_t)
        spikes = Signal(P)
        if self.plan.timed:  # acc_j - n = c_o * a: the membrane lanes, a step of this position
            sums = [Signal(signed(A + 1), name=f"sum{j}") for j in range(P)]
            m.d.comb += [sm.eq(acc - n) for sm, acc in zip(sums, accs)]
            lanes = MembraneLanes(L, P, G, self.plan.membrane_bits).build(m, sums, c_g, Const(1, 1) if T == 1 else c_t == 0,
                                                                          c_valid)
            m.d.comb += spikes.eq(Cat(*lanes) & c_live)
        else:
            m.d.comb += spikes.eq(Cat(*[~(acc - n)[-1] for acc in accs]) & c_live)
        write_pooled(m, self.out, L, self.out_layout, P, G, W, spikes, c_valid, c_y, c_x, c_g, c_t)
        if T > 1:
            m.d.comb += self.done.eq(c_valid & (c_t == T - 1) & (c_y == H - 1) & (c_x == Wd - 1) & (c_g == G - 1))
        else:
            m.d.comb += self.done.eq(c_valid & (c_y == H - 1) & (c_x == Wd - 1) & (c_g == G - 1))
        return m


def _start_values(layer, P: int, G: int, A: int, timed: bool = False, bias: bool = False):
    """Per group: the P accumulators' start values (c_o * -theta_o; in a ``timed`` stage 0, or
    the bias b_o with ``bias``; -1 in a padding lane, which never fires) as one P*A-bit word, and
    the live-lane mask; and per channel the weight flip (compare -1)."""
    cmp_ = np.asarray(layer.compare, np.int64)
    if bias:
        init = np.asarray(layer.bias, np.int64)
    else:
        init = -cmp_ * np.asarray(layer.thresholds, np.int64) * (not timed)
    inits, live = [], []
    for g in range(G):
        v, mask = 0, 0
        for j in range(P):
            o = g * P + j
            start = int(init[o]) if o < layer.channels else -1
            v |= (start & ((1 << A) - 1)) << (j * A)
            mask |= int(o < layer.channels) << j
        inits.append(v)
        live.append(mask)
    return inits, live, cmp_ < 0


def write_pooled(m, out, layer, lout, P: int, G: int, word: int, spikes, en, r, x, g, t=None) -> None:
    """Write group ``g``'s P ``spikes`` of output position (``r``, ``x``) at step ``t`` into the
    output store through ``out`` (a :func:`store_write_signature`) when ``en``: the pooled
    position's first contribution (its top-left position) writes the group's P bits, the other
    three OR theirs in by writing only their ones; a pool drops the last row or column of an odd map."""
    q = layer.pool
    H, W = layer.in_shape[1], layer.in_shape[2]
    py = r >> (q - 1) if q > 1 else r
    px = x >> (q - 1) if q > 1 else x
    bit = Signal(range(max(2, lout.size)))
    # channel g*P + j, P * G = 2**cbits: the group's first bit is g << log2(P)
    if lout.tbits:  # step t's map
        m.d.comb += bit.eq(Cat(field(Const(0, 1), ceil_log2(P)), field(g, ceil_log2(G)), field(t, lout.tbits),
                               field(px, lout.wbits), py))
    else:
        m.d.comb += bit.eq(Cat(field(Const(0, 1), ceil_log2(P)), field(g, ceil_log2(G)), field(px, lout.wbits), py))
    lw = ceil_log2(word)
    off = bit[:lw] if lw else Const(0, 1)
    first = Signal()
    dropped = Signal()
    if q > 1:
        m.d.comb += first.eq(~r[0] & ~x[0])
        m.d.comb += dropped.eq(((r == H - 1) & (H % 2 == 1)) | ((x == W - 1) & (W % 2 == 1)))
    else:
        m.d.comb += first.eq(1)
    with m.If(en & ~dropped):
        m.d.comb += [
            out.addr.eq(bit >> lw),
            out.data.eq(Mux(first, spikes, (1 << P) - 1) << off),
            out.en.eq(Mux(first, (1 << P) - 1, spikes) << off),
        ]
