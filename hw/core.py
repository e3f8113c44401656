"""Binary layer cores: P lanes of neurons, weights in ``lib.memory`` initialised from the model.

Arithmetic (bitsnn.hwmodel): a_j = sum_i x_i * w_ji with w in {-1,+1}; for spike inputs
a_j = 2*popcount(s & b_j) - popcount(s). A hidden layer outputs s'_j = [a_j >= theta_j]
(compare +1) or [a_j <= theta_j] (compare -1); the output layer outputs the scores a_j.

Both cores report results the same way, one lane group g (neurons g*P .. g*P+P-1 of the core) per
pulse of ``out_valid``: ``out_spikes`` (P bits, lane j = neuron g*P+j; lanes past the core's
neurons are 0) and ``out_scores`` (P signed accumulators). ``done`` is high together with the
last group's ``out_valid``. Accumulators are ``acc_bits = bit_length(R+1) + 1`` bits signed, R the
largest |a_j| (n_in for spikes, 255*n_in for pixels).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from bitsnn.hwmodel import MAX_INPUT, WEIGHT_BITS, weight_limit
from bitsnn.hwplan import acc_bits_for, lane_group_bytes_problem, neuron_accumulator

from .arith import bits_to_int, ints_to_word, lane_term, popcount, tree_sum
from .ports import read_port
from .router import beat_layout, quiet_on_error
from .wmem import STORAGES, WeightMemory

__all__ = ["DenseCore", "EventCore", "weight_write_signature"]


def weight_write_signature(columns: int, col_bytes: int) -> wiring.Signature:
    """A run-time weight write of one byte: ``col`` (weight-memory column i: input i), ``byte``
    (b: byte b of input i's fan-out, little-endian: neurons 8b..8b+7 of +-1 weights, or 8/w
    w-bit fields; :func:`bitsnn.protocol.write_column_bytes`), ``data``, ``en`` (one-cycle strobe;
    never while running). ``columns`` and ``col_bytes``: :func:`bitsnn.hwplan.write_columns`."""
    return wiring.Signature({
        "col": Out(range(max(2, columns))),
        "byte": Out(range(max(2, col_bytes))),
        "data": Out(8),
        "en": Out(1),
    })


class _CoreBase(wiring.Component):
    def __init__(self, weights, thresholds, compare, *, lanes, input_kind, extra_ports, bits=1, sums=1, timed=False):
        w = np.asarray(weights)
        if not isinstance(weights, np.ndarray) or w.ndim != 2 or w.size == 0:
            raise TypeError(f"weights must be a non-empty 2-D array of 0/1 (n_out, n_in), not {weights!r:.60}")
        if not isinstance(bits, int) or isinstance(bits, bool) or not (bits == 1 or bits in WEIGHT_BITS):
            raise ValueError(f"bits must be 1 (+-1 weights as 0/1) or {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}, not {bits!r}")
        self.bits, self.wmax = bits, weight_limit(bits)
        if bits == 1 and not np.all((w == 0) | (w == 1)):
            raise ValueError("weights must hold only 0 and 1")
        if bits > 1 and (w.dtype.kind not in "iu" or np.abs(w.astype(np.int64)).max() > self.wmax):
            raise ValueError(f"{bits}-bit weights must be integers in [{-self.wmax}, {self.wmax}]")
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"lanes must be an integer, not {lanes!r}")
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        if input_kind not in ("spikes", "pixels"):
            raise ValueError(f"input_kind must be 'spikes' or 'pixels', not {input_kind!r}")
        if (thresholds is None) != (compare is None):
            raise TypeError("thresholds and compare must be given together (or both None for an output layer)")
        self.n_out, self.n_in = w.shape
        self.weights = w.astype(np.uint8 if bits == 1 else np.int64)
        self.is_output = thresholds is None
        # R: the largest |a| (an output layer adding ``sums`` input vectors' a: their sum's)
        r = MAX_INPUT[input_kind] * self.n_in * self.wmax * (sums if thresholds is None else 1)
        if not self.is_output:
            thresholds = np.asarray(thresholds, dtype=np.int64)
            compare = np.asarray(compare, dtype=np.int64)
            if thresholds.shape != (self.n_out,) or compare.shape != (self.n_out,):
                raise ValueError(f"thresholds and compare must have shape ({self.n_out},)")
            # (a timed core's thresholds are its membrane lanes', of the membrane's range)
            if not timed and np.any((thresholds < -r - 1) | (thresholds > r + 1)):
                raise ValueError(f"thresholds must lie in [{-r - 1}, {r + 1}]")
            if not np.all((compare == 1) | (compare == -1)):
                raise ValueError("compare must hold only +1 and -1")
        self.thresholds, self.compare = thresholds, compare
        self.input_kind = input_kind
        self.r = r
        self.lanes = min(lanes, self.n_out)
        self.groups = -(-self.n_out // self.lanes)
        self.acc_bits = acc_bits_for(r)
        ports = {
            "out_valid": Out(1),
            "out_group": Out(range(max(2, self.groups))),
            "out_spikes": Out(self.lanes),
            "out_scores": Out(data.ArrayLayout(signed(self.acc_bits), self.lanes)),
            "done": Out(1),
        }
        ports.update(extra_ports)
        super().__init__(ports)

    def _threshold_memory(self):
        """ROM, depth G: lane j holds theta (acc_bits) then the compare bit (1 = '>=')."""
        P, A = self.lanes, self.acc_bits
        rows = []
        for g in range(self.groups):
            v = 0
            for j in range(P):
                n = g * P + j
                th, ge = (int(self.thresholds[n]), int(self.compare[n]) > 0) if n < self.n_out else (self.r + 1, True)
                v |= ((th & ((1 << A) - 1)) | (int(ge) << A)) << (j * (A + 1))
            rows.append(v)
        return memory.Memory(shape=P * (A + 1), depth=self.groups, init=rows)

    def _fire(self, m, lanes_acc, th_word):
        """Combinational spikes (P bits) from P signed accumulators and a threshold-ROM word."""
        return threshold_spikes(m, lanes_acc, th_word, self.acc_bits)


def threshold_spikes(m, lanes_acc, th_word, acc_bits: int):
    """The ``step`` neuron model's ``hw`` part (:mod:`bitsnn.kinds`): combinational spikes, one
    per lane, from the lanes' signed accumulators and a threshold-ROM word whose lane j holds
    theta (``acc_bits`` wide) then the compare bit (1: a >= theta, 0: a <= theta)."""
    A = acc_bits
    spikes = Signal(len(lanes_acc))
    for j, a in enumerate(lanes_acc):
        field = th_word[j * (A + 1):(j + 1) * (A + 1)]
        th = field[:A].as_signed()
        m.d.comb += spikes[j].eq(Mux(field[A], a >= th, a <= th))
    return spikes


class DenseCore(_CoreBase):
    """Dense AND-popcount core: W-bit words of the input vector against P weight words per cycle.

    Parameters: ``weights`` (n_out, n_in) 0/1; ``thresholds``/``compare`` (n_out,) or None (output
    layer); ``lanes`` P (used: min(P, n_out)); ``word`` W; ``input_kind`` "spikes" (W-bit words)
    or "pixels" (W 8-bit pixels per word, ``inp.data`` is 8*W bits, pixel i at bits 8i..8i+7).

    Ports: ``start`` In(1) pulse; ``inp`` Out(read_port(ceil(n_in/W), W or 8W)): the input word
    read port (:func:`bitsnn.hw.ports.read_port`), data the cycle after the address; plus the common ``out_*``/``done``.

    Weight memory: depth G*ceil(n_in/W), width P*W, address g*ceil(n_in/W) + w, lane j at bits
    j*W..j*W+W-1. Timing: ``start`` in cycle s; word (g, w) is read in cycle s+1+g*Wn+w; the
    ``out_valid`` of group g is in cycle s+4+(g+1)*Wn-1, so ``done`` is in cycle s+3+G*Wn:
    G*Wn cycles of reads plus a pipeline latency of 3 (read, popcount register, accumulate).
    """

    @quiet_on_error
    def __init__(self, weights, thresholds=None, compare=None, *, lanes=32, word=32, input_kind="spikes"):
        if not isinstance(word, int) or isinstance(word, bool):
            raise TypeError(f"word must be an integer, not {word!r}")
        if word < 1:
            raise ValueError(f"word must be at least 1, not {word}")
        self.word = word
        n_in = np.asarray(weights).shape[-1] if hasattr(weights, "shape") and np.ndim(weights) == 2 else 1
        self.n_words = -(-n_in // word)
        vw = 8 if input_kind == "pixels" else 1
        super().__init__(weights, thresholds, compare, lanes=lanes, input_kind=input_kind, extra_ports={
            "start": In(1),
            "inp": Out(read_port(-(-n_in // word), word * vw)),
        })

    def elaborate(self, platform):
        m = Module()
        P, W, G, Wn, A = self.lanes, self.word, self.groups, self.n_words, self.acc_bits
        rows = []
        for g in range(G):
            for w in range(Wn):
                v = 0
                for j in range(P):
                    n = g * P + j
                    if n < self.n_out:
                        v |= bits_to_int(self.weights[n, w * W:(w + 1) * W]) << (j * W)
                rows.append(v)
        m.submodules.wmem = wmem = memory.Memory(shape=P * W, depth=G * Wn, init=rows)
        wrp = wmem.read_port()
        th_rp = None
        if not self.is_output:
            m.submodules.thmem = thmem = self._threshold_memory()
            th_rp = thmem.read_port()

        total = G * Wn
        run = Signal()
        adr = Signal(range(max(2, total)))
        w = Signal(range(max(2, Wn)))
        g = Signal(range(max(2, G)))
        m.d.comb += [wrp.addr.eq(adr), self.inp.addr.eq(w)]
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_g = Signal.like(g)
        m.d.sync += [s1_valid.eq(run), s1_first.eq(w == 0), s1_last.eq(w == Wn - 1), s1_g.eq(g)]
        with m.If(self.start & ~run):
            m.d.sync += [run.eq(1), adr.eq(0), w.eq(0), g.eq(0)]
        with m.If(run):
            m.d.sync += adr.eq(adr + 1)
            with m.If(w == Wn - 1):
                m.d.sync += [w.eq(0), g.eq(g + 1)]
            with m.Else():
                m.d.sync += w.eq(w + 1)
            with m.If(adr == total - 1):
                m.d.sync += run.eq(0)

        # Stage 1: per-lane contribution of this word.
        cw = (W * MAX_INPUT[self.input_kind]).bit_length() + 2
        contrib = [Signal(signed(cw), name=f"contrib{j}") for j in range(P)]
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        s2_g = Signal.like(g)
        m.d.sync += [s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last), s2_g.eq(s1_g)]
        x = self.inp.data
        if self.input_kind == "spikes":
            # balanced adder trees (bitsnn.hw.arith): a chained sum of W terms is W adds deep
            pcs = popcount(x)
            for j in range(P):
                b = wrp.data[j * W:(j + 1) * W]
                m.d.sync += contrib[j].eq(2 * popcount(x & b) - pcs)
        else:
            tot = tree_sum(x[8 * i:8 * i + 8] for i in range(W))
            for j in range(P):
                b = wrp.data[j * W:(j + 1) * W]
                pos = tree_sum(Mux(b[i], x[8 * i:8 * i + 8], 0) for i in range(W))
                m.d.sync += contrib[j].eq(2 * pos - tot)
        if th_rp is not None:
            m.d.comb += th_rp.addr.eq(s1_g)

        # Stage 2: accumulate; on a group's last word, fire.
        acc = [Signal(signed(A), name=f"acc{j}") for j in range(P)]
        sums = []
        for j in range(P):
            s = Signal(signed(A), name=f"sum{j}")
            m.d.comb += s.eq(Mux(s2_first, 0, acc[j]) + contrib[j])
            sums.append(s)
        with m.If(s2_valid):
            m.d.sync += [acc[j].eq(sums[j]) for j in range(P)]
        m.d.sync += [self.out_valid.eq(0), self.done.eq(0)]
        with m.If(s2_valid & s2_last):
            m.d.sync += [self.out_valid.eq(1), self.out_group.eq(s2_g), self.done.eq(s2_g == G - 1)]
            m.d.sync += [self.out_scores[j].eq(sums[j]) for j in range(P)]
            if th_rp is not None:
                m.d.sync += self.out_spikes.eq(self._fire(m, sums, th_rp.data))
        return m


class EventCore(_CoreBase):
    """Event-driven core: per address event, one weight row (input i to P neurons) per lane group.

    Parameters: ``weights`` (n_out, n_in) 0/1, or with ``bits`` b >= 2 (an ``int_dense`` layer)
    signed integers in [-(2^(b-1) - 1), 2^(b-1) - 1]; ``thresholds``/``compare`` or None (output layer);
    ``lanes`` P (used: min(P, n_out)); ``k`` events per beat of the input stream;
    ``input_kind`` "spikes" (each event adds +-1) or "pixels" (each event adds +-x_i, x_i read
    through ``values``, a read port (:func:`bitsnn.hw.ports.read_port`) of the buffered pixels).

    Ports: ``events`` In(stream.Signature(beat_layout(ceil_log2(n_in), k))) — see
    :mod:`bitsnn.hw.router`; ``values`` Out(read_port(n_in, 8)) (pixels only, always present); ``spikes`` Out(n_out): every neuron's spike, valid from the read-out of its
    group until the first beat of the next input vector is accepted (0 for an output layer);
    plus the common ``out_*``/``done``.

    Memories: weights transposed, depth n_in*G, width P (P*b: lane j's b-bit field, and the event
    adds v*w instead of +-v, a compare -1 neuron subtracts it), address i*G+g (lane j = neuron
    g*P+j), the bits of a compare -1 neuron inverted; a :class:`~bitsnn.hw.wmem.WeightMemory` in block RAM
    (``storage="bram"``) or iCE40 SPRAM (``"spram"``, not initialised by the bitstream). With
    ``writable`` (implied by ``"spram"``) the ``wr`` port (:func:`weight_write_signature`) replaces
    the weights at run time, one byte of an input's fan-out per cycle, written one cycle after its
    strobe (the core applies the flips;
    lanes x bits must be 8 x a power of two unless the core has one lane group). Accumulators: one register per neuron (not a
    memory: a 4-deep, P*A-bit-wide memory cannot use block RAM and costs a read multiplexer and a
    write-back path in flip-flops). A hidden neuron's register holds ``c*(a - theta)``: it starts
    at ``-c*theta``, so the neuron fires when it is >= 0 -- its sign bit is the spike, and there is
    no threshold ROM or comparator. The registers are (re)loaded with their start values when the
    first beat of a vector is accepted, so they keep the spikes for the next layer meanwhile.

    ``accumulators="memory"`` keeps the accumulators in a G-deep, P*acc_bits-wide memory instead
    (with a threshold ROM and compare at read-out; ``spikes`` stays 0): the better choice where
    such a memory is cheap LUT RAM (ECP5) and the layers are wide; same timing, same results.

    Timing: a beat of c events is held c*G cycles (a skip beat, c = 0, one cycle); ``ready`` is high
    when no beat is held or in the held beat's final cycle, so beats flow without a bubble.
    After the final cycle of the beat with ``last``, the G groups are read out in G cycles: the
    ``out_valid`` of group g comes 3+g cycles after that final cycle; ``done`` with the last one.
    """

    @quiet_on_error
    def __init__(self, weights, thresholds=None, compare=None, *, lanes=32, k=1, input_kind="spikes",
                 accumulators="registers", writable=False, storage="bram", bits=1, timed=False, banks=1, steps=1,
                 sums=1, signed_input=False):
        if timed and (accumulators != "registers" or thresholds is None):
            raise ValueError("a timed core is a hidden layer's, with register accumulators")
        if not timed and (banks != 1 or steps != 1):
            raise ValueError("banks and steps belong to a timed core")
        self.timed, self.banks, self.steps = bool(timed), int(banks), int(steps)
        if (writable or storage == "spram") and 8 % bits:
            raise ValueError(f"run-time weight writes take 1, 2, 4 or 8-bit weights (whole weights a byte), not {bits}-bit ones")
        if accumulators not in ("registers", "memory"):
            raise ValueError(f"accumulators must be 'registers' or 'memory', not {accumulators!r}")
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
        self.accumulators = accumulators
        self.storage = storage
        self.writable = bool(writable) or storage == "spram"
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError(f"k must be an integer, not {k!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.k = k
        n_in = np.asarray(weights).shape[-1] if hasattr(weights, "shape") and np.ndim(weights) == 2 else 1
        # an event's address: its input i, then (timed, with banks) the step of its bank, then
        # (signed input spikes) its sign, 1 for a -1 spike, which subtracts the weights
        self.signed_input = bool(signed_input)
        self.i_bits = max(1, ceil_log2(n_in))
        self.beat = beat_layout(self.i_bits + (ceil_log2(banks) if banks > 1 else 0) + int(self.signed_input), k)
        n_out = np.asarray(weights).shape[0] if np.ndim(weights) == 2 else 1
        extra = {
            "events": In(stream.Signature(self.beat)),
            "values": Out(read_port(n_in, 8)),
            "spikes": Out(max(1, n_out)),
        }
        if self.timed:  # the step of the group out_scores holds
            extra["out_step"] = Out(range(max(2, steps)))
        if self.writable:
            extra["wr"] = In(weight_write_signature(n_in, -(-n_out * bits // 8)))
        super().__init__(weights, thresholds, compare, lanes=lanes, input_kind=input_kind, extra_ports=extra, bits=bits,
                         sums=sums, timed=timed)
        if self.writable and self.groups > 1 and (why := lane_group_bytes_problem(self.lanes, bits)):
            raise ValueError(f"{why} for {self.n_out} neurons (a core of one lane group takes any lanes)")

    def _weight_memory(self, m, rows, flips):
        """The weight memory (see :mod:`bitsnn.hw.wmem`) holding ``rows``; wires the ``wr`` port:
        byte b of input i's fan-out is lane byte b mod (P*bits/8) of word i*G + b div (P*bits/8),
        for +-1 weights (neurons 8b..8b+7) XORed with the stored flips of those neurons (b-bit
        weights are stored as they are: the accumulate applies the sign). Returns the read port."""
        P, G = self.lanes, self.groups
        mem = WeightMemory(width=P * self.bits, depth=self.n_in * G, init=rows, writable=self.writable,
                           storage=self.storage)
        m.submodules.wmem = mem
        if self.writable:
            wr = self.wr
            nb = -(-self.n_out * self.bits // 8)
            if G == 1:
                g, lane = Const(0, 1), wr.byte
            else:
                lb = (P * self.bits // 8).bit_length() - 1
                g, lane = wr.byte >> lb, wr.byte & ((1 << lb) - 1)
            fl = [bits_to_int(flips[8 * b:8 * b + 8]) if self.bits == 1 else 0 for b in range(nb)]
            fbyte = Signal(8)
            if any(fl):
                with m.Switch(wr.byte):
                    for b, v in enumerate(fl):
                        if v:
                            with m.Case(b):
                                m.d.comb += fbyte.eq(v)
            # registered: the address arithmetic is not in series with the memory's (SPRAM) address mux
            wa = Signal.like(mem.wr.addr)
            wd = Signal.like(mem.wr.data)
            we = Signal.like(mem.wr.en)
            m.d.sync += [
                wa.eq(wr.col * G + g),
                wd.eq((wr.data ^ fbyte).replicate(mem.n_bytes)),
                we.eq(Mux(wr.en & (wr.byte < nb), 1 << lane, 0)),
            ]
            m.d.comb += [mem.wr.addr.eq(wa), mem.wr.data.eq(wd), mem.wr.en.eq(we)]
        return mem.rd

    def _neuron_plan(self):
        """Per neuron n: (weight flip, initial accumulator value, accumulator width in bits):
        :func:`bitsnn.hwplan.neuron_accumulator`, which the estimate sizes with too (a timed
        core's: c_n * a from 0, the membrane lanes doing the rest)."""
        if self.timed:
            return [neuron_accumulator(0, self.compare[n], self.r) for n in range(self.n_out)]
        if self.is_output:
            return [neuron_accumulator(None, None, self.r) for _ in range(self.n_out)]
        return [neuron_accumulator(self.thresholds[n], self.compare[n], self.r) for n in range(self.n_out)]

    def _accumulate(self, acc, wrp, j: int, flip: bool, v, neg=None):
        """``acc`` plus lane j's term of the weight word just read (v times its weight); b-bit
        weights of a compare -1 neuron (``flip``) are subtracted: c * w; a -1 input spike
        (``neg``, signed input) subtracts what a +1 adds."""
        term = lane_term(wrp.data, j, self.bits, v, neg)
        return acc - term if self.bits > 1 and flip else acc + term

    def _pipeline(self, m, wrp):
        """What both accumulator styles share: beat acceptance and the (event, group) walk, the
        read-out group counter, stage 0 (the weight read at i*G+g) and stage 1's registers, the
        ``out_valid``/``out_group``/``done`` of a read-out, and v, the signed value an event adds."""
        G, k, T = self.groups, self.k, self.steps
        held = Signal()
        beat = Signal(self.beat)
        e = Signal(range(max(2, k)))
        g = Signal(range(max(2, G)))
        thr = Signal()  # reading out group tg (at step tt, timed)
        tg = Signal(range(max(2, G)))
        tt = Signal(range(T)) if T > 1 else None
        count = beat.count
        final = Signal()
        m.d.comb += final.eq(held & ((count == 0) | ((e == count - 1) & (g == G - 1))))
        m.d.comb += self.events.ready.eq(~thr & (~held | (final & ~beat.last)))
        accept, read_out_starts = Signal(), Signal()
        m.d.comb += accept.eq(self.events.valid & self.events.ready)

        with m.If(accept):
            m.d.sync += [held.eq(1), beat.eq(self.events.payload), e.eq(0), g.eq(0)]
        with m.Elif(final):
            m.d.sync += held.eq(0)
            with m.If(beat.last):
                m.d.sync += [thr.eq(1), tg.eq(0)]
                if T > 1:
                    m.d.sync += tt.eq(0)
                m.d.comb += read_out_starts.eq(1)
        with m.Elif(held):
            with m.If(g == G - 1):
                m.d.sync += [g.eq(0), e.eq(e + 1)]
            with m.Else():
                m.d.sync += g.eq(g + 1)

        # Stage 0: issue the weight read.
        issue = Signal()
        m.d.comb += issue.eq(held & (count != 0))
        i = Signal(len(beat.addr[0]))
        m.d.comb += i.eq(beat.addr[0] if k == 1 else beat.addr[e])
        neg = s1_neg = None
        if self.signed_input:  # the event's sign: its address's top bit
            neg, s1_neg = i[-1], Signal(name="s1_neg")
            i = i[:-1]
            m.d.sync += s1_neg.eq(neg)
        bank = None
        if self.banks > 1:  # the event's step: the bank it adds into
            bank = Signal(range(self.banks))
            m.d.comb += bank.eq(i[self.i_bits:])
            i = i[:self.i_bits]
        m.d.comb += [wrp.addr.eq(i * G + g), self.values.addr.eq(i)]
        s1_upd, s1_thr = Signal(), Signal()
        s1_g = Signal.like(g)
        s1_b = Signal.like(bank) if bank is not None else None
        s1_t = Signal.like(tt) if T > 1 else None
        m.d.sync += [s1_upd.eq(issue), s1_thr.eq(thr)]
        if bank is not None:
            m.d.sync += s1_b.eq(bank)
        if T > 1:
            m.d.sync += s1_t.eq(tt)
        with m.If(thr):
            m.d.sync += s1_g.eq(tg)
            if T > 1:  # each group's T steps, then the next group
                m.d.sync += tt.eq(Mux(tt == T - 1, 0, tt + 1))
                with m.If((tg == G - 1) & (tt == T - 1)):
                    m.d.sync += thr.eq(0)
                with m.Elif(tt == T - 1):
                    m.d.sync += tg.eq(tg + 1)
            else:
                with m.If(tg == G - 1):
                    m.d.sync += thr.eq(0)
                with m.Else():
                    m.d.sync += tg.eq(tg + 1)
        with m.Else():
            m.d.sync += s1_g.eq(g)

        # Stage 1: the read-out handshake; the caller updates or reads out group s1_g.
        m.d.sync += [self.out_valid.eq(0), self.done.eq(0)]
        with m.If(s1_thr):
            if T > 1:
                m.d.sync += [self.out_valid.eq(1), self.out_group.eq(s1_g), self.out_step.eq(s1_t),
                             self.done.eq((s1_g == G - 1) & (s1_t == T - 1))]
            else:
                m.d.sync += [self.out_valid.eq(1), self.out_group.eq(s1_g), self.done.eq(s1_g == G - 1)]
                if self.timed:
                    m.d.sync += self.out_step.eq(0)
        if self.input_kind == "pixels":
            v = Signal(signed(10))
            m.d.comb += v.eq(self.values.data)
        else:
            v = Const(1, signed(2))
        return SimpleNamespace(accept=accept, read_out_starts=read_out_starts, thr=thr, tg=tg, g=g, v=v,
                               s1_upd=s1_upd, s1_thr=s1_thr, s1_g=s1_g, s1_b=s1_b, s1_t=s1_t, s1_neg=s1_neg)

    def elaborate(self, platform):
        if self.accumulators == "memory":
            return self._elaborate_memory()
        m = Module()
        P, G = self.lanes, self.groups
        plan = self._neuron_plan()
        rows = []
        for i in range(self.n_in):
            for g in range(G):
                col = self.weights[g * P:(g + 1) * P, i]
                flips = np.array([plan[g * P + j][0] for j in range(len(col))], np.uint8)
                if self.bits == 1:
                    rows.append(bits_to_int(col ^ flips))
                else:  # as they are: a compare -1 neuron subtracts them (below)
                    rows.append(ints_to_word(col, self.bits))
        wrp = self._weight_memory(m, rows, np.array([f for f, _i, _w in plan], np.uint8))
        # One accumulator register per neuron (a LUT4 + carry + FF per bit on iCE40): no read
        # multiplexer, no write-back path, no threshold ROM.
        # They keep their values after the read-out (``spikes`` is their sign bits) and are loaded
        # with their start values when the first beat of the next vector is accepted (``clear``, also
        # set by reset). They power up at 0 (reset_less): an iCE40 flip-flop powers up at 0, so a
        # nonzero ``init`` would cost an inverter LUT on each side of every 1-bit.
        if self.timed:
            return self._elaborate_timed(m, wrp, plan)
        accs = [Signal(signed(w), name=f"acc{n}", reset_less=True) for n, (_f, _i, w) in enumerate(plan)]
        if not self.is_output:
            m.d.comb += self.spikes.eq(Cat(*[~a[-1] for a in accs]))
        seq = self._pipeline(m, wrp)
        self._load_on_first_beat(m, seq, [a.eq(init) for a, (_f, init, _w) in zip(accs, plan)])
        v, s1_upd, s1_thr, s1_g = seq.v, seq.s1_upd, seq.s1_thr, seq.s1_g

        # Stage 1: update group s1_g, or read it out.
        for gg in range(G):
            sel = Signal(name=f"sel{gg}")
            m.d.comb += sel.eq(s1_g == gg)
            members = [(j, gg * P + j) for j in range(P) if gg * P + j < self.n_out]
            with m.If(s1_upd & sel):
                for j, n in members:
                    m.d.sync += accs[n].eq(self._accumulate(accs[n], wrp, j, plan[n][0], v, seq.s1_neg))
            with m.If(s1_thr & sel):
                for j, n in members:
                    m.d.sync += self.out_spikes[j].eq(0 if self.is_output else ~accs[n][-1])
                    if self.is_output:
                        m.d.sync += self.out_scores[j].eq(accs[n])
                    else:
                        # a_n = c_n * acc + theta_n; only the tests look at hidden-layer scores
                        # (the Accelerator leaves them unconnected and synthesis drops them).
                        c, th = int(self.compare[n]), int(self.thresholds[n])
                        m.d.sync += self.out_scores[j].eq(accs[n] + th if c > 0 else th - accs[n])
                for j in range(len(members), P):
                    m.d.sync += [self.out_spikes[j].eq(0), self.out_scores[j].eq(0)]
        return m

    @staticmethod
    def _load_on_first_beat(m, seq, loads):
        """The accumulators take their start values (``loads``) when the first beat of an input
        vector is accepted (``clear``: set by reset and when a read-out starts), so they keep the
        last vector's values until then."""
        clear = Signal(init=1)
        with m.If(seq.accept & clear):
            m.d.sync += clear.eq(0)
            m.d.sync += loads
        with m.If(seq.read_out_starts):
            m.d.sync += clear.eq(1)

    def _elaborate_timed(self, m, wrp, plan):
        """A timed core: a bank of accumulator registers per input step (``banks``; one when the
        input is the same at every step), each neuron's c_n * a from 0; the read-out gives each
        group's T steps in turn, ``out_scores`` the bank of step ``out_step`` (the only bank when
        there is one), for the stage's membrane lanes (:class:`~bitsnn.hw.neuron.MembraneLanes`)."""
        P, G, B = self.lanes, self.groups, self.banks
        accs = [[Signal(signed(w), name=f"acc{b}_{n}", reset_less=True) for n, (_f, _i, w) in enumerate(plan)]
                for b in range(B)]
        seq = self._pipeline(m, wrp)
        self._load_on_first_beat(m, seq, [a.eq(0) for bank in accs for a in bank])
        v, s1_upd, s1_thr, s1_g = seq.v, seq.s1_upd, seq.s1_thr, seq.s1_g
        for gg in range(G):
            sel = Signal(name=f"sel{gg}")
            m.d.comb += sel.eq(s1_g == gg)
            members = [(j, gg * P + j) for j in range(P) if gg * P + j < self.n_out]
            for b in range(B):
                hit = s1_upd & sel if B == 1 else s1_upd & sel & (seq.s1_b == b)
                with m.If(hit):
                    for j, n in members:
                        m.d.sync += accs[b][n].eq(self._accumulate(accs[b][n], wrp, j, plan[n][0], v, seq.s1_neg))
            with m.If(s1_thr & sel):
                for j, n in members:
                    if B == 1:
                        m.d.sync += self.out_scores[j].eq(accs[0][n])
                    else:
                        with m.Switch(seq.s1_t):
                            for b in range(B):
                                with m.Case(b):
                                    m.d.sync += self.out_scores[j].eq(accs[b][n])
                for j in range(len(members), P):
                    m.d.sync += self.out_scores[j].eq(0)
        return m

    def _elaborate_memory(self):
        """``accumulators="memory"``: the accumulators in a G-deep memory (LUT RAM on ECP5), read
        transparently (a read-modify-write every cycle), zeroed as they are read out through a
        threshold ROM; ``spikes`` stays 0 (the Accelerator keeps a spike register)."""
        m = Module()
        P, G, A = self.lanes, self.groups, self.acc_bits
        rows = []
        for i in range(self.n_in):
            for g in range(G):
                col = self.weights[g * P:(g + 1) * P, i]
                rows.append(bits_to_int(col) if self.bits == 1 else ints_to_word(col, self.bits))
        wrp = self._weight_memory(m, rows, np.zeros(self.n_out, np.uint8))
        m.submodules.accmem = accmem = memory.Memory(shape=P * A, depth=G, init=[])
        acc_wp = accmem.write_port()
        acc_rp = accmem.read_port(transparent_for=(acc_wp,))
        th_rp = None
        if not self.is_output:
            m.submodules.thmem = thmem = self._threshold_memory()
            th_rp = thmem.read_port()

        seq = self._pipeline(m, wrp)
        v, s1_upd, s1_thr, s1_g = seq.v, seq.s1_upd, seq.s1_thr, seq.s1_g
        m.d.comb += acc_rp.addr.eq(Mux(seq.thr, seq.tg, seq.g))
        if th_rp is not None:
            m.d.comb += th_rp.addr.eq(seq.tg)

        # Stage 1: update or read out.
        lanes_acc = [acc_rp.data[j * A:(j + 1) * A].as_signed() for j in range(P)]
        new = Cat(*[self._accumulate(a, wrp, j, False, v, seq.s1_neg)[:A] for j, a in enumerate(lanes_acc)])
        m.d.comb += acc_wp.addr.eq(s1_g)
        with m.If(s1_upd):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(new)]
        with m.If(s1_thr):
            m.d.comb += [acc_wp.en.eq(1), acc_wp.data.eq(0)]
            m.d.sync += [self.out_scores[j].eq(a) for j, a in enumerate(lanes_acc)]
            if th_rp is not None:
                m.d.sync += self.out_spikes.eq(self._fire(m, lanes_acc, th_rp.data))
        return m
