"""The whole network: input buffer, per-layer spike routers, FIFOs and cores, result stream.

Port contract: docs/accelerator-interface.md. Architecture and the cycle model: docs/hardware.md;
the exact cycle count is ``bitsnn.sim.cycles.predict_cycles``.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitsnn.hwmodel import HardwareModel
from bitsnn.hwplan import MODES, HardwarePlan, ceil_log2, split_layer

from .arith import field, popcount
from .conv import ConvCore
from .core import DenseCore, EventCore
from .ports import serve_memory, serve_register
from .router import EventFIFO, SpikeRouter, event_layout, quiet_on_error

__all__ = ["Accelerator", "MODES", "split_layer", "weights_port_signature"]

def weights_port_signature(hwmodel) -> wiring.Signature:
    """The Accelerator's run-time weight write port: one byte per ``en`` strobe, ignored while
    ``busy``, written two cycles after the strobe. ``layer``; ``col``: input i of that layer; ``byte``: b, the weights of input i to
    neurons 8b..8b+7 (bit t = neuron 8b+t, 1 = +1), as ``protocol.weight_columns`` lays them out."""
    L = len(hwmodel.layers)
    return wiring.Signature({
        "layer": Out(range(max(2, L))),
        "col": Out(range(max(2, max(l.n_in for l in hwmodel.layers)))),
        "byte": Out(range(max(2, max(-(-l.n_out // 8) for l in hwmodel.layers)))),
        "data": Out(8),
        "en": Out(1),
    })


def _weights_layout(hwmodel) -> data.StructLayout:
    """The fields of :func:`weights_port_signature` as a register layout."""
    return data.StructLayout({name: member.shape for name, member in weights_port_signature(hwmodel).members.items()})


class Accelerator(wiring.Component):
    """A binary SNN inference engine generated from a :class:`bitsnn.hwmodel.HardwareModel`.

    Parameters
    ----------
    hwmodel : HardwareModel
    mode : "event" or "dense"
        event: routers scan each spike vector in W-bit chunks (one cycle per all-zero chunk) and
        feed address events through a FIFO to :class:`EventCore` s (G = ceil(n/P) cycles per event);
        dense: :class:`DenseCore` s read every W-bit input word against P weight words per cycle.
    lanes : int
        P, neurons updated per cycle by one core (each core uses min(P, its neurons)).
    word : int
        W: the dense input word width, and the event-mode router chunk width.
    k : int
        Events per router beat (event mode; 1..W).
    max_neurons_per_core : int or None
        Split a layer into cores of at most this many neurons (events are broadcast to all cores of
        the layer; the layer's spike vector is their concatenation). None: one core per layer.
    fifo_depth : int
        Depth (>= 3) of each router-to-core event FIFO (event mode); a depth-2 SyncFIFOBuffered
        cannot pass a beat every cycle, which the exact cycle model relies on.
    accumulators : "auto", "registers" or "memory"
        Event mode: where an :class:`EventCore` keeps its accumulators. "registers": one per neuron,
        the spike is its sign bit (no threshold ROM, no comparators, no spike register; the iCE40
        choice, where a G-deep wide memory becomes flip-flops). "memory": a G-deep memory, LUT RAM
        on ECP5 (much cheaper there for wide layers). "auto": "memory" for an ECP5 platform,
        "registers" otherwise (iCE40, simulation, Verilog export). Same cycles, same results.
    writable : bool
        Event mode: give every weight memory a write port and the Accelerator a ``weights`` port
        (byte writes addressed by layer, input and fan-out byte; see docs/accelerator-interface.md),
        so the host can replace the weights at run time (the UART command WRITE_WEIGHTS).
    spram_layers : iterable of int
        Layers whose weights live in iCE40 UltraPlus SPRAM (:mod:`bitsnn.hw.wmem`): not initialised
        by the bitstream, so they must be written through ``weights`` before the first run. Implies
        ``writable``. Elsewhere (simulation, Verilog) such a layer's memory powers up at zero.
    monitor : bool
        Generate the ``events`` tap (a k=1 router per hidden layer scanning its finished spike
        vector, in parallel with later layers; ``pixels.ready`` waits for it). False: the tap never
        fires and costs no logic.

    Ports: see docs/accelerator-interface.md (``pixels``, ``result``, ``events``, ``busy``).
    """

    @quiet_on_error
    def __init__(self, hwmodel, *, mode="event", lanes=32, word=32, k=1, max_neurons_per_core=None,
                 fifo_depth=4, monitor=True, accumulators="auto", writable=False, spram_layers=()):
        if not isinstance(hwmodel, HardwareModel):
            raise TypeError(f"hwmodel must be a bitsnn.hwmodel.HardwareModel, not {hwmodel!r:.80}")
        # the plan checks mode, lanes, word, k, max_neurons_per_core and fifo_depth
        self.hw = HardwarePlan.of(hwmodel, mode=mode, lanes=lanes, word=word, k=k,
                                  max_neurons_per_core=max_neurons_per_core, fifo_depth=fifo_depth)
        if accumulators not in ("auto", "registers", "memory"):
            raise ValueError(f"accumulators must be 'auto', 'registers' or 'memory', not {accumulators!r}")
        self.accumulators = accumulators
        try:
            self.spram_layers = frozenset(int(l) for l in spram_layers)
        except (TypeError, ValueError):
            raise TypeError(f"spram_layers must be an iterable of layer indices, not {spram_layers!r}") from None
        if bad := sorted(l for l in self.spram_layers if not 0 <= l < len(hwmodel.layers)):
            raise ValueError(f"spram_layers {bad}: the model has layers 0..{len(hwmodel.layers) - 1}")
        self.writable = bool(writable) or bool(self.spram_layers)
        if self.writable and self.hw.has_conv:
            raise ValueError("run-time weight writes (writable, spram_layers) are not built for convolutions yet")
        if self.writable and mode != "event":
            raise ValueError("run-time weight writes (writable, spram_layers) need mode='event'")
        if self.writable and max_neurons_per_core is not None and max_neurons_per_core % 8:
            raise ValueError(f"run-time weight writes need max_neurons_per_core a multiple of 8, not {max_neurons_per_core}")
        self.model = hwmodel
        self.mode, self.lanes, self.word, self.k = mode, lanes, word, k
        self.max_neurons_per_core, self.fifo_depth, self.monitor = max_neurons_per_core, fifo_depth, bool(monitor)
        if self.writable and lanes % 8 | (lanes // 8) & (lanes // 8 - 1) and \
                any(c.n > lanes for lp in self.hw.layers for c in lp.cores):
            raise ValueError(f"run-time weight writes need lanes = 8 x a power of two where a core has more "
                             f"neurons than lanes, not {lanes}")
        taps = [self.hw.tap_size(l) for l in range(len(hwmodel.hidden_layers))]
        self.event_layout = event_layout(len(taps), max(taps, default=1))
        ports = {
            "pixels": In(stream.Signature(unsigned(8))),
            "result": Out(stream.Signature(unsigned(32))),
            "events": Out(stream.Signature(self.event_layout, always_ready=True)),
            "busy": Out(1),
        }
        if self.writable:
            ports["weights"] = In(weights_port_signature(hwmodel))
        super().__init__(ports)
        # always_ready makes events.ready a Const, which verilog.convert cannot list as a port;
        # a Signal initialised high (and ignored by the design) keeps the signature and converts.
        self.events.ready = Signal(1, init=1, name="events__ready")

    @property
    def max_cycles(self) -> int:
        """An upper bound of the cycle count: the cycle counter's range (:attr:`HardwarePlan.max_cycles`)."""
        return self.hw.max_cycles

    @property
    def n_result_words(self) -> int:
        return self.hw.n_result_words

    def accumulator_style(self, platform) -> str:
        """"registers" or "memory" (see ``accumulators``) for this platform."""
        if self.accumulators != "auto":
            return self.accumulators
        family = getattr(platform, "family", None)
        return "memory" if isinstance(family, str) and family.lower() == "ecp5" else "registers"

    def elaborate(self, platform):
        m = Module()
        model, W, P, mode = self.model, self.word, self.lanes, self.mode
        acc_style = self.accumulator_style(platform)
        reg_spikes = mode == "event" and acc_style == "registers"
        layers = model.layers
        L = len(layers)
        n0 = model.n_inputs
        wn0 = -(-n0 // W)
        pixels_in = model.input_encoding == "pixels"

        # ---- input buffer ------------------------------------------------------------------
        accept = Signal()
        m.d.comb += accept.eq(self.pixels.valid & self.pixels.ready)
        x = self.pixels.payload
        pi = Signal(range(max(2, n0)))
        last_pixel = pi == n0 - 1
        lay0 = self.hw.layers[0].input_layout  # the first layer's map store (a convolution), or None
        if lay0 is None:
            wpos = Signal(range(max(2, W)))
            widx = Signal(range(max(2, wn0)))
            word_end = (wpos == W - 1) | last_pixel
        else:
            # pixel (y, x) goes to bit ((y << wbits) | x) of the store: rows padded to a power of two
            wn0 = -(-lay0.size // W)
            lw = ceil_log2(W)
            cx = Signal(range(max(2, lay0.width)), name="pixel_x")
            cy = Signal(range(max(2, lay0.height)), name="pixel_y")
            paddr = Signal(range(max(2, lay0.size)), name="pixel_addr")
            nxt = Signal(len(paddr) + 1)
            m.d.comb += [paddr.eq(Cat(field(cx, lay0.wbits), cy)),
                         nxt.eq(Mux(cx == lay0.width - 1, Cat(field(Const(0, 1), lay0.wbits), cy + 1), paddr + 1))]
            wpos = Signal(range(max(2, W)))
            widx = Signal(range(max(2, wn0)))
            m.d.comb += [wpos.eq(paddr[:lw]), widx.eq(paddr >> lw)]
            word_end = last_pixel | ((nxt >> lw) != (paddr >> lw))
            with m.If(accept):
                with m.If(last_pixel):
                    m.d.sync += [cx.eq(0), cy.eq(0)]
                with m.Elif(cx == lay0.width - 1):
                    m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.Else():
                    m.d.sync += cx.eq(cx + 1)
        with m.If(accept):
            with m.If(last_pixel):
                m.d.sync += pi.eq(0)
                if lay0 is None:
                    m.d.sync += [wpos.eq(0), widx.eq(0)]
            with m.Else():
                m.d.sync += pi.eq(pi + 1)
                if lay0 is None:
                    with m.If(wpos == W - 1):
                        m.d.sync += [wpos.eq(0), widx.eq(widx + 1)]
                    with m.Else():
                        m.d.sync += wpos.eq(wpos + 1)
        bitmap = pixmem = None
        if mode == "event" or not pixels_in:
            bit = (x != 0) if pixels_in else (x >= model.input_threshold)
            m.submodules.bitmap = bitmap = memory.Memory(shape=W, depth=wn0, init=[])
            bwp = bitmap.write_port()
            bword = Signal(W)
            nw = Signal(W)
            m.d.comb += nw.eq(Cat(*[((wpos != 0) & bword[i]) for i in range(W)]))
            m.d.comb += nw.bit_select(wpos, 1).eq(bit)
            m.d.comb += [bwp.addr.eq(widx), bwp.data.eq(nw), bwp.en.eq(accept & word_end)]
            with m.If(accept):
                m.d.sync += bword.eq(nw)
        if pixels_in:
            if mode == "event":
                m.submodules.pixmem = pixmem = memory.Memory(shape=8, depth=lay0.size if lay0 else n0, init=[])
                pwp = pixmem.write_port()
                m.d.comb += [pwp.addr.eq(pi if lay0 is None else paddr), pwp.data.eq(x), pwp.en.eq(accept)]
            else:
                m.submodules.pixmem = pixmem = memory.Memory(shape=8 * W, depth=wn0, init=[])
                pwp = pixmem.write_port()
                pword = Signal(8 * W)
                npw = Signal(8 * W)
                m.d.comb += npw.eq(Cat(*[(wpos != 0).replicate(8) & pword[8 * i:8 * i + 8] for i in range(W)]))
                m.d.comb += npw.word_select(wpos, 8).eq(x)
                m.d.comb += [pwp.addr.eq(widx), pwp.data.eq(npw), pwp.en.eq(accept & word_end)]
                with m.If(accept):
                    m.d.sync += pword.eq(npw)

        # ---- layer state ---------------------------------------------------------------------
        # a hidden dense layer's spikes live in a register; a convolution's in a map store (memory)
        spk = [None if l.kind == "binary_conv2d" else Signal(l.n_out, name=f"spikes{i}")
               for i, l in enumerate(layers[:-1])]
        stores = [None] * L
        cnt = [Signal(range(l.n_out + 1), name=f"count{i}") for i, l in enumerate(layers[:-1])]
        a_out = self.hw.score_bits
        scores = [Signal(signed(a_out), name=f"score{j}") for j in range(model.num_classes)]
        start = [Signal(name=f"start{i}") for i in range(L)]

        def connect_source(l, port):
            """Serve ``port`` the input vector of layer l: the input buffer, or layer l-1's spikes."""
            if l == 0:
                serve_memory(m, port, (bitmap if (mode == "event" or not pixels_in) else pixmem).read_port())
            elif stores[l - 1] is not None:
                serve_memory(m, port, stores[l - 1].read_port())
            else:
                serve_register(m, port, spk[l - 1], W)

        wreg = None
        if self.writable:  # the weights port, registered (a write reaches its memory 2 cycles later)
            wreg = Signal(_weights_layout(model), name="wreg")
            m.d.sync += [wreg.layer.eq(self.weights.layer), wreg.col.eq(self.weights.col),
                         wreg.byte.eq(self.weights.byte), wreg.data.eq(self.weights.data),
                         wreg.en.eq(self.weights.en & ~self.busy)]
        cores_of = []
        routers = []
        for l, layer in enumerate(layers):
            lp = self.hw.layers[l]
            if lp.conv is not None:
                core = ConvCore(layer, lp.conv, word=W)
                m.submodules[f"conv{l}"] = core
                stores[l] = store = memory.Memory(shape=W, depth=core.out_words, init=[])
                m.submodules[f"store{l}"] = store
                swp = store.write_port(granularity=1)
                m.d.comb += [swp.addr.eq(core.out.addr), swp.data.eq(core.out.data), swp.en.eq(core.out.en),
                             core.start.eq(start[l])]
                if layer.input_kind == "pixels":
                    serve_memory(m, core.values, pixmem.read_port())
                router = SpikeRouter(lp.n_in_store, chunk=W, k=1)
                fifo = EventFIFO(router.layout, depth=self.fifo_depth)
                m.submodules[f"router{l}"], m.submodules[f"fifo{l}"] = router, fifo
                m.d.comb += router.start.eq(start[l])
                connect_source(l, router.rd)
                wiring.connect(m, router=router.beats, fifo=fifo.w)
                wiring.connect(m, fifo=fifo.r, core=core.events)
                routers.append(router)
                cores_of.append([core])
                continue
            wbits = layer.weight_bit_matrix()
            if lp.input_layout is not None:  # after a convolution: weights in the map store's order
                wide = np.zeros((layer.n_out, lp.n_in_store), np.uint8)
                wide[:, lp.input_layout.store_index()] = wbits
                wbits = wide
            cores = []
            for c, (off, n) in enumerate((cp.first, cp.n) for cp in self.hw.layers[l].cores):
                th = cm = None
                if not layer.is_output:
                    th, cm = layer.thresholds[off:off + n], layer.compare[off:off + n]
                if mode == "event":
                    core = EventCore(wbits[off:off + n], th, cm, lanes=P, k=self.k, input_kind=layer.input_kind,
                                     accumulators=acc_style, writable=self.writable,
                                     storage="spram" if l in self.spram_layers else "bram")
                    if self.writable:
                        wp, b0 = wreg, off // 8
                        m.d.comb += [core.wr.col.eq(wp.col), core.wr.byte.eq(wp.byte - b0), core.wr.data.eq(wp.data),
                                     core.wr.en.eq(wp.en & (wp.layer == l) & (wp.byte >= b0)
                                                   & (wp.byte < b0 + -(-n // 8)))]
                else:
                    core = DenseCore(wbits[off:off + n], th, cm, lanes=P, word=W, input_kind=layer.input_kind)
                m.submodules[f"core{l}_{c}"] = core
                cores.append((off, n, core))
                if mode == "dense":
                    m.d.comb += core.start.eq(start[l])
                    connect_source(l, core.inp)
                elif layer.input_kind == "pixels":
                    serve_memory(m, core.values, pixmem.read_port())
            if mode == "event":
                router = SpikeRouter(lp.n_in_store, chunk=W, k=self.k)
                fifo = EventFIFO(router.layout, depth=self.fifo_depth)
                m.submodules[f"router{l}"] = router
                m.submodules[f"fifo{l}"] = fifo
                m.d.comb += router.start.eq(start[l])
                connect_source(l, router.rd)
                wiring.connect(m, router=router.beats, fifo=fifo.w)
                all_ready = Cat(*[core.events.ready for _, _, core in cores]).all()
                m.d.comb += fifo.r.ready.eq(all_ready)
                for _, _, core in cores:
                    m.d.comb += [core.events.payload.eq(fifo.r.payload),
                                 core.events.valid.eq(fifo.r.valid & all_ready)]
                routers.append(router)
            # Results of each core into the spike register / scores. An EventCore's accumulators keep
            # their sign bits (its ``spikes``) until its next input vector starts, which is after
            # every reader of this layer's spikes is done: they are the spike register.
            incs = []
            if reg_spikes and not layer.is_output:
                m.d.comb += spk[l].eq(Cat(*[core.spikes for _, _, core in cores]))
            for off, n, core in cores:
                if reg_spikes and not layer.is_output:
                    incs.append(Cat(*[core.out_spikes[j] & core.out_valid for j in range(core.lanes)]))
                    continue
                with m.If(core.out_valid):
                    with m.Switch(core.out_group):
                        for g in range(core.groups):
                            with m.Case(g):
                                for j in range(core.lanes):
                                    nn = g * core.lanes + j
                                    if nn >= n:
                                        continue
                                    if layer.is_output:
                                        m.d.sync += scores[off + nn].eq(core.out_scores[j])
                                    else:
                                        m.d.sync += spk[l][off + nn].eq(core.out_spikes[j])
                if not layer.is_output:
                    incs.append(Cat(*[core.out_spikes[j] & core.out_valid for j in range(core.lanes)]))
            if not layer.is_output:
                bits = Cat(*incs)
                m.d.sync += cnt[l].eq(cnt[l] + popcount(bits))  # a balanced tree: P can be hundreds
            cores_of.append([core for _, _, core in cores])
        # a convolution's spike count: the events the next layer's router emits from its store
        for l in range(L - 1):
            if stores[l] is not None:
                beats = routers[l + 1].beats
                with m.If(beats.valid & beats.ready):
                    m.d.sync += cnt[l].eq(cnt[l] + beats.payload.count)

        # ---- events monitor tap ------------------------------------------------------------
        mon_busy = Signal()
        # every hidden layer: a dense one's spike register, a convolution's store (a second read
        # port: on a board, where monitor=False, the store keeps one)
        monitored = list(range(L - 1)) if self.monitor else []
        if monitored:
            pending = Signal(L - 1)
            mons = {}
            for l in monitored:
                mon = SpikeRouter(self.hw.tap_size(l), chunk=W, k=1)
                m.submodules[f"monitor{l}"] = mon
                if stores[l] is not None:
                    serve_memory(m, mon.rd, stores[l].read_port())
                else:
                    serve_register(m, mon.rd, spk[l], W)
                m.d.comb += mon.beats.ready.eq(1)
                mons[l] = mon
            running = Cat(*[mon.busy for mon in mons.values()]).any()
            for l, mon in mons.items():
                go = pending[l] & ~running & ((pending & ((1 << l) - 1)) == 0)
                m.d.comb += mon.start.eq(go)
                with m.If(go):
                    m.d.sync += pending[l].eq(0)
                with m.If(mon.busy):
                    m.d.comb += [self.events.valid.eq(mon.beats.valid & (mon.beats.payload.count == 1)),
                                 self.events.payload.layer.eq(l),
                                 self.events.payload.addr.eq(mon.beats.payload.addr[0])]
            m.d.comb += mon_busy.eq(pending.any() | running)
        else:
            pending = None

        # ---- sequencer -----------------------------------------------------------------------
        cyc = Signal(range(self.max_cycles + 1))
        C = model.num_classes
        ai = Signal(range(max(2, C)))
        best = Signal(signed(a_out))
        bidx = Signal(range(max(2, C)))
        ri = Signal(range(self.n_result_words))
        sc = Array(scores)
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.pixels.ready.eq(~mon_busy)
                with m.If(accept):
                    m.d.sync += [c.eq(0) for c in cnt]
                    with m.If(last_pixel):
                        m.d.sync += cyc.eq(1)
                        m.next = "START0"
            for l in range(L):
                cores = cores_of[l]
                flags = Signal(len(cores), name=f"done_flags{l}")
                with m.State(f"START{l}"):
                    m.d.comb += [self.busy.eq(1), start[l].eq(1)]
                    m.d.sync += [cyc.eq(cyc + 1), flags.eq(0)]
                    m.next = f"WAIT{l}"
                with m.State(f"WAIT{l}"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += cyc.eq(cyc + 1)
                    now = flags | Cat(*[core.done for core in cores])
                    m.d.sync += flags.eq(now)
                    with m.If(now.all()):
                        if l < L - 1:
                            if pending is not None:
                                m.d.sync += pending[l].eq(1)
                            m.next = f"START{l + 1}"
                        else:
                            m.d.sync += ai.eq(0)
                            m.next = "ARGMAX"
            with m.State("ARGMAX"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += cyc.eq(cyc + 1)
                with m.If((ai == 0) | (sc[ai] > best)):
                    m.d.sync += [best.eq(sc[ai]), bidx.eq(ai)]
                m.d.sync += ai.eq(ai + 1)
                with m.If(ai == C - 1):
                    m.d.sync += ri.eq(0)
                    m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += [self.busy.eq(1), self.result.valid.eq(1)]
                words = [Signal(32, name="w_class"), Signal(32, name="w_cycles")]
                m.d.comb += [words[0].eq(bidx), words[1].eq(cyc)]
                for l in range(L - 1):
                    w_ = Signal(32, name=f"w_count{l}")
                    m.d.comb += w_.eq(cnt[l])
                    words.append(w_)
                for j in range(C):
                    w_ = Signal(32, name=f"w_score{j}")
                    m.d.comb += w_.eq(scores[j])
                    words.append(w_)
                m.d.comb += self.result.payload.eq(Array(words)[ri])
                with m.If(self.result.ready):
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri == len(words) - 1):
                        m.next = "LOAD"
        return m
