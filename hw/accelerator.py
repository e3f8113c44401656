"""The whole network: input buffer, per-layer spike routers, FIFOs and cores, result stream.

Port contract: docs/accelerator-interface.md. Architecture and the cycle model: docs/hardware.md;
the exact cycle count is ``bitsnn.sim.cycles.predict_cycles``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitsnn import kinds
from bitsnn.hwmodel import HardwareModel
from bitsnn.hwplan import (MODES, HardwarePlan, runtime_weights_problem, split_layer, write_columns,
                           write_lanes_problem)

from .inbuf import InputBuffer
from .router import SpikeRouter, event_layout, quiet_on_error
from .stage import StageOptions, n_src_readers, stage_class, stage_for

__all__ = ["Accelerator", "MODES", "split_layer", "weights_port_signature"]

def weights_port_signature(hwmodel) -> wiring.Signature:
    """The Accelerator's run-time weight write port: one byte per ``en`` strobe, ignored while
    ``busy``, written two cycles after the strobe. ``layer``; ``col``: weight-memory column i of
    that layer; ``byte``: b, byte b of column i's fan-out (+-1 weights: bit t = neuron 8b+t, 1 = +1;
    b-bit weights: 8/b two's-complement fields), as ``protocol.write_column_bytes`` lays them out
    (the geometry: ``hwplan.write_columns``)."""
    L = len(hwmodel.layers)
    geo = write_columns(hwmodel)
    return wiring.Signature({
        "layer": Out(range(max(2, L))),
        "col": Out(range(max(2, max(c for c, _b in geo)))),
        "byte": Out(range(max(2, max(b for _c, b in geo)))),
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
    conv_engine : "auto", "event" or "window"
        The convolutions' stage (:data:`bitsnn.hwplan.CONV_ENGINES`): event-driven
        (:class:`~bitsnn.hw.conv.ConvCore`) or sliding-window (:class:`~bitsnn.hw.conv.WindowCore`,
        spike maps of at most W channels). "auto": the window for a convolution of spike maps of
        2..W channels, the event stage otherwise. Same spikes; the cycles differ.

    Ports: see docs/accelerator-interface.md (``pixels``, ``result``, ``events``, ``busy``).
    """

    @quiet_on_error
    def __init__(self, hwmodel, *, mode="event", lanes=32, word=32, k=1, max_neurons_per_core=None,
                 fifo_depth=4, monitor=True, accumulators="auto", writable=False, spram_layers=(), conv_engine="auto"):
        if not isinstance(hwmodel, HardwareModel):
            raise TypeError(f"hwmodel must be a bitsnn.hwmodel.HardwareModel, not {hwmodel!r:.80}")
        # the plan checks mode, lanes, word, k, max_neurons_per_core and fifo_depth
        self.hw = HardwarePlan.of(hwmodel, mode=mode, lanes=lanes, word=word, k=k,
                                  max_neurons_per_core=max_neurons_per_core, fifo_depth=fifo_depth,
                                  conv_engine=conv_engine)
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
        for l in sorted(self.spram_layers):
            if (why := runtime_weights_problem(hwmodel.layers[l], l)):
                raise ValueError(f"spram_layers [{l}]: {why}")
        if self.writable:  # every dense layer is writable then
            for l, layer in enumerate(hwmodel.layers):
                if kinds.of(layer).takes_runtime_weights and (why := runtime_weights_problem(layer, l)):
                    raise ValueError(f"run-time weight writes: {why}")
        if self.writable and mode != "event":
            raise ValueError("run-time weight writes (writable, spram_layers) need mode='event'")
        if self.writable and max_neurons_per_core is not None and max_neurons_per_core % 8:
            raise ValueError(f"run-time weight writes need max_neurons_per_core a multiple of 8, not {max_neurons_per_core}")
        self.model = hwmodel
        self.mode, self.lanes, self.word, self.k = mode, lanes, word, k
        self.max_neurons_per_core, self.fifo_depth, self.monitor = max_neurons_per_core, fifo_depth, bool(monitor)
        self.conv_engine = conv_engine
        if self.writable and (why := write_lanes_problem(hwmodel, lanes, self.hw)):
            raise ValueError(why)
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
        model, plan, W = self.model, self.hw, self.word
        layers = model.layers
        L = len(layers)
        pixels_in = model.input_encoding == "pixels"
        opts = [StageOptions(accumulators=self.accumulator_style(platform), writable=self.writable,
                             spram=l in self.spram_layers,
                             n_readers=(0 if l == L - 1 else n_src_readers(plan, l + 1) + int(self.monitor)),
                             count_events=l > 0 and not stage_class(layers[l - 1].kind).counts_spikes)
                for l in range(L)]
        stages = [stage_for(layer, plan, l, opts[l]) for l, layer in enumerate(layers)]
        for l, stage in enumerate(stages):
            m.submodules[f"layer{l}"] = stage

        # ---- input buffer ------------------------------------------------------------------
        m.submodules.inbuf = inbuf = InputBuffer(plan, input_threshold=model.input_threshold, pixels_in=pixels_in,
                                                 n_words=len(stages[0].src), n_values=len(stages[0].values))
        accept = Signal()
        m.d.comb += [accept.eq(self.pixels.valid & self.pixels.ready),
                     inbuf.data.eq(self.pixels.payload), inbuf.en.eq(accept)]
        last_pixel = inbuf.last

        # ---- stages: each reads the one before it (its spikes, or the input buffer) ----------
        for p_src, p_buf in zip(stages[0].src, inbuf.words):
            wiring.connect(m, p_src, p_buf)
        for p_val, p_buf in zip(stages[0].values, inbuf.values):
            wiring.connect(m, p_val, p_buf)
        for l in range(1, L):
            for p_src, p_out in zip(stages[l].src, stages[l - 1].out):
                wiring.connect(m, p_src, p_out)
        start = [stage.start for stage in stages]
        if self.writable:  # the weights port, registered (a write reaches its memory 2 cycles later)
            wreg = Signal(_weights_layout(model), name="wreg")
            m.d.sync += [wreg.layer.eq(self.weights.layer), wreg.col.eq(self.weights.col),
                         wreg.byte.eq(self.weights.byte), wreg.data.eq(self.weights.data),
                         wreg.en.eq(self.weights.en & ~self.busy)]
            for l, (stage, (cols, nbytes)) in enumerate(zip(stages, write_columns(model))):
                if cols:  # a convolution's stage has no weight writes
                    m.d.comb += [stage.wr.col.eq(wreg.col), stage.wr.byte.eq(wreg.byte), stage.wr.data.eq(wreg.data),
                                 stage.wr.en.eq(wreg.en & (wreg.layer == l) & (wreg.byte < nbytes))]
        # the spike count of each hidden layer: its own, or the events the next router emitted
        cnt = [stages[l].count if stages[l].counts_spikes else stages[l + 1].seen for l in range(L - 1)]
        scores = list(stages[-1].scores)
        a_out = plan.score_bits

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
                wiring.connect(m, mon.rd, stages[l].out[-1])
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
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.pixels.ready.eq(~mon_busy)
                with m.If(accept):
                    with m.If(last_pixel):
                        m.d.sync += cyc.eq(1)
                        m.next = "START0"
            for l in range(L):
                with m.State(f"START{l}"):
                    m.d.comb += [self.busy.eq(1), start[l].eq(1)]
                    m.d.sync += cyc.eq(cyc + 1)
                    m.next = f"WAIT{l}"
                with m.State(f"WAIT{l}"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += cyc.eq(cyc + 1)
                    with m.If(stages[l].done):
                        if l < L - 1:
                            if pending is not None:
                                m.d.sync += pending[l].eq(1)
                            m.next = f"START{l + 1}"
                        else:
                            m.d.sync += ai.eq(0)
                            m.next = "ARGMAX"
            with m.State("ARGMAX"):
                # score ai is in scores[0]: the output stage rotates them once a cycle, C times in
                # all, so they are back in place for RESULT (no C:1 multiplexer on the compare's path)
                m.d.comb += [self.busy.eq(1), stages[-1].rotate.eq(1)]
                m.d.sync += cyc.eq(cyc + 1)
                with m.If((ai == 0) | (scores[0] > best)):
                    m.d.sync += [best.eq(scores[0]), bidx.eq(ai)]
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
