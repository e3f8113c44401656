"""Spike routers: spike vector -> address-event stream, event FIFOs, broadcast to a layer's cores.

A spike vector is read in C-bit chunks through a synchronous read port (one chunk per address,
data valid the cycle after the address). The router keeps the current chunk in a register and
emits its set bits lowest first, up to ``k`` events per beat; an all-zero chunk costs exactly one
*skip beat* (``count == 0``), so the router emits one beat on every cycle its output is ready
(it never leaves a gap once running). The next chunk is prefetched while the current one drains.

Beat payload (:func:`beat_layout`)::

    addr  : ArrayLayout(unsigned(addr_width), k)  -- input indices, lowest first; addr[e] valid for e < count
    count : 0..k                                  -- 0 is a skip beat (an all-zero chunk)
    last  : 1                                     -- the final beat of this spike vector
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import tree_sum
from .ports import read_port

__all__ = ["beat_layout", "event_layout", "SpikeRouter", "EventFIFO", "lowest_set_bit", "quiet_on_error"]


def quiet_on_error(init):
    """Decorate a Component ``__init__``: a rejected argument leaves no "never used" warning behind."""
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except Exception:
            self._MustUse__silence = True
            raise
    wrapper.__doc__, wrapper.__name__ = init.__doc__, init.__name__
    return wrapper


def _check_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be at least {lo}, not {value}")


def beat_layout(addr_width: int, k: int = 1) -> data.StructLayout:
    """Payload of a router beat: up to ``k`` input indices of ``addr_width`` bits, a count and a last flag."""
    _check_int("addr_width", addr_width, 1)
    _check_int("k", k, 1)
    return data.StructLayout({
        "addr": data.ArrayLayout(unsigned(addr_width), k),
        "count": unsigned(k.bit_length()),
        "last": unsigned(1),
    })


def event_layout(n_hidden: int, max_neurons: int) -> data.StructLayout:
    """The ``events`` monitor tap payload: ``layer`` (hidden-layer index) and ``addr`` (neuron index)."""
    return data.StructLayout({
        "layer": unsigned(max(1, ceil_log2(max(1, n_hidden)))),
        "addr": unsigned(max(1, ceil_log2(max(2, max_neurons)))),
    })


def lowest_set_bit(m: Module, value, name="lsb"):
    """Combinational priority encoder: (index of the lowest set bit of ``value``, any bit set).

    A balanced tree (log2 levels of 2:1 multiplexers) rather than a chain of ``If`` s, whose
    depth grows with the width: on an iCE40 the 32-bit chain was the design's critical path.
    The index is meaningless when no bit is set.
    """
    n = len(value)
    width = max(1, ceil_log2(max(2, n)))
    size = 1 << width
    bits = [value[i] for i in range(n)] + [Const(0, 1)] * (size - n)

    def enc(lo, hi):
        """(index bits, LSB first, relative to lo; any) of bits[lo:hi], hi - lo a power of 2."""
        if hi - lo == 1:
            return [], bits[lo]
        mid = (lo + hi) // 2
        i_lo, a_lo = enc(lo, mid)
        i_hi, a_hi = enc(mid, hi)
        any_lo = Signal(name=f"{name}_any{lo}_{mid}")
        m.d.comb += any_lo.eq(a_lo)
        idx = [Mux(any_lo, x, y) for x, y in zip(i_lo, i_hi)] + [~any_lo]
        return idx, any_lo | a_hi

    idx_bits, _any = enc(0, size)
    idx = Signal(range(max(2, n)), name=f"{name}_idx")
    m.d.comb += idx.eq(Cat(*idx_bits))
    return idx, value.any()


def at_least_two_set(m: Module, value, name="two"):
    """Combinational "two or more bits of ``value`` are set", as a balanced tree of (any, two)
    pairs: two(a|b) = two(a) | two(b) | any(a) & any(b). It equals ``value & (value - 1) != 0``
    without that expression's carry chain and wide OR, which were an iCE40 critical path."""
    bits = [value[i] for i in range(len(value))]

    def tree(lo, hi):
        if hi - lo == 1:
            return bits[lo], Const(0, 1)
        mid = (lo + hi) // 2
        a_lo, t_lo = tree(lo, mid)
        a_hi, t_hi = tree(mid, hi)
        two = Signal(name=f"{name}_{lo}_{hi}")
        m.d.comb += two.eq(t_lo | t_hi | (a_lo & a_hi))
        return a_lo | a_hi, two

    return tree(0, len(bits))[1] if len(bits) > 1 else Const(0, 1)


class SpikeRouter(wiring.Component):
    """Zero-skipping address-event generator over a spike vector stored in C-bit chunks.

    Parameters
    ----------
    n_inputs : int
        Length N of the spike vector (the chunk source holds ceil(N/C) chunks; bits past N are 0).
    chunk : int
        C, the chunk width in bits (the width of the priority encoder).
    k : int
        Events per beat (1..C).

    Ports
    -----
    start : In(1)
        One-cycle pulse while idle: scan the vector once.
    rd : Out(read_port(ceil(N/C), C))
        Chunk reads (:func:`bitsnn.hw.ports.read_port`): ``rd.data`` holds chunk ``rd.addr`` of the
        previous cycle (synchronous read).
    beats : Out(stream.Signature(beat_layout(ceil_log2(N), k)))
        Beats, valid/ready. Honours backpressure: nothing changes while ``valid & ~ready``.
    busy : Out(1)
        High from the cycle after ``start`` until the last beat is accepted.

    Timing: ``start`` in cycle s; chunk 0 is fetched in s+1, loaded in s+2; the first beat is valid
    in cycle s+3. Then one beat per cycle while ``ready``: ceil(p/k) beats for a chunk of p spikes,
    one skip beat for an all-zero chunk. The cycle after the last beat is accepted, ``busy`` is low.
    """

    @quiet_on_error
    def __init__(self, n_inputs: int, *, chunk: int = 32, k: int = 1):
        _check_int("n_inputs", n_inputs, 1)
        _check_int("chunk", chunk, 1)
        _check_int("k", k, 1)
        if k > chunk:
            raise ValueError(f"k must not exceed the chunk width {chunk}, not {k}")
        self.n_inputs, self.chunk, self.k = n_inputs, chunk, k
        self.n_chunks = -(-n_inputs // chunk)
        self.addr_width = max(1, ceil_log2(n_inputs))
        self.layout = beat_layout(self.addr_width, k)
        super().__init__({
            "start": In(1),
            "rd": Out(read_port(self.n_chunks, chunk)),
            "beats": Out(stream.Signature(self.layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, k, n = self.chunk, self.k, self.n_chunks
        cur = Signal(C)
        idx = Signal(range(max(2, n)))
        nxt = Signal(range(n + 1))    # the chunk whose data rd.data holds (RUN: idx + 1)
        advance = Signal()            # RUN: this cycle moves on to chunk nxt; fetch nxt + 1 now
        m.d.comb += self.rd.addr.eq(nxt + advance)

        # Lowest k set bits of the current chunk.
        v = cur
        payload = self.beats.payload
        base = Signal(self.addr_width + 1)
        m.d.comb += base.eq(idx * C)
        nz_bits = []
        for e in range(k):
            pos, nz = lowest_set_bit(m, v, name=f"lsb{e}")
            if C & (C - 1) == 0:  # C a power of 2: base has C's zero low bits, no carries
                m.d.comb += payload.addr[e].eq(base | pos)
            else:
                m.d.comb += payload.addr[e].eq(base + pos)
            nz_bits.append(nz)
            nv = Signal(C, name=f"rest{e}")
            m.d.comb += nv.eq(v & (v - 1))
            v = nv
        rest = v
        # more spikes in this chunk after this beat (k = 1: a carry-free tree, see at_least_two_set)
        more = at_least_two_set(m, cur, name="more") if k == 1 else (rest != 0)
        m.d.comb += payload.count.eq(tree_sum(nz_bits))
        last_chunk = idx == n - 1
        m.d.comb += payload.last.eq(last_chunk & ~more)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += nxt.eq(0)
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += nxt.eq(1)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [cur.eq(self.rd.data), idx.eq(0)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), self.beats.valid.eq(1)]
                with m.If(self.beats.ready):
                    with m.If(more):
                        m.d.sync += cur.eq(rest)
                    with m.Elif(last_chunk):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += advance.eq(1)
                        m.d.sync += [cur.eq(self.rd.data), idx.eq(idx + 1), nxt.eq(nxt + 1)]
        return m


class EventFIFO(wiring.Component):
    """A synchronous stream FIFO (``SyncFIFOBuffered``) for payloads of any layout.

    Ports: ``w`` In(stream.Signature(layout)), ``r`` Out(stream.Signature(layout)). A beat written
    in cycle t is readable from cycle t+2 (empty FIFO); full throughput of one beat per cycle.
    ``w.ready`` is low while ``depth`` beats are held.
    """

    @quiet_on_error
    def __init__(self, layout, *, depth: int = 4):
        _check_int("depth", depth, 1)
        self.layout, self.depth = layout, depth
        super().__init__({
            "w": In(stream.Signature(layout)),
            "r": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.layout.size, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.w.payload),
            fifo.w_en.eq(self.w.valid),
            self.w.ready.eq(fifo.w_rdy),
            self.r.payload.eq(fifo.r_data),
            self.r.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.r.ready),
        ]
        return m
