"""Layer stages: one component per layer, every layer kind behind one signature.

A stage computes one layer of one inference. The Accelerator (:mod:`bitsnn.hw.accelerator`)
builds one per layer with its kind's ``stage`` part (:mod:`bitsnn.kinds`), joins them with
``wiring.connect`` and sequences them; nothing outside a stage knows how it works. Every stage
has the members of :func:`stage_signature`:

==========  ========================================  ===========================================
``start``   In(1)                                     a pulse: the input vector is ready, begin
``done``    Out(1)                                    high for one cycle: the layer is finished
``src``     Out(read_port) x n_src                    reads its input vector (the previous stage's
                                                      ``out``, or the input buffer's ``words``)
``values``  Out(read_port(n, 8)) x n_values           reads the 8-bit pixels (pixel input)
``out``     In(read_port(words, W)) x n_readers       serves its output spike vector, word by word
``count``   Out(range(T * n_out + 1))                 its spikes this inference (when
                                                      :attr:`counts_spikes`; else the next stage's
                                                      ``seen`` counts them)
``seen``    Out(range(n_in + 1))                      input events its router emitted, or the
                                                      input spikes a window stage read (when
                                                      built with ``count_events``)
``scores``  Out(signed(score_bits)) x n_out           the class scores (output layer only)
``rotate``  In(1)                                     each cycle it is high, ``scores[j]`` takes
                                                      ``scores[j + 1]`` and the last the first:
                                                      n_out cycles restore them (output layer;
                                                      other stages ignore it)
``wr``      In(weight_write_signature)                run-time weight writes (``writable`` only)
==========  ========================================  ===========================================

Read ports are :func:`bitsnn.hw.ports.read_port`: the reader drives ``addr`` and gets ``data``
the next cycle. A stage's output vector is laid out as the next stage reads it: a dense layer's
spikes in neuron order; a convolution's pooled maps in its :class:`~bitsnn.hwplan.MapLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwplan import HardwarePlan
from bitsnn.kinds import part

from .arith import field, popcount
from .conv import ConvCore, WindowCore
from .core import DenseCore, EventCore, weight_write_signature
from .neuron import MembraneLanes
from .ports import read_port, serve_memory, serve_register
from .router import EventFIFO, SpikeRouter

__all__ = ["StageOptions", "stage_signature", "n_src_readers", "n_value_readers", "DenseStage", "ConvStage", "GapStage", "stage_class", "stage_for"]


@dataclass(frozen=True)
class StageOptions:
    """The build options a stage needs beyond its layer's plan."""

    #: "registers" or "memory": where an EventCore keeps its accumulators
    accumulators: str = "registers"
    #: give the weight memories a write port (and the stage ``wr``)
    writable: bool = False
    #: the weights live in iCE40 SPRAM (implies writable)
    spram: bool = False
    #: readers of the output spike vector (the next stage's ``src`` ports, the events tap)
    n_readers: int = 1
    #: build ``seen`` (the previous stage cannot count its own spikes)
    count_events: bool = False


def n_src_readers(plan: HardwarePlan, l: int) -> int:
    """Input-vector readers of layer ``l``'s stage: its router (event mode), each core (dense)."""
    return 1 if plan.mode == "event" else len(plan.layers[l].cores)


def n_value_readers(plan: HardwarePlan, l: int) -> int:
    """Pixel-value readers of layer ``l``'s stage: one per core, event mode with pixel input."""
    lp = plan.layers[l]
    return len(lp.cores) if plan.mode == "event" and lp.input_kind == "pixels" else 0


def stage_signature(plan: HardwarePlan, l: int, opts: StageOptions) -> wiring.Signature:
    """The members of layer ``l``'s stage (see the module docstring)."""
    lp, W = plan.layers[l], plan.word
    src_width = 8 * W if plan.mode == "dense" and lp.input_kind == "pixels" else W
    out_words = 0 if lp.is_output else -(-plan.tap_size(l) // W)
    members = {
        "start": In(1),
        "done": Out(1),
        "src": Out(read_port(lp.input_words, src_width)).array(n_src_readers(plan, l)),
        "values": Out(read_port(lp.n_in_store, 8)).array(n_value_readers(plan, l)),
        "out": In(read_port(out_words, W)).array(0 if lp.is_output else opts.n_readers),
        "count": Out(range(lp.n_out * lp.out_steps + 1)),
        "seen": Out(range(lp.n_in_store + 1)),
        "scores": Out(signed(plan.score_bits)).array(lp.n_out if lp.is_output else 0),
        "rotate": In(1),
    }
    if (opts.writable or opts.spram) and lp.conv is None:  # a convolution's kernels are not written at run time
        members["wr"] = In(weight_write_signature(lp.weight_columns, -(-lp.n_out * lp.wbits // 8)))
    return wiring.Signature(members)


class _Stage(wiring.Component):
    #: whether ``count`` holds the layer's spikes (False: the next stage's ``seen`` does)
    counts_spikes = True

    def __init__(self, layer, plan: HardwarePlan, l: int, opts: StageOptions):
        self.layer, self.plan, self.l, self.opts = layer, plan, l, opts
        self.lp = plan.layers[l]
        super().__init__(stage_signature(plan, l, opts))

    def _router(self, m, k: int):
        """The layer's spike router and event FIFO on ``src[0]``; counts ``seen`` if asked to."""
        router = SpikeRouter(self.lp.n_in_store, chunk=self.plan.word, k=k)
        fifo = EventFIFO(router.layout, depth=self.plan.fifo_depth)
        m.submodules.router, m.submodules.fifo = router, fifo
        m.d.comb += router.start.eq(self.start)
        wiring.connect(m, router=router.rd, src=wiring.flipped(self.src[0]))
        wiring.connect(m, router=router.beats, fifo=fifo.w)
        if self.opts.count_events:
            beats = router.beats
            with m.If(self.start):
                m.d.sync += self.seen.eq(0)
            with m.Elif(beats.valid & beats.ready):
                m.d.sync += self.seen.eq(self.seen + beats.payload.count)
        return fifo


class DenseStage(_Stage):
    """A ``binary_dense`` or ``int_dense`` layer: its cores (:class:`EventCore` s behind a router in event mode,
    :class:`DenseCore` s in dense mode), the spike register, the spike count or the scores."""

    def elaborate(self, platform):
        if self.lp.timed:
            return self._elaborate_timed()
        m = Module()
        layer, lp, plan, opts = self.layer, self.lp, self.plan, self.opts
        mode, P = plan.mode, plan.lanes
        reg_spikes = mode == "event" and opts.accumulators == "registers"
        wbits = self._weights()
        cores = []
        for c, cp in enumerate(lp.cores):
            off, n = cp.first, cp.n
            th = cm = None
            if not layer.is_output:
                th, cm = layer.thresholds[off:off + n], layer.compare[off:off + n]
            if mode == "event":
                core = EventCore(wbits[off:off + n], th, cm, lanes=P, k=plan.k, input_kind=layer.input_kind,
                                 accumulators=opts.accumulators, writable=opts.writable,
                                 storage="spram" if opts.spram else "bram", bits=layer.bits, sums=lp.in_steps,
                                 signed_input=lp.signed_in)
                self._wire_event_core(m, core, c, off, n)
            else:
                core = DenseCore(wbits[off:off + n], th, cm, lanes=P, word=plan.word, input_kind=layer.input_kind)
                m.d.comb += core.start.eq(self.start)
                wiring.connect(m, core=core.inp, stage=wiring.flipped(self.src[c]))
            m.submodules[f"core{c}"] = core
            cores.append((off, n, core))
        if mode == "event":
            fifo = self._router(m, plan.k)
            all_ready = Cat(*[core.events.ready for _, _, core in cores]).all()
            m.d.comb += fifo.r.ready.eq(all_ready)
            payload = fifo.r.payload
            if lp.in_steps > 1 or lp.signed_in:  # every step's maps: an event's weight row is its address
                # without the step (and its sign, signed spikes)
                payload = _split_step(m, payload, lp.input_layout, cores[0][2].beat, cores[0][2].i_bits,
                                      keep_step=False)
            for _, _, core in cores:
                m.d.comb += [core.events.payload.eq(payload), core.events.valid.eq(fifo.r.valid & all_ready)]

        self._done_when_all(m, [core for _, _, core in cores])

        # Results into the spike register or the scores. An EventCore's accumulators keep their
        # sign bits (its ``spikes``) until its next input vector starts, which is after every
        # reader of this layer's spikes is done: they are the spike register.
        spk = None if layer.is_output else Signal(layer.n_out, name="spikes")
        if reg_spikes and spk is not None:
            m.d.comb += spk.eq(Cat(*[core.spikes for _, _, core in cores]))
        else:
            for off, n, core in cores:
                with m.If(core.out_valid):
                    with m.Switch(core.out_group):
                        for g in range(core.groups):
                            with m.Case(g):
                                for j in range(core.lanes):
                                    nn = g * core.lanes + j
                                    if nn >= n:
                                        continue
                                    if layer.is_output:
                                        m.d.sync += self.scores[off + nn].eq(core.out_scores[j])
                                    else:
                                        m.d.sync += spk[off + nn].eq(core.out_spikes[j])
        if layer.is_output:
            # the argmax reads scores[0] while they rotate: no index multiplexer before its comparator
            n = len(self.scores)
            with m.If(self.rotate):
                m.d.sync += [self.scores[j].eq(self.scores[(j + 1) % n]) for j in range(n)]
        if spk is not None:
            incs = [Cat(*[core.out_spikes[j] & core.out_valid for j in range(core.lanes)]) for _, _, core in cores]
            with m.If(self.start):
                m.d.sync += self.count.eq(0)
            with m.Else():
                m.d.sync += self.count.eq(self.count + popcount(Cat(*incs)))  # a balanced tree: P can be hundreds
            for port in self.out:
                serve_register(m, port, spk, plan.word)
        return m


    def _wire_event_core(self, m, core, c: int, off: int, n: int) -> None:
        """Core ``c`` (neurons ``off`` .. ``off + n - 1``): its share of the run-time weight writes
        (its neurons start at a whole byte: ``off`` is a multiple of 8) and its pixel reads."""
        layer, opts = self.layer, self.opts
        if opts.writable or opts.spram:
            wr, b0 = self.wr, off * layer.bits // 8
            m.d.comb += [core.wr.col.eq(wr.col), core.wr.byte.eq(wr.byte - b0), core.wr.data.eq(wr.data),
                         core.wr.en.eq(wr.en & (wr.byte >= b0) & (wr.byte < b0 + -(-n * layer.bits // 8)))]
        if layer.input_kind == "pixels":
            wiring.connect(m, core=core.values, stage=wiring.flipped(self.values[c]))

    def _weights(self):
        """The layer's weights as its cores' memories hold them: 0/1 bits or b-bit integers, in
        the columns of its input store (:attr:`~bitsnn.hwplan.LayerPlan.weight_columns`)."""
        layer, lp = self.layer, self.lp
        wbits = layer.weight_bit_matrix() if layer.bits == 1 else layer.weights_int()
        if lp.input_layout is not None:  # after a convolution or a timed layer: the store's order (padding 0)
            wide = np.zeros((layer.n_out, lp.weight_columns), wbits.dtype)
            wide[:, lp.input_layout.step_layout.store_index()] = wbits
            wbits = wide
        return wbits

    def _elaborate_timed(self):
        """A hidden layer over time (:attr:`~bitsnn.hwplan.LayerPlan.timed`, event mode): timed
        :class:`EventCore` s with a bank of accumulators per input step (an event's step picks its
        bank), read out group by group, each group's T steps in turn, through the core's membrane
        lanes (:class:`~bitsnn.hw.neuron.MembraneLanes`); step t's spikes go into map t of the
        spike register (:attr:`~bitsnn.hwplan.LayerPlan.out_layout`)."""
        m = Module()
        layer, lp, plan, opts = self.layer, self.lp, self.plan, self.opts
        wbits = self._weights()
        lay = lp.out_layout
        npad = lay.step_layout.size
        spk = Signal(lay.size, name="spikes")
        cores = []
        for c, cp in enumerate(lp.cores):
            off, n = cp.first, cp.n
            core = EventCore(wbits[off:off + n], layer.thresholds[off:off + n], layer.compare[off:off + n],
                             lanes=plan.lanes, k=plan.k, input_kind=layer.input_kind, writable=opts.writable,
                             storage="spram" if opts.spram else "bram", bits=layer.bits, timed=True,
                             banks=lp.in_steps, steps=lp.out_steps, signed_input=lp.signed_in)
            self._wire_event_core(m, core, c, off, n)
            m.submodules[f"core{c}"] = core
            lanes = MembraneLanes(layer, core.lanes, core.groups, lp.membrane_bits, first=off, count=n,
                                  steps=lp.out_steps)
            fired = lanes.build(m, list(core.out_scores), core.out_group, core.out_step == 0, core.out_valid)
            cores.append((off, n, core, fired))
        fifo = self._router(m, plan.k)
        all_ready = Cat(*[core.events.ready for _, _, core, _ in cores]).all()
        m.d.comb += fifo.r.ready.eq(all_ready)
        payload = fifo.r.payload
        if lp.input_layout is not None and (lp.in_steps > 1 or lp.signed_in):  # (input, step[, sign]): the
            # core's weight row and bank (and the sign of a signed spike)
            payload = _split_step(m, payload, lp.input_layout, cores[0][2].beat, cores[0][2].i_bits)
        for _, _, core, _ in cores:
            m.d.comb += [core.events.payload.eq(payload), core.events.valid.eq(fifo.r.valid & all_ready)]
        self._done_when_all(m, [core for _, _, core, _ in cores])
        # step t's spikes of group g into map t; the count adds them up a cycle later (registered:
        # the popcount is not in series with the membrane lanes)
        incs = []
        for off, n, core, fired in cores:
            live = [Signal(name=f"fired{off}_{j}") for j in range(core.lanes)]
            for j, f in enumerate(fired):
                m.d.sync += live[j].eq((f[0] | f[1] if lay.signs > 1 else f) & core.out_valid)
            incs.append(Cat(*live))
            with m.If(core.out_valid):
                with m.Switch(Cat(core.out_group, core.out_step) if lp.out_steps > 1 else core.out_group):
                    for t in range(lp.out_steps):
                        for g in range(core.groups):
                            case = g | (t << len(core.out_group)) if lp.out_steps > 1 else g
                            with m.Case(case):
                                for j in range(core.lanes):
                                    nn = g * core.lanes + j
                                    if nn >= n:
                                        continue
                                    if lay.signs > 1:  # a +1 spike at sign 0, a -1 spike at sign 1
                                        m.d.sync += [spk[lay.address(off + nn, 0, 0, t, sgn)].eq(fired[j][sgn])
                                                     for sgn in (0, 1)]
                                    else:
                                        m.d.sync += spk[t * npad + off + nn].eq(fired[j])
        with m.If(self.start):
            m.d.sync += self.count.eq(0)
        with m.Else():
            m.d.sync += self.count.eq(self.count + popcount(Cat(*incs)))
        for port in self.out:
            serve_register(m, port, spk, plan.word)
        return m

    def _done_when_all(self, m, cores):
        """``done``: every core has finished (they may finish in different cycles)."""
        flags = Signal(len(cores))
        running = Signal()
        now = Signal(len(cores))
        m.d.comb += now.eq(flags | Cat(*[core.done for core in cores]))
        with m.If(self.start):
            m.d.sync += [flags.eq(0), running.eq(1)]
        with m.Elif(running):
            m.d.sync += flags.eq(now)
            with m.If(now.all()):
                m.d.comb += self.done.eq(1)
                m.d.sync += running.eq(0)


def _split_step(m, beat, layout, core_beat, i_bits: int, *, keep_step: bool = True):
    """A router beat over ``layout``'s T maps, each event's address as a core takes it: the store
    address of the same input at one step (``i_bits`` wide), then (``keep_step``: a timed core's
    bank) the step; without it, an output layer's weight row alone; then, in a signed store, the
    sign (1: a -1 spike)."""
    out = Signal(core_beat)
    lo = layout.cbits
    s_hi = lo + layout.sbits
    hi = s_hi + layout.tbits
    for j in range(len(beat.addr)):
        a = beat.addr[j]
        row = field(Cat(a[:lo], a[hi:]), i_bits)
        parts = [row] + ([a[s_hi:hi]] if keep_step else []) + ([a[lo:s_hi]] if layout.sbits else [])
        m.d.comb += out.addr[j].eq(Cat(*parts) if len(parts) > 1 else row)
    m.d.comb += [out.count.eq(beat.count), out.last.eq(beat.last)]
    return out


class ConvStage(_Stage):
    """A ``binary_conv2d`` or ``int_conv2d`` layer: its core writes the pooled maps into the output store that
    ``out`` serves. An event stage (:class:`~bitsnn.hw.conv.ConvCore`) takes its input events
    from a router; a window stage (:class:`~bitsnn.hw.conv.WindowCore`) reads the input store
    through ``src`` itself and counts the input spikes (``seen``) at its centre taps. An OR pool
    writes a position up to four times, so the stage cannot count its own spikes: the next
    stage does."""

    counts_spikes = False

    def elaborate(self, platform):
        m = Module()
        window = self.lp.conv.engine == "window"
        core = (WindowCore if window else ConvCore)(self.layer, self.lp.conv, word=self.plan.word)
        m.submodules.core = core
        m.submodules.store = store = memory.Memory(shape=self.plan.word, depth=core.out_words, init=[])
        swp = store.write_port(granularity=1)
        m.d.comb += [swp.addr.eq(core.out.addr), swp.data.eq(core.out.data), swp.en.eq(core.out.en),
                     core.start.eq(self.start), self.done.eq(core.done)]
        if window:
            wiring.connect(m, core=core.src, stage=wiring.flipped(self.src[0]))
            if self.opts.count_events:
                m.d.comb += self.seen.eq(core.seen)
        else:
            if self.layer.input_kind == "pixels":
                wiring.connect(m, core=core.values, stage=wiring.flipped(self.values[0]))
            fifo = self._router(m, 1)
            wiring.connect(m, fifo=fifo.r, core=core.events)
        for port in self.out:
            serve_memory(m, port, store.read_port())
        m.d.comb += self.count.eq(Const(0))
        return m


class GapStage(_Stage):
    """A ``global_sum_pool`` head (ALBSNN's): a router scans the input maps' store, every step's,
    and each spike event adds one to its class's score counter; no weights, no neurons.

    An event's class is its channel (the address's low field, :class:`~bitsnn.hwplan.MapLayout`)
    divided by the channels per class, a table of at most ``2^cbits`` entries, registered; the
    counter adds it the next cycle. The stage takes a beat every cycle, as an event core with one
    lane group does, and raises ``done`` as one does: 4 cycles after it takes the beat with
    ``last`` (the scores are complete 2 cycles after it), so its cycles are an event layer's with
    G = 1 (:meth:`~bitsnn.hwplan.LayerPlan.event_cycles`). The counters are the scores: cleared at
    ``start``, rotated for the argmax."""

    def elaborate(self, platform):
        m = Module()
        layer, lay = self.layer, self.lp.input_layout
        C, n = layer.in_shape[0], layer.n_out
        fifo = self._router(m, 1)
        beat = fifo.r.payload
        m.d.comb += fifo.r.ready.eq(1)
        take = Signal()
        m.d.comb += take.eq(fifo.r.valid & (beat.count != 0))
        inc = Signal(n, name="inc")  # the class of the event taken the cycle before, one-hot
        m.d.sync += inc.eq(0)
        with m.If(take):
            if lay.cbits:
                with m.Switch(beat.addr[0][:lay.cbits]):
                    for c in range(C):
                        with m.Case(c):
                            m.d.sync += inc.eq(1 << (c // layer.group))
            else:
                m.d.sync += inc.eq(1)
        with m.If(self.start):
            m.d.sync += [sc.eq(0) for sc in self.scores]
        with m.Elif(self.rotate):
            m.d.sync += [self.scores[j].eq(self.scores[(j + 1) % n]) for j in range(n)]
        with m.Else():
            m.d.sync += [self.scores[j].eq(self.scores[j] + inc[j]) for j in range(n)]
        # done 4 cycles after the last beat is taken, as an event core's with one lane group
        last = Signal(4, name="last")
        m.d.sync += last.eq(Cat(fifo.r.valid & beat.last, last[:-1]))
        m.d.comb += [self.done.eq(last[-1]), self.count.eq(Const(0))]
        return m


def stage_class(kind: str) -> type:
    """The stage class of a layer kind (its ``stage`` part, :mod:`bitsnn.kinds`)."""
    return part(kind, "stage")


def stage_for(layer, plan: HardwarePlan, l: int, opts: StageOptions) -> _Stage:
    """The stage of ``layer`` (layer ``l`` of ``plan``'s model)."""
    return stage_class(layer.kind)(layer, plan, l, opts)
