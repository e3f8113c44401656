"""The hardware plan: every fact about the generated hardware's shape, computed once (NumPy only).

A :class:`HardwarePlan` is what :class:`bitsnn.hw.Accelerator` generates for a hardware model with
given generation parameters (mode, lanes P, word W, events per beat k, neurons per core, FIFO
depth): how each layer is split over cores, each core's lanes and lane groups, the accumulator
widths, the cycle constants, the result words. The Amaranth design (hw/), the cycle model
(sim/cycles.py), the resource estimate (hw/estimate.py), the report, the board builds and the
co-simulation all read these facts from here, so they cannot drift apart; nothing here imports
torch or amaranth.

Cycle constants (docs/hardware.md explains each cycle; sim/cycles.py the whole count):

- ``START`` = 1: the sequencer's START state of layer 0 is the first counted cycle;
- ``DENSE_LATENCY`` = 4: START + weight/input read + popcount register + accumulate-and-fire;
- ``EVENT_LEAD`` = 6: START, router FETCH and LOAD, first beat into the FIFO, the FIFO's
  2-cycle write-to-read latency;
- ``EVENT_TAIL`` = 2: accumulator read + compare register / ``done``;
- ``WINDOW_LATENCY`` = 4: a sliding-window convolution's last tap is read (1), its channels
  picked out and registered (1), accumulated (1), its spikes written with ``done`` high (1); the
  next layer's START follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import BitsnnError
from . import kinds
from .kinds import KINDS, part

__all__ = [
    "UnsupportedLayerError", "HARDWARE_KINDS", "check_supported",
    "MODES", "CONV_ENGINES", "START", "DENSE_LATENCY", "EVENT_LEAD", "EVENT_TAIL", "WINDOW_LATENCY", "MIN_FIFO_DEPTH",
    "MapLayout", "ConvPlan", "window_fits", "write_columns", "WRITABLE_WEIGHT_BITS", "runtime_weights_problem",
    "signed_bits", "membrane_bits", "membrane_adds", "membranes", "preact_bits", "acc_bits_for", "neuron_accumulator", "result_words", "split_layer", "DEFAULT_WORD", "default_lanes", "CorePlan", "LayerPlan", "HardwarePlan",
    "plan_dense", "plan_conv", "plan_gap", "timed", "output_layout",
]

#: the Accelerator's two layer engines: event-driven cores behind spike routers, or dense
#: AND-popcount cores that read every input word
MODES = ("event", "dense")

START = 1
DENSE_LATENCY = 4
EVENT_LEAD = 6
EVENT_TAIL = 2
WINDOW_LATENCY = 4
#: a convolution's two stages: event-driven (:class:`bitsnn.hw.conv.ConvCore`, an input event
#: updates the k x k output positions around it) or sliding-window (:class:`bitsnn.hw.conv.WindowCore`,
#: each output position reads its window, one kernel tap of C_in channels a cycle); "auto" picks
#: the window for a convolution of spike maps of 2..W channels (a convolution after a convolution)
CONV_ENGINES = ("auto", "event", "window")
#: a depth-2 SyncFIFOBuffered cannot pass a beat every cycle, which the cycle model relies on
MIN_FIFO_DEPTH = 3


#: layer kinds the Accelerator has a hardware stage for (:attr:`bitsnn.kinds.LayerKind.has_hardware`)
HARDWARE_KINDS = tuple(name for name, k in KINDS.items() if k.has_hardware)


class UnsupportedLayerError(BitsnnError, ValueError):
    """The model holds a layer kind the hardware has no stage for."""


def check_supported(model) -> None:
    """Raise :class:`UnsupportedLayerError` naming the first layer the hardware cannot run
    (before any simulation, build or report starts)."""
    for i, layer in enumerate(model.layers):
        if kinds.of(layer).name not in HARDWARE_KINDS:
            raise UnsupportedLayerError(
                f"layer {i} ({layer.name}) is {'an' if layer.kind[0] in 'aeiou' else 'a'} {layer.kind} layer, "
                "which has no hardware stage yet: "
                f"export and the golden model take it; sim, build, report and run need "
                f"{' and '.join(HARDWARE_KINDS)} layers only")
        nm = layer.neuron_model
        if not nm.has_hardware:
            raise UnsupportedLayerError(
                f"layer {i} ({layer.name}) has {nm.name} neurons, which have no hardware stage yet: export and the "
                f"golden model take them; sim, build, report and run need "
                f"{', '.join(n for n, m in kinds.NEURONS.items() if m.has_hardware)} neurons only")
    if model.default_time and not any(l.neuron_model.stateful for l in model.hidden_layers):
        return
    if not model.hidden_layers:
        raise UnsupportedLayerError(
            f"the model runs {model.timesteps} steps with no hidden layer, which has no hardware: its scores "
            "would be one step's; sim, build, report and run take a model over time with at least one hidden layer")
    if model.input_coding == "rate" and model.timesteps > MAX_RATE_STEPS:
        raise UnsupportedLayerError(
            f"the model runs {model.timesteps} steps of rate input; the hardware's rate generators write an "
            f"input's steps side by side into one word, so it takes at most {MAX_RATE_STEPS} steps")


def signed_bits(v: int) -> int:
    """Bits of the smallest two's-complement signal holding ``v``."""
    v = int(v)
    return (v if v >= 0 else -v - 1).bit_length() + 1


def membrane_bits(layer, steps: int) -> int:
    """Width of a stateful (``if``/``lif``) neuron's membrane over ``steps`` steps: signed bits of
    T*(R*2^shift + |b|) + theta for its widest neuron, R = ``layer.a_max``. No membrane gets
    beyond that (docs/hardware-model.md, "Time steps"), so it never needs to saturate."""
    r = layer.a_max << layer.shift
    bound = steps * (r + np.abs(layer.bias.astype(np.int64))) + layer.thresholds.astype(np.int64)
    return signed_bits(int(bound.max()))


def membrane_adds(layer) -> int:
    """Adds of one stateful neuron's step in the hardware (:func:`bitsnn.hw.neuron.membrane_update`),
    each of the membrane's width: the leak (``lif``), the input, the bias, the threshold of the
    last spike (reset ``subtract-next``), and V - theta (the compare, and the reset by subtraction)."""
    return int(layer.leak != 0) + 2 + int(layer.reset == "subtract-next") + 1


def membranes(layer) -> int:
    """How many membranes a layer keeps: one per neuron, or per output position and channel of a
    convolution (before its pool)."""
    return layer.compares


def preact_bits(a_max: int) -> int:
    """Signed width holding every pre-activation a in [-R, R], R = ``a_max``: the width of the
    adds an event costs (the report's energy model)."""
    return signed_bits(int(a_max))


def acc_bits_for(a_max: int) -> int:
    """Signed width holding every value in [-R-1, R+1], R = ``a_max`` (a layer's largest |a|):
    the width of a core's accumulators, scores and threshold fields."""
    return signed_bits(int(a_max) + 1)


def neuron_accumulator(threshold: int | None, compare: int | None, a_max: int) -> tuple[bool, int, int]:
    """(weight flip, initial value, width in bits) of one event-core neuron's accumulator.

    A hidden neuron's accumulator holds ``c * (a - theta)`` (``c`` its compare sign): it starts at
    ``-c * theta``, and a ``c = -1`` neuron's stored weights are inverted, so it fires exactly when
    the accumulator is >= 0 (its sign bit). An output neuron's (``threshold`` None) holds ``a``,
    from 0. Each is just wide enough for every value it can take: partial sums of ``a`` lie in
    [-R, R], R = ``a_max``. The generator (hw.core.EventCore) and the estimate both size with this."""
    if threshold is None:
        flip, init = False, 0
    else:
        c = int(compare)
        flip, init = c < 0, -c * int(threshold)
    return flip, init, max(signed_bits(init - a_max), signed_bits(init + a_max))


def result_words(n_hidden: int, n_classes: int) -> int:
    """Words an inference produces: class, cycles, one spike count per hidden layer, scores."""
    return 2 + n_hidden + n_classes


def split_layer(n_out: int, max_neurons_per_core: int | None) -> list[tuple[int, int]]:
    """[(first neuron, neuron count)] of each core of a layer; the first cores are the full ones."""
    cap = n_out if max_neurons_per_core is None else max_neurons_per_core
    return [(off, min(cap, n_out - off)) for off in range(0, n_out, cap)]


#: the word width of every design bitsnn generates for a board, ``bitsnn sim`` and ``bitsnn run``
#: (the input chunks of the event cores' zero skipping, the result words); a report takes it too
#: unless told otherwise
DEFAULT_WORD = 32


def default_lanes(model, *, writable: bool = False) -> int:
    """Event-core lanes the CLI tools generate for ``model`` when not told: 32, or for a widest
    hidden layer of 129..256 neurons the fewest lanes that keep it at 4 lane groups (an input
    spike costs a layer G cycles; register accumulators make lanes cheap on the iCE40). A design
    with run-time weight writes (``writable``) needs 8 x a power of two: the largest such count
    not above that. ``bitsnn build``, ``sim`` and ``report`` use it; a device reports its own
    lanes in INFO."""
    widest = max((l.n_out for l in model.hidden_layers), default=0)
    lanes = -(-widest // 4) if 128 < widest <= 256 else 32
    if writable and lanes > 8:
        lanes = 8 << ((lanes // 8).bit_length() - 1)
    return lanes


def ceil_log2(n: int) -> int:
    return max(0, int(n) - 1).bit_length()


#: bits per weight that run-time weight writes take: a byte holds whole weights
WRITABLE_WEIGHT_BITS = (1, 2, 4, 8)


def runtime_weights_problem(layer, index: int) -> str | None:
    """Why the weights of ``layer`` (layer ``index`` of its model) cannot be written at run time
    (SPRAM, WRITE_WEIGHTS), or None: a convolution's kernels stay in its ROM, and a byte must hold
    whole weights. The one statement of the rule: the accelerator, the build, the SPRAM choice and
    the protocol all ask it."""
    if not kinds.of(layer).takes_runtime_weights:
        return (f"layer {index} ({layer.name}) is a convolution, whose kernels stay in its ROM (only dense layers "
                "take run-time weights)")
    if layer.bits not in WRITABLE_WEIGHT_BITS:
        return (f"layer {index} ({layer.name}) has {layer.bits}-bit weights; run-time writes take "
                f"{', '.join(map(str, WRITABLE_WEIGHT_BITS[:-1]))} or {WRITABLE_WEIGHT_BITS[-1]}-bit weights")
    return None


def write_lanes_problem(model, lanes: int, plan: HardwarePlan | None = None) -> str | None:
    """Why a design of ``lanes`` lanes cannot take run-time weight writes (SPRAM, WRITE_WEIGHTS)
    into ``model``'s dense layers, or None. A written byte holds whole weights of one lane group:
    every such layer with a core of more neurons than lanes (without ``plan``: more neurons than
    lanes) needs lanes x bits = 8 x a power of two (8 lanes of +-1 weights, 2 of 4-bit ones). The
    one statement of the rule: the accelerator, the cores and the build's lane fitting ask it."""
    for index, layer in enumerate(model.layers):
        widest = max(c.n for c in plan.layers[index].cores) if plan is not None else layer.n_out
        if not kinds.of(layer).takes_runtime_weights or widest <= lanes:
            continue
        if (why := lane_group_bytes_problem(lanes, layer.bits)):
            return f"layer {index} ({layer.name}, {layer.n_out} neurons): {why}"
    return None


def lane_group_bytes_problem(lanes: int, bits: int) -> str | None:
    """Why a lane group of ``lanes`` ``bits``-bit weights is not whole bytes, a power of two of
    them (see :func:`write_lanes_problem`), or None."""
    gb, rem = divmod(int(lanes) * int(bits), 8)
    if rem or gb & (gb - 1):
        return (f"run-time weight writes need lanes x bits = 8 x a power of two, not {lanes} lanes of "
                f"{bits}-bit weights")
    return None


def write_columns(model) -> list[tuple[int, int]]:
    """Per layer, the geometry of run-time weight writes (WRITE_WEIGHTS): (columns, bytes per
    column). A dense layer's columns are its inputs in the order its weight memory holds them
    (the first dense layer after a convolution: the map store's addresses, :class:`MapLayout`,
    padding included; after a timed dense layer, its neurons padded to a power of two:
    :func:`output_layout`), each the layer's fan-out of that input packed little-endian, b bits a
    neuron (``layer.bits``; 1 for +-1 weights): ceil(n_out * b / 8) bytes. A convolution's kernels
    live in its stage's ROM and are not written at run time: (0, 0)."""
    out, prev = [], None
    for layer in model.layers:
        if not kinds.of(layer).takes_runtime_weights:
            out.append((0, 0))
        else:
            lay = output_layout(model, prev) if prev is not None else None
            cols = lay.step_layout.size if lay is not None else layer.n_in
            out.append((cols, -(-layer.n_out * layer.bits // 8)))
        prev = layer
    return out



@dataclass(frozen=True)
class MapLayout:
    """How the hardware stores a C x H x W map (a convolution's input or output spikes, or the
    image a convolution takes), at each of ``steps`` time steps: position by position, then step
    by step, channels innermost, each field padded to a power of two, so the bit address of
    (c, y, x) at step t is ``(((y << wbits) | x) << tbits | t) << cbits | c`` and a router's event
    address splits into its fields without division. Padding bits are 0. One step (``steps``
    1): no step field."""

    channels: int
    height: int
    width: int
    steps: int = 1
    #: 2 for signed spikes (``signed_if``): a sign bit between the step and the channel, a +1
    #: spike at sign 0 and a -1 spike at sign 1; 1 otherwise (no sign field)
    signs: int = 1

    @property
    def cbits(self) -> int:
        return ceil_log2(self.channels)

    @property
    def sbits(self) -> int:
        return ceil_log2(self.signs)

    @property
    def wbits(self) -> int:
        return ceil_log2(self.width)

    @property
    def tbits(self) -> int:
        return ceil_log2(self.steps)

    @property
    def size(self) -> int:
        """Bits of the store, padding included."""
        return self.height << (self.wbits + self.tbits + self.sbits + self.cbits)

    @property
    def step_layout(self) -> "MapLayout":
        """The same map at one step, unsigned (the columns of a weight memory that reads this store)."""
        return MapLayout(self.channels, self.height, self.width)

    def address(self, c, y, x, t=0, sign=0):
        return (((((y << self.wbits) | x) << self.tbits) | t) << self.sbits | sign) << self.cbits | c

    def store_index(self, sign: int = 0):
        """(T*C*H*W,) int64: the store address of each input in torch's flat order (channel, row,
        column), step after step (of its ``sign`` 1 spike, in a signed store)."""
        import numpy as np

        t, c, y, x = np.meshgrid(np.arange(self.steps), np.arange(self.channels), np.arange(self.height),
                                 np.arange(self.width), indexing="ij")
        return self.address(c.ravel(), y.ravel(), x.ravel(), t.ravel(), sign).astype(np.int64)

    def to_store(self, flat):
        """(B, T*C*H*W) values in torch's order, step after step -> (B, size) as the hardware
        stores them (a signed store: a -1 spike as a 1 at its sign 1 address)."""
        import numpy as np

        flat = np.asarray(flat).reshape(len(flat), -1)
        out = np.zeros((flat.shape[0], self.size), np.uint8 if self.signs > 1 else flat.dtype)
        if self.signs > 1:
            out[:, self.store_index(0)] = flat > 0
            out[:, self.store_index(1)] = flat < 0
        else:
            out[:, self.store_index()] = flat
        return out

    def from_store(self, stored):
        """The inverse of :meth:`to_store` for spikes: (B, size) 0/1 -> (B, T*C*H*W) in torch's
        order, int8 -1/0/+1 for a signed store."""
        import numpy as np

        stored = np.asarray(stored)
        if self.signs > 1:
            return stored[:, self.store_index(0)].astype(np.int8) - stored[:, self.store_index(1)].astype(np.int8)
        return stored[:, self.store_index()]


#: the most steps of ``rate`` input the hardware runs: an input's steps fill one 32-bit word at most
MAX_RATE_STEPS = 32


def input_layout(model) -> MapLayout | None:
    """How the input buffer stores the first layer's input over T steps of ``rate`` or ``given``
    coding (None for an input that is the same at every step: one map, or the flat vector): each
    input's T steps side by side (:class:`MapLayout`), so a rate generator per step writes them in
    one go. A convolution's maps ``MapLayout(C, H, W, T)``; a dense layer's vector
    ``MapLayout(1, n, 1, T)``: input i of step t at bit i * 2^ceil(log2 T) + t."""
    if model.static_input:
        return None
    first = model.layers[0]
    if kinds.of(first).input_is_map:
        return MapLayout(*first.in_shape, model.timesteps)
    return MapLayout(1, first.n_in, 1, model.timesteps)


def input_values(model) -> int:
    """Values the Accelerator's ``pixels`` stream takes per inference: the (cropped) image's
    pixels, or with ``given`` coding every step's spikes (T x inputs, as :func:`stream_inputs`)."""
    return _stream_values(model.n_inputs, model.timesteps, model.input_coding)


def _stream_values(n_inputs: int, steps: int, coding: str) -> int:
    return n_inputs * (steps if coding == "given" else 1)


def stream_inputs(model, x) -> np.ndarray:
    """(B, :func:`input_values`) uint8: what the Accelerator's ``pixels`` stream takes for each of a
    batch, in order. Images (or already cropped ones): their pixels (the input buffer thresholds
    spike input, and a rate generator compares them); ``given`` coding, x (B, T, *input_shape) 0/1:
    every step's spikes in the input store's order (:func:`input_layout`: position by position,
    each position's steps, each step's channels)."""
    if model.input_coding != "given":
        return model.prepare_images(x)
    s = model.step_inputs(x)
    s = s.reshape(s.shape[0], -1)  # torch's order, step after step
    return np.ascontiguousarray(s[:, np.argsort(input_layout(model).store_index(), kind="stable")])


def timed(model, layer) -> bool:
    """Whether hidden ``layer`` of ``model`` runs its neurons through the membrane update over the
    model's steps (:mod:`bitsnn.hw.neuron`): T > 1 steps, or a stateful neuron model."""
    return not layer.is_output and (model.timesteps > 1 or layer.neuron_model.stateful)


def output_layout(model, layer) -> MapLayout | None:
    """How the hardware stores hidden ``layer``'s output for the next stage: a convolution's pooled
    maps (T of them when :func:`timed`), a timed dense layer's T spike vectors
    (``MapLayout(n_out, 1, 1, T)``: neuron i of step t at bit t * 2^ceil(log2 n_out) + i), or None
    for a one-step dense layer's flat vector."""
    T = model.timesteps if timed(model, layer) else 1
    signs = 2 if layer.neuron_model.signed else 1
    if kinds.of(layer).output_is_map:
        return MapLayout(*layer.out_shape, T, signs)
    return MapLayout(layer.n_out, 1, 1, T, signs) if timed(model, layer) else None


@dataclass(frozen=True)
class ConvPlan:
    """A convolution's stage: P lanes over the output channels (padded to ``groups * lanes``, a
    power of two), G lane groups, and its ``engine``.

    ``"event"`` (:class:`bitsnn.hw.conv.ConvCore`): a ring of ``kernel`` output rows of
    accumulators. Cycles: ``EVENT_LEAD`` (the core takes the first beat in its last cycle, as an
    event core does) + Z (one per all-zero input chunk) + E * k*k * G (each input event updates the
    k x k output positions around it, G groups each; border taps take their cycle too) + H * W * G
    (every output row is flushed once: its accumulators read, spikes written, accumulators
    reset; over T steps, ``timed``, each flushed word takes T cycles, one a step). The core does
    one of these a cycle, without bubbles; ``done`` is high the cycle after the last (its write),
    and the next layer's START follows.

    ``"window"`` (:class:`bitsnn.hw.conv.WindowCore`): every output position, group by group,
    reads the C_in channels of one kernel tap a cycle from the input store and adds 2 *
    popcount(s AND w) - popcount(s) into P accumulator registers. Cycles: H * W * G * T * k*k
    (border taps take their cycle too; T = ``steps``) + ``WINDOW_LATENCY``, the same for every input.

    Over time (``timed``: T > 1 steps, or neurons with a membrane) the accumulators hold c_o * a
    from 0 (or from b_o: ``bias_in_acc``), and each output position runs its neurons' T steps in turn, its membranes in P lane
    registers (:func:`bitsnn.hw.neuron.membrane_update`): no membrane is ever stored. The event
    stage makes the sums of an input that is the same at every step once; of T input maps it
    keeps a bank of accumulators per step (:attr:`banks`), and the flush reads word (x, g)'s T
    banks in turn. The window stage reads step t's input maps for step t."""

    in_layout: MapLayout
    out_layout: MapLayout
    kernel: int
    pool: int
    channels: int
    lanes: int
    groups: int
    #: accumulator width: channel o's holds c_o * (a - theta_o), from -c_o*theta_o by +-R
    acc_bits: int = 0
    #: "event" or "window" (see the class docstring)
    engine: str = "event"
    #: bits per weight: 1 (+-1) or b (an ``int_conv2d``'s b-bit kernels; event stage only)
    wbits: int = 1
    #: T: the time steps the stage runs (its output store holds T maps, ``out_layout.steps``)
    steps: int = 1
    #: the neurons run through the membrane update (T > 1 or a stateful neuron model); False:
    #: one step, the spike is the accumulator's sign (the accumulators hold c_o * (a - theta_o))
    timed: bool = False
    #: width of a membrane register (:func:`membrane_bits`); 0 without membranes
    membrane_bits: int = 0
    #: the accumulators start at the neurons' biases b_o (an event stage of stateful neurons with
    #: no input shift: the sum c_o * a + b_o is each step's input, one add fewer per lane)
    bias_in_acc: bool = False

    @property
    def taps(self) -> int:
        return self.kernel * self.kernel

    @property
    def in_channels_padded(self) -> int:
        """Bits a window stage reads per tap: the input channels padded to a power of two."""
        return 1 << self.in_layout.cbits

    @property
    def window_reads(self) -> int:
        """Taps a window stage reads per inference (one a cycle): H * W * G * T * k*k."""
        return self.out_height * self.out_width * self.groups * self.steps * self.taps

    @property
    def flushes(self) -> int:
        """Accumulator words an event stage flushes per inference, one a cycle: H * W * G, T times
        each over time."""
        return self.out_height * self.out_width * self.groups * self.steps

    @property
    def banks(self) -> int:
        """Accumulator banks of an event stage: one per input map it reads (T when the previous
        stage wrote T maps: step t's events add into bank t), else one."""
        return self.in_layout.steps

    @property
    def acc_words(self) -> int:
        """Depth of the accumulator memory: 2**ceil(log2 k) ring slots x padded row x groups x
        banks, each field padded to a power of two."""
        return ((1 << ceil_log2(self.kernel)) * (1 << ceil_log2(self.in_layout.width)) * (1 << ceil_log2(self.groups))
                * (1 << ceil_log2(self.banks)))

    def acc_word_accesses(self, events):
        """Accumulator-memory words read (and as many written) for E input events: one per tap
        and group, and one per output position and group when the rows are flushed (an event
        stage); none in a window stage (its accumulators are registers)."""
        if self.engine == "window":
            return events * 0
        return events * self.taps * self.groups + self.flushes

    def weight_words(self, events):
        """Weight-memory words read for E input events: one per event, tap and group (P bits
        each, an event stage), or one per tap read (P * C_in-padded bits each, a window stage)."""
        if self.engine == "window":
            return events * 0 + self.window_reads
        return events * self.taps * self.groups

    @property
    def weight_word_bits(self) -> int:
        return self.lanes * (self.in_channels_padded if self.engine == "window" else self.wbits)

    @property
    def out_height(self) -> int:
        return self.in_layout.height

    @property
    def out_width(self) -> int:
        return self.in_layout.width

    def cycles(self, events, zero_chunks):
        """T_l of this stage for E input events and Z all-zero W-bit chunks (ints or arrays)."""
        if self.engine == "window":
            return events * 0 + self.window_stage_cycles()
        return self.event_stage_cycles(events, zero_chunks)

    def event_stage_cycles(self, events, zero_chunks):
        """T_l of the event stage (exact, whichever stage is built)."""
        return EVENT_LEAD + zero_chunks + events * self.taps * self.groups + self.flushes

    def window_stage_cycles(self) -> int:
        """T_l of the window stage (exact, whichever stage is built): the same for every input."""
        return self.window_reads + WINDOW_LATENCY


def plan_dense(layer, in_layout, *, mode: str, lanes: int, word: int, max_neurons_per_core: int | None,
               conv_engine: str = "auto", steps: int = 1):
    """A ``dense`` layer's plan: (cores, None, input layout). Its neurons are split into cores of at
    most ``max_neurons_per_core``, each with min(P, n) lanes; after a convolution it reads the
    previous store's map layout (``in_layout``), else the flat vector (None). +-1 weights run in
    any mode; multi-bit weights in event mode only (an event adds its b-bit weights, times the
    pixel for pixel input; the dense mode's AND-popcount takes +-1 weights). Over time, event mode
    only: a hidden layer keeps a bank of accumulators per input step and reads them out through its
    membrane lanes, step by step; the output layer adds every step's events into its scores."""
    if layer.multibit and mode != "event":
        raise UnsupportedLayerError(f"{layer.name}: multi-bit weights run in mode='event' only")
    if mode != "event" and (steps > 1 or layer.neuron_model.stateful or (in_layout is not None and in_layout.steps > 1)):
        raise UnsupportedLayerError(f"{layer.name}: over time, dense layers run in mode='event' only")
    cores = tuple(CorePlan(off, n, min(lanes, n), -(-n // min(lanes, n)))
                  for off, n in split_layer(layer.n_out, max_neurons_per_core))
    return cores, None, in_layout


def window_fits(layer, word: int) -> bool:
    """Whether a window stage can run ``layer``: spike maps whose padded channels fit a W-bit word."""
    return layer.input_kind == "spikes" and (1 << ceil_log2(layer.in_shape[0])) <= word


def plan_conv(layer, in_layout, *, mode: str, lanes: int, word: int, max_neurons_per_core: int | None,
              conv_engine: str = "auto", steps: int = 1):
    """A ``conv2d`` layer's plan: (its one core, its :class:`ConvPlan`, its input's map
    layout). P = the largest power of two <= ``lanes`` and <= the padded channel count and W; the
    accumulators are wide enough for c_o * (a - theta_o) over every input. Event mode only, with
    a power-of-two W (the map layout's bit addresses). ``conv_engine`` (:data:`CONV_ENGINES`):
    "auto" takes the window stage for spike maps of 2..W channels, else the event stage.
    Multi-bit kernels take the event stage (each lane adds pixel x w or w); the window stage's
    AND-popcount takes +-1 kernels only. Over ``steps`` T > 1 (or with stateful neurons) the stage
    is ``timed``; it reads T input maps when the previous stage wrote T (``in_layout.steps``; an
    event stage then keeps a bank of accumulators per step), else one map that holds at every
    step."""
    if layer.multibit:
        if conv_engine == "window":
            raise UnsupportedLayerError(f"{layer.name}: a window stage takes +-1 kernels; {layer.bits}-bit kernels "
                                        "run in the event stage (conv_engine 'event' or 'auto')")
        conv_engine = "event"
    if mode != "event":
        raise UnsupportedLayerError(f"{layer.name}: convolutions run in mode='event' only")
    if word & (word - 1):
        raise ValueError(f"a model with convolutions needs a power-of-two word, not {word}")
    c_in, h, w = layer.in_shape
    in_layout = MapLayout(c_in, h, w, in_layout.steps if in_layout is not None else 1)
    cp = 1 << ceil_log2(layer.channels)
    P = min(_pow2_floor(lanes), cp, word)
    r = layer.a_max
    timed = steps > 1 or layer.neuron_model.stateful
    bias_in_acc = False
    if timed:  # c_o * a from 0, or from b_o (see ConvPlan.bias_in_acc)
        acc = signed_bits(r)
    else:
        acc = max(max(signed_bits(-c * t - r), signed_bits(-c * t + r))
                  for c, t in zip(layer.compare.tolist(), layer.thresholds.tolist()))
    fits = window_fits(layer, word)
    if conv_engine == "window" and not fits:
        raise UnsupportedLayerError(f"{layer.name}: a window stage takes spike maps of at most {word} channels "
                                    f"(padded to a power of two), not {layer.input_kind} of {c_in}")
    engine = ("window" if conv_engine == "window" or (conv_engine == "auto" and fits and (c_in >= 2 or in_layout.steps > 1))
              else "event")
    nm = layer.neuron_model
    if nm.signed:
        raise UnsupportedLayerError(f"{layer.name}: a convolution of {layer.neuron} neurons (its pool sums its windows "
                                    "before them) has no hardware stage yet; dense layers of them run")
    mb = nm.part("plan")(layer, steps) if nm.stateful else 0
    if nm.stateful and engine == "event" and layer.shift == 0:
        bias_in_acc = True
        acc = max(max(signed_bits(b - r), signed_bits(b + r)) for b in layer.bias.tolist())
    conv = ConvPlan(in_layout, MapLayout(*layer.out_shape, steps if timed else 1), layer.kernel, layer.pool,
                    layer.channels, P, cp // P, acc, engine, layer.bits, steps if timed else 1, timed, mb, bias_in_acc)
    return (CorePlan(0, layer.channels, P, cp // P),), conv, in_layout


def plan_gap(layer, in_layout, *, mode: str, lanes: int, word: int, max_neurons_per_core: int | None,
             conv_engine: str = "auto", steps: int = 1):
    """A ``global_pool`` head's plan: (one core of ``n_out`` score counters in one lane group,
    None, its input's map layout). Its stage (:class:`bitsnn.hw.stage.GapStage`) takes the spike
    maps' events from a router, one a cycle, and adds each to its class's counter: an event layer
    with G = 1, cycle for cycle (:meth:`LayerPlan.event_cycles`). It reads the maps as the previous
    convolution's store holds them (or the input image's spikes, stored as a convolution's image
    is), every step's; a class's channel is the low field of an event's address. Event mode only;
    no pixel input (a pixel would add its value, not a spike)."""
    if mode != "event":
        raise UnsupportedLayerError(f"{layer.name}: a global sum pool runs in mode='event' only")
    if layer.input_kind != "spikes":
        raise UnsupportedLayerError(f"{layer.name}: a global sum pool of the image's pixels has no hardware stage; "
                                    "it takes spike maps (a convolution's, or spike input)")
    if word & (word - 1):
        raise ValueError(f"a model with a global sum pool needs a power-of-two word, not {word}")
    if in_layout is not None and in_layout.signs > 1:
        raise UnsupportedLayerError(f"{layer.name}: a global sum pool of signed spikes has no hardware stage yet")
    in_layout = MapLayout(*layer.in_shape, in_layout.steps if in_layout is not None else 1)
    return (CorePlan(0, layer.n_out, layer.n_out, 1),), None, in_layout


def _pow2_floor(n: int) -> int:
    return 1 << (int(n).bit_length() - 1)


def _int_arg(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be at least {lo}, not {value}")


@dataclass(frozen=True)
class CorePlan:
    """One core: neurons ``first`` .. ``first + n - 1`` of its layer, ``lanes`` (P_c = min(P, n))
    of them updated per cycle, in ``groups`` (G_c = ceil(n / P_c)) lane groups."""

    first: int
    n: int
    lanes: int
    groups: int


@dataclass(frozen=True)
class LayerPlan:
    """One layer's hardware: its cores, lane groups and accumulator width."""

    index: int
    n_in: int
    n_out: int
    input_kind: str
    is_output: bool
    #: R: the largest |a| any input can produce
    a_max: int
    cores: tuple[CorePlan, ...]
    #: input words of W bits (dense reads, event-mode router chunks)
    input_words: int
    kind: str = "binary_dense"
    #: the convolution's stage (conv layers only)
    conv: ConvPlan | None = None
    #: how the layer's input is stored when it is a map (a conv layer's, and a dense layer's
    #: after a conv): the router scans ``input_layout.size`` bits; None: the flat vector
    input_layout: MapLayout | None = None
    #: bits per weight: 1 (+-1) or the b of a multi-bit kind
    wbits: int = 1
    #: how the layer's output is stored for the next stage (:func:`output_layout`); None: a
    #: one-step dense layer's flat vector, or the output layer's scores
    out_layout: MapLayout | None = None
    #: the neurons run through the membrane update over T steps (:func:`timed`)
    timed: bool = False
    #: T of a timed layer (1 otherwise): its neurons' steps, the maps it writes
    out_steps: int = 1
    #: width of a membrane (:func:`membrane_bits`); 0 without membranes
    membrane_bits: int = 0

    @property
    def n_in_store(self) -> int:
        """Bits of the input store the layer's router scans (padding included; every step's)."""
        return self.input_layout.size if self.input_layout else self.n_in

    @property
    def signed_in(self) -> bool:
        """Whether the layer takes signed spikes (the previous layer's ``signed_if`` neurons)."""
        return self.input_layout is not None and self.input_layout.signs > 1

    @property
    def in_steps(self) -> int:
        """Input maps the layer reads per inference: T after a timed stage, else 1 (a dense
        layer keeps a bank of accumulators for each)."""
        return self.input_layout.steps if self.input_layout else 1

    @property
    def weight_columns(self) -> int:
        """Columns of the layer's weight memory: its inputs at one step, as the store holds them."""
        return self.input_layout.step_layout.size if self.input_layout else self.n_in

    @property
    def groups(self) -> int:
        """G: cycles per event (event mode) or per input word (dense) of the layer's slowest core
        (the first one, a full one)."""
        return max(c.groups for c in self.cores)

    @property
    def acc_bits(self) -> int:
        """Width of the layer's accumulators (as the dense cores and the scores hold them; the
        output layer's scores add every input map's, T of them after a timed layer)."""
        return acc_bits_for(self.a_max * (self.in_steps if self.is_output else 1))

    def weight_bits_per_cycle(self, mode: str, word: int) -> int:
        """Weight-memory bits the layer's cores read per cycle: sum of P_c * b (event; b bits per
        weight) or P_c * W (dense)."""
        return sum(c.lanes for c in self.cores) * (word if mode == "dense" else self.wbits)

    def weight_words_per_event(self) -> int:
        """Weight words all cores read per input event (event mode): sum of G_c (a convolution:
        k*k*G, one per kernel tap and group; none in a layer without weights)."""
        if not kinds.kind(self.kind).has_weights:
            return 0
        taps = self.conv.kernel ** 2 if self.conv else 1
        return taps * sum(c.groups for c in self.cores)

    def weight_read_bits_per_event(self) -> int:
        """Weight bits all cores read per input event (event mode): sum of G_c * P_c * b (times k*k)."""
        taps = self.conv.kernel ** 2 if self.conv else 1
        return taps * sum(c.groups * c.lanes for c in self.cores) * self.wbits

    def weight_reads(self, events, mode: str, word: int):
        """Weight-memory reads for E input events per image (an int64 array): (words, bits, bits per
        word). Event mode: per event, G_c words of P_c * b bits per core (a convolution's event
        stage: k*k*G, one per tap and group; its window stage: one P * C_in-padded-bit word per tap
        read, whatever the input). Dense mode: P_c*W-bit words, all G_c * ceil(n_in / W) of them
        per image, whatever the input."""
        ev = np.asarray(events, np.int64)
        if self.conv is not None:
            words = np.asarray(self.conv.weight_words(ev), np.int64)
            return words, words * self.conv.weight_word_bits, self.conv.weight_word_bits
        if mode == "event":
            return (ev * self.weight_words_per_event(), ev * self.weight_read_bits_per_event(),
                    self.cores[0].lanes * self.wbits)
        return (np.full(ev.shape, self.weight_words_per_event() * self.input_words, np.int64),
                np.full(ev.shape, self.weight_read_bits_per_event() * word * self.input_words, np.int64),
                self.cores[0].lanes * word)

    def accumulator_accesses(self, events):
        """Accumulator-memory words read (and as many written) for E input events, and their width:
        (None, 0) where the accumulators are registers (dense cores, a window stage)."""
        if self.conv is None or self.conv.engine != "event":
            return None, 0
        return np.asarray(self.conv.acc_word_accesses(np.asarray(events, np.int64)), np.int64), \
            self.conv.lanes * self.conv.acc_bits

    def dense_cycles(self) -> int:
        """T_l of a dense layer: G reads of each of its input words plus the pipeline."""
        return self.groups * self.input_words + DENSE_LATENCY

    def event_cycles(self, events, zero_chunks):
        """T_l of an event layer for E input events and Z all-zero W-bit chunks (ints or arrays):
        the lead-in, a skip beat per zero chunk, G cycles per event, G read-out cycles (G * T for a
        timed layer: each group's T steps), the tail (a convolution: :meth:`ConvPlan.cycles`)."""
        if self.conv is not None:
            return self.conv.cycles(events, zero_chunks)
        G = self.groups
        return EVENT_LEAD + zero_chunks + events * G + G * self.out_steps + EVENT_TAIL


@dataclass(frozen=True)
class HardwarePlan:
    """What the Accelerator generates for ``model`` with these parameters (see the module docstring).

    Build one with :meth:`of`, which checks the parameters (TypeError / ValueError naming the bad one).
    """

    mode: str
    lanes: int
    word: int
    k: int
    max_neurons_per_core: int | None
    fifo_depth: int
    layers: tuple[LayerPlan, ...]
    n_inputs: int
    num_classes: int
    #: the model's input coding and steps (``rate`` runs a generator per step in the input buffer)
    input_coding: str = "threshold"
    steps: int = 1
    #: the ``rate`` coding's seed (:func:`bitsnn.hwmodel.rate_start_states`)
    input_seed: int | None = None

    @classmethod
    def of(cls, model, *, mode: str = "event", lanes: int | None = None, word: int = 32, k: int = 1,
           max_neurons_per_core: int | None = None, fifo_depth: int = 4, conv_engine: str = "auto") -> "HardwarePlan":
        """The plan of ``model`` (a :class:`bitsnn.hwmodel.HardwareModel`); ``lanes`` None: :func:`default_lanes`."""
        check_supported(model)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if conv_engine not in CONV_ENGINES:
            raise ValueError(f"conv_engine must be one of {CONV_ENGINES}, not {conv_engine!r}")
        if lanes is None:
            lanes = default_lanes(model)
        _int_arg("lanes", lanes, 1)
        _int_arg("word", word, 1)
        _int_arg("k", k, 1)
        if k > word:
            raise ValueError(f"k must not exceed the word width {word}, not {k}")
        if max_neurons_per_core is not None:
            _int_arg("max_neurons_per_core", max_neurons_per_core, 1)
        _int_arg("fifo_depth", fifo_depth, MIN_FIFO_DEPTH)
        layers = []
        in_layout = input_layout(model)
        for i, layer in enumerate(model.layers):
            cores, conv, in_layout = part(layer.kind, "plan")(layer, in_layout, mode=mode, lanes=lanes, word=word,
                                                            max_neurons_per_core=max_neurons_per_core,
                                                            conv_engine=conv_engine, steps=model.timesteps)
            n_store = in_layout.size if in_layout else layer.n_in
            is_timed = timed(model, layer)
            nm = layer.neuron_model
            out = None if layer.is_output else output_layout(model, layer)
            layers.append(LayerPlan(i, layer.n_in, layer.n_out, layer.input_kind, layer.is_output, layer.a_max,
                                    cores, -(-n_store // word), layer.kind, conv, in_layout, layer.bits, out, is_timed,
                                    model.timesteps if is_timed else 1,
                                    nm.part("plan")(layer, model.timesteps) if is_timed and nm.stateful else 0))
            in_layout = out
        return cls(mode, lanes, word, k, max_neurons_per_core, fifo_depth, tuple(layers), model.n_inputs,
                   model.num_classes, model.input_coding, model.timesteps, model.input_seed)

    @property
    def hidden(self) -> tuple[LayerPlan, ...]:
        return self.layers[:-1]

    @property
    def input_values(self) -> int:
        """Values the ``pixels`` stream takes per inference (:func:`input_values`)."""
        return _stream_values(self.n_inputs, self.steps, self.input_coding)

    @property
    def score_bits(self) -> int:
        """Width of the class scores (the output layer's accumulators)."""
        return self.layers[-1].acc_bits

    @property
    def n_result_words(self) -> int:
        """32-bit words of one result: class, cycles, one spike count per hidden layer, the scores."""
        return result_words(len(self.hidden), self.num_classes)

    @property
    def max_cycles(self) -> int:
        """An upper bound of the cycle count (every input of every layer set and, in event mode,
        every chunk also counted as a skip beat): the range of the hardware's cycle counter."""
        total = START + self.num_classes
        for lp in self.layers:
            if self.mode == "dense":
                total += lp.dense_cycles()
            else:
                total += lp.event_cycles(lp.n_in * lp.in_steps, lp.input_words)
        return total

    @property
    def has_conv(self) -> bool:
        return any(lp.conv is not None for lp in self.layers)

    def tap_size(self, l: int) -> int:
        """Addresses the ``events`` tap reports for hidden layer ``l``: its neurons, or the bits of
        its output store (:func:`output_layout`, padding and steps included)."""
        lp = self.layers[l]
        return lp.out_layout.size if lp.out_layout else lp.n_out

    def tap_arrays(self) -> dict:
        """What a bench maps the events tap with (:func:`bitsnn.sim.cosim.checks.tap_order`):
        ``tap{l}``, the store address of each output of hidden layer l in torch's flat order (a
        convolution's or timed layer's store), and ``tapneg{l}`` that of its -1 spike (signed)."""
        out = {}
        for l in range(len(self.hidden)):
            lay = self.layers[l].out_layout
            if lay is not None:
                out[f"tap{l}"] = lay.store_index(0)
                if lay.signs > 1:
                    out[f"tapneg{l}"] = lay.store_index(1)
        return out

    def tapped_spikes(self, l: int, tapped):
        """(B, tap_size) spikes as the tap reports them -> (B, T * n_out) in torch's flat order,
        step after step (:attr:`bitsnn.sim.golden.GoldenResult.tap_spikes`; int8 -1/0/+1 for
        signed spikes)."""
        lay = self.layers[l].out_layout
        return tapped if lay is None else lay.from_store(tapped)
