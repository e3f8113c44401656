"""The golden model: integer inference on a hardware model, NumPy only (no torch, no amaranth).

Every other stage (the PyTorch eval path, the Amaranth design, the generated Verilog on Icarus and
Verilator, the board) is checked against this, bit for bit. Arithmetic (see bitsnn.hwmodel):

    a_j = sum_i s_i * w_ji = 2 * popcount(s & b_j) - popcount(s)       (spike inputs, +-1 weights)
    a_j = sum_i x_i * w_ji                          (8-bit pixel inputs, or b-bit integer weights)
    hidden:  spike_j = [a_j >= theta_j]  (compare +1)   or  [a_j <= theta_j]  (compare -1)
    output:  scores = a, class = argmax with ties to the lowest index

Spike-input layers run on packed 64-bit words with ``np.bitwise_count``, vectorised over a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsnn.hwmodel import ConvLayer, HardwareModel, Layer, pack_bits
from bitsnn.kinds import neuron, part

__all__ = ["GoldenResult", "encode_input", "layer_preactivation", "run", "DenseEvaluator", "ConvEvaluator", "GapEvaluator",
           "plan_for"]

# Images per block of the popcount kernel: keeps its (block, neurons) scratch arrays in cache.
_BLOCK = 1024
# Up to this many (image, word, neuron) triples, one (B, words, neurons) broadcast instead.
_SMALL_WORK = 1 << 18

@dataclass
class GoldenResult:
    """Outputs of :func:`run` for a batch of B images (over T time steps: ``steps``).

    ``inputs``: (B, n_in) uint8, the encoded input (spikes 0/1 or pixels) when every step takes
    the same; (B, T, n_in) with ``rate`` or ``given`` coding.
    ``spikes``: one (B, n_out) uint8 array per hidden layer (a convolution's after its pool,
    flattened channel by channel, row by row): 0/1 at one step, each neuron's spike count over
    T steps (uint16 from 256 steps up; signed neurons' spikes of either sign). ``step_spikes``:
    the same per step, (B, T, n_out) 0/1, or int8 -1/0/+1 for signed neurons (``signed_if``).
    ``preacts``: one int64 array per layer, summed over the steps: (B, n_out) for a dense layer
    (the last one equals ``scores``), (B, C_out, H, W) for a convolution (before its pool).
    ``scores``: (B, classes) int64, summed over the steps. ``classes``: (B,) int64.
    ``spike_counts``: (B, hidden layers) int64, output spikes of each hidden layer, all steps.
    ``input_events``: (B, layers) int64, nonzero inputs each layer receives (address events), all
    steps.
    ``synaptic_events``: (B, layers) int64, the accumulator updates the input events cause: input
    events x fan-out for a dense layer; for a convolution, each event updates C_out accumulators
    at each output position whose k x k window holds it (fewer at the map's border); all steps.
    """

    inputs: np.ndarray
    spikes: list[np.ndarray]
    preacts: list[np.ndarray]
    scores: np.ndarray
    classes: np.ndarray
    spike_counts: np.ndarray
    input_events: np.ndarray
    synaptic_events: np.ndarray
    #: T, the time steps of each inference
    steps: int = 1
    #: one (B, T, n_out) uint8 0/1 array per hidden layer: its spikes at every step
    step_spikes: list[np.ndarray] | None = None

    @property
    def tap_spikes(self) -> list[np.ndarray]:
        """One (B, T * n_out) uint8 0/1 array per hidden layer: every spike of every step, step
        after step (what the hardware's events tap reports; ``spikes`` at one step)."""
        if self.steps == 1 or self.step_spikes is None:
            return list(self.spikes)
        return [s.reshape(s.shape[0], -1) for s in self.step_spikes]


class DenseEvaluator:
    """A layer's weights rearranged once for fast evaluation."""

    def __init__(self, layer: Layer):
        self.layer = layer
        # pixels or multi-bit weights: a float64 matrix product, exact for |a| < 2**53
        self.matmul = layer.input_kind == "pixels" or layer.bits > 1
        if self.matmul:
            self.w = layer.weights_int().astype(np.float64).T  # (n_in, n_out)
        else:
            # (n_words, n_out): word k of every neuron contiguous, so one word of a block of
            # images meets all neurons in one broadcast AND.
            self.words = _to_words(layer.weight_bits)  # (n_out, n_words)
            self.words_t = np.ascontiguousarray(self.words.T)
        if not layer.is_output:
            self.neurons = neurons_of(layer, 2)

    def start(self) -> None:
        """A new inference: the neurons' membranes (if they keep any) start again."""
        if not self.layer.is_output:
            self.neurons.start()

    def fire(self, a: np.ndarray) -> np.ndarray:
        """A hidden layer's neurons at one step: (B, n_out) int64 -> (B, n_out) uint8 0/1 (int8
        -1/0/+1 for signed neurons)."""
        return _spikes(self.neurons.fire(a))

    def preact(self, x: np.ndarray) -> np.ndarray:
        """x: (B, n_in) uint8 -> a: (B, n_out) int64."""
        if self.matmul:
            return np.rint(x.astype(np.float64) @ self.w).astype(np.int64)
        return self.preact_packed(_to_words(pack_bits(x)))

    def evaluate(self, x: np.ndarray):
        """x: (B, n_in) uint8 -> (input events (B,), synaptic events (B,), a (B, n_out)), all int64.
        Binary spike inputs go through the packed words, which also give the input events; signed
        spikes (int8 -1/0/+1) as their +1 and their -1 spikes, a the difference."""
        if x.dtype == np.int8:
            (n_pos, _, a_pos), (n_neg, _, a_neg) = self.evaluate((x > 0).view(np.uint8)), self.evaluate((x < 0).view(np.uint8))
            return n_pos + n_neg, (n_pos + n_neg) * self.layer.n_out, a_pos - a_neg
        if self.matmul:
            n_active = np.count_nonzero(x, axis=1).astype(np.int64)
            a = self.preact(x)
        else:
            words = _to_words(pack_bits(x))
            n_active = np.bitwise_count(words).sum(axis=1, dtype=np.int64)
            a = self.preact_packed(words, n_active)
        return n_active, n_active * self.layer.n_out, a

    def preact_packed(self, s: np.ndarray, n_active: np.ndarray | None = None) -> np.ndarray:
        """s: (B, n_words) uint64 packed spikes -> a: (B, n_out) int64.

        a = 2 * popcount(s & b) - popcount(s), accumulated one 64-bit word at a time over a block
        of images: AND, ``np.bitwise_count`` into uint8, add into a uint16 count (uint32 from 2**16 inputs up).
        Words that are zero in every image of the block are skipped (image borders, silent neurons).
        ``n_active``: popcount(s) per image when the caller has it.
        """
        n_words, n_out = self.words_t.shape
        B = s.shape[0]
        if n_active is None:
            n_active = np.bitwise_count(s).sum(axis=1, dtype=np.int64)
        n_active = n_active[:, None]
        if B * n_words * n_out <= _SMALL_WORK:  # one broadcast beats the per-word loop's call overhead
            c = np.bitwise_count(s[:, :, None] & self.words_t[None])  # (B, n_words, n_out) uint8
            out = c.sum(axis=1, dtype=np.uint16 if n_words * 64 < 1 << 16 else np.uint32).astype(np.int64)
            out *= 2
            out -= n_active
            return out
        out = np.empty((B, n_out), dtype=np.int64)
        blk = min(_BLOCK, max(B, 1))
        both = np.empty((blk, n_out), dtype=np.uint64)
        cnt = np.empty((blk, n_out), dtype=np.uint8)
        acc = np.empty((blk, n_out), dtype=np.uint16 if n_words * 64 < 1 << 16 else np.uint32)
        for lo in range(0, B, blk):
            sb = s[lo : lo + blk]
            n = sb.shape[0]
            a, t, c = acc[:n], both[:n], cnt[:n]
            a.fill(0)
            for k in np.flatnonzero(sb.any(axis=0)):
                np.bitwise_and(sb[:, k, None], self.words_t[k][None, :], out=t)
                np.bitwise_count(t, out=c)
                np.add(a, c, out=a)
            out[lo : lo + n] = a
        out *= 2
        out -= n_active
        return out


class ConvEvaluator:
    """A convolution's kernels rearranged once: one (C_in, C_out) float32 matrix per kernel tap.

    a[b, o, y, x] = sum over (c, ky, kx) of x_pad[b, c, y+ky, x+kx] * w[o, c, ky, kx], x_pad the
    input maps with k // 2 zeros around them; k*k matrix products of the shifted maps, exact in
    float32 (|a| <= 255 * C_in * k * k * max |w| < 2**24)."""

    _CHUNK = 512  # images per block: keeps the (chunk, H, W, C) scratch small

    def __init__(self, layer: ConvLayer):
        if layer.a_max >= 1 << 24:
            raise ValueError(f"{layer.name}: |a| up to {layer.a_max} is beyond float32's exact integers")
        self.layer = layer
        w = layer.kernels_int().astype(np.float32)  # (C_out, C_in, k, k)
        self.taps = [np.ascontiguousarray(w[:, :, ky, kx].T) for ky in range(layer.kernel) for kx in range(layer.kernel)]
        self.neurons = neurons_of(layer, 4)
        self.signed = layer.neuron_model.signed

    def preact(self, x: np.ndarray) -> np.ndarray:
        """x: (B, C_in*H*W) inputs -> a: (B, C_out, H, W) int64."""
        L = self.layer
        c_in, h, w = L.in_shape
        k, p = L.kernel, L.kernel // 2
        B = x.shape[0]
        out = np.empty((B, L.channels, h, w), np.int64)
        for lo in range(0, B, self._CHUNK):
            xb = x[lo : lo + self._CHUNK].reshape(-1, c_in, h, w).transpose(0, 2, 3, 1).astype(np.float32)
            xp = np.zeros((xb.shape[0], h + 2 * p, w + 2 * p, c_in), np.float32)
            xp[:, p : p + h, p : p + w] = xb
            acc = np.zeros((xb.shape[0], h, w, L.channels), np.float32)
            for t, wt in enumerate(self.taps):
                ky, kx = divmod(t, k)
                acc += xp[:, ky : ky + h, kx : kx + w] @ wt
            out[lo : lo + self._CHUNK] = np.rint(acc).astype(np.int64).transpose(0, 3, 1, 2)
        return out

    def start(self) -> None:
        """A new inference: the neurons' membranes (if they keep any) start again."""
        self.neurons.start()

    def fire(self, a: np.ndarray) -> np.ndarray:
        """(B, C_out, H, W) pre-activations -> (B, n_out) uint8 spikes after the OR pool. Signed
        neurons (int8 -1/0/+1 spikes) pool before they fire: each takes its window's summed a."""
        q = self.layer.pool
        if self.signed:
            return _spikes(self.neurons.fire(_windows(a, q).sum(axis=(3, 5)) if q > 1 else a)).reshape(a.shape[0], -1)
        s = self.neurons.fire(a)
        if q > 1:
            s = _windows(s, q).any(axis=(3, 5))
        return s.reshape(s.shape[0], -1).view(np.uint8)

    def evaluate(self, x: np.ndarray):
        """x: (B, n_in) uint8 -> (input events, synaptic events, a): as :meth:`DenseEvaluator.evaluate`."""
        return np.count_nonzero(x, axis=1).astype(np.int64), self.synaptic_events(x), self.preact(x)

    def synaptic_events(self, x: np.ndarray) -> np.ndarray:
        """(B,) accumulator updates: for each output position, the nonzero inputs in its window
        (all input channels), times C_out."""
        L = self.layer
        c_in, h, w = L.in_shape
        p = L.kernel // 2
        nz = (x.reshape(-1, c_in, h, w) != 0).sum(axis=1)  # (B, H, W) nonzero inputs per position
        # how many output windows hold position (y, x): the count of valid window centres nearby
        ry = np.array([min(y + p, h - 1) - max(y - p, 0) + 1 for y in range(h)], np.int64)
        rx = np.array([min(x_ + p, w - 1) - max(x_ - p, 0) + 1 for x_ in range(w)], np.int64)
        return (nz * (ry[:, None] * rx[None, :])[None]).sum(axis=(1, 2)).astype(np.int64) * L.channels


class GapEvaluator:
    """ALBSNN's global sum pooling head (:class:`~bitsnn.hwmodel.GapLayer`): score c = class c's
    channels' spikes summed over their positions (signed spikes with their signs); an input spike
    is one event and one counter update."""

    def __init__(self, layer):
        self.layer = layer

    def start(self) -> None:
        """No state: the scores add up over the steps like every output layer's."""

    def preact(self, x: np.ndarray) -> np.ndarray:
        """Each class's channels (consecutive in the flat maps) summed."""
        return np.asarray(x).astype(np.int64).reshape(len(x), self.layer.n_out, -1).sum(axis=2)

    def evaluate(self, x: np.ndarray):
        n_active = np.count_nonzero(x, axis=1).astype(np.int64)
        return n_active, n_active.copy(), self.preact(x)


class StepNeurons:
    """The ``step`` neuron model's ``golden`` part (:mod:`bitsnn.kinds`): spike = [a >= theta]
    (compare +1) or [a <= theta] (compare -1), both [c*a >= c*theta]; no state. ``ndim``: the
    rank of the pre-activations it takes, (B, rows) or (B, channels, H, W) (axis 1 the neuron
    row or channel)."""

    def __init__(self, layer: Layer, ndim: int = 2):
        c = layer.compare.astype(np.int64)
        shape = (1, -1) + (1,) * (ndim - 2)
        self.sign = None if np.all(c > 0) else c.reshape(shape)
        self.cth = (c * layer.thresholds).reshape(shape)

    def start(self) -> None:
        """No state: nothing to start."""

    def fire(self, a: np.ndarray) -> np.ndarray:
        """Integer pre-activations -> bool spikes, in blocks of images that stay in cache."""
        out = np.empty(a.shape, dtype=np.bool_)
        for lo in range(0, a.shape[0], _BLOCK):
            ab = a[lo : lo + _BLOCK]
            if self.sign is not None:
                ab = ab * self.sign
            np.greater_equal(ab, self.cth, out=out[lo : lo + _BLOCK])
        return out


class IFNeurons:
    """The ``if`` and ``lif`` neuron models' ``golden`` part (:mod:`bitsnn.kinds`): a membrane V per
    neuron (per output position of a convolution, before its pool), 0 at the start of an
    inference. Each step, in integers: V <- V - ((V * m) >> 16) with an arithmetic (floor) shift,
    for a ``lif`` neuron with leak m (:func:`leak_of`); V <- V + c*a*2^shift + b, c the neuron's compare direction and b
    its bias; a spike when V >= theta; then V <- V - theta (reset ``subtract``) or 0 (``zero``);
    with ``subtract-next`` the theta of a spike is taken off at the next step, after the leak, with
    the input (snnTorch's ``Leaky``)."""

    def __init__(self, layer: Layer, ndim: int = 2):
        shape = (1, -1) + (1,) * (ndim - 2)
        self.c = (layer.compare.astype(np.int64) << layer.shift).reshape(shape)
        self.b = layer.bias.astype(np.int64).reshape(shape)
        self.theta = layer.thresholds.astype(np.int64).reshape(shape)
        self.leak = layer.leak
        self.reset = layer.reset
        self.v: np.ndarray | None = None
        self.prev: np.ndarray | None = None  # the last step's spikes (reset subtract-next)

    def start(self) -> None:
        self.v = self.prev = None

    def fire(self, a: np.ndarray) -> np.ndarray:
        """One step: integer pre-activations -> bool spikes; the membranes carry over."""
        if self.v is None:
            self.v = np.zeros(a.shape, np.int64)
        v = self.v
        if self.leak:
            v -= leak_of(v, self.leak)
        v += a * self.c
        v += self.b
        if self.reset == "subtract-next" and self.prev is not None:
            v -= np.where(self.prev, self.theta, 0)
        s = v >= self.theta
        if self.reset == "zero":
            v[s] = 0
        elif self.reset == "subtract":
            v -= np.where(s, self.theta, 0)
        else:
            self.prev = s
        return s


class SignedIFNeurons:
    """The ``signed_if`` neuron model's ``golden`` part (Fast-SNN, :mod:`bitsnn.kinds`): a membrane
    V per neuron, theta/2 at the start of an inference (theta is even), and a count of its +1
    spikes less its -1 spikes. Each step, in integers: V <- V + c*a*2^shift + b; then V >= theta:
    spike +1, V <- V - theta; else V < 0 and the count is positive: spike -1, V <- V + theta.
    Spikes are int8 -1/0/+1."""

    def __init__(self, layer: Layer, ndim: int = 2):
        shape = (1, -1) + (1,) * (ndim - 2)
        self.c = (layer.compare.astype(np.int64) << layer.shift).reshape(shape)
        self.b = layer.bias.astype(np.int64).reshape(shape)
        self.theta = layer.thresholds.astype(np.int64).reshape(shape)
        self.v: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def start(self) -> None:
        self.v = self.count = None

    def fire(self, a: np.ndarray) -> np.ndarray:
        """One step: integer pre-activations -> int8 spikes -1/0/+1; the membranes carry over."""
        if self.v is None:
            self.v = np.broadcast_to(self.theta >> 1, a.shape).copy()
            self.count = np.zeros(a.shape, np.int64)
        v = self.v
        v += a * self.c
        v += self.b
        up = v >= self.theta
        down = ~up & (v < 0) & (self.count > 0)
        s = up.astype(np.int8) - down.astype(np.int8)
        v -= s * self.theta
        self.count += s
        return s


def leak_of(v: np.ndarray, m: int) -> np.ndarray:
    """(V * m) >> 16, floored, without overflowing int64: V = 2^16 h + l with 0 <= l < 2^16."""
    h = v >> 16
    return h * m + (((v - (h << 16)) * m) >> 16)


def _windows(x: np.ndarray, q: int) -> np.ndarray:
    """(B, C, H, W) -> (B, C, H//q, q, W//q, q): the q x q pool windows (a ragged edge dropped)."""
    B, c, h, w = x.shape
    return x[:, :, : h - h % q, : w - w % q].reshape(B, c, h // q, q, w // q, q)


def _spikes(s: np.ndarray) -> np.ndarray:
    """A neuron model's spikes as a layer passes them on: bool -> uint8 0/1; signed ones stay int8."""
    return s.view(np.uint8) if s.dtype == np.bool_ else s


def neurons_of(layer: Layer, ndim: int):
    """The golden neurons of a hidden ``layer``: its neuron model's ``golden`` part."""
    return neuron(layer.neuron).part("golden")(layer, ndim)


def plan_for(layer: Layer):
    """The golden evaluator of ``layer``'s kind (its ``golden`` part, :mod:`bitsnn.kinds`)."""
    return part(layer.kind, "golden")(layer)


def _to_words(packed: np.ndarray) -> np.ndarray:
    """(..., nbytes) uint8 -> (..., ceil(nbytes/8)) uint64, zero padded."""
    nbytes = packed.shape[-1]
    pad = (-nbytes) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view("<u8")


def encode_input(model: HardwareModel, images: np.ndarray) -> np.ndarray:
    """(B, *image_shape) uint8 images (or already cropped ones) -> (B, n_in) uint8 first-layer inputs."""
    return model.encode_input(images)


def layer_preactivation(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One layer's integer pre-activation, the straightforward way (for reference and tests)."""
    return plan_for(layer).preact(np.asarray(x, dtype=np.uint8))


def fire(layer: Layer, a: np.ndarray) -> np.ndarray:
    """Threshold compare of a hidden layer: (B, n_out) int64 -> (B, n_out) uint8 0/1:
    [a >= theta] where compare = +1, [a <= theta] where -1."""
    return plan_for(layer).fire(a)


def run(model: HardwareModel, images: np.ndarray, *, plans: list | None = None) -> GoldenResult:
    """Integer inference of ``model`` on a batch: uint8 images (B, *image_shape), or with ``given``
    input coding the spikes of every step (B, T, *input_shape).

    Over T time steps (``model.timesteps``), step by step: each layer takes the previous one's
    spikes of the same step; stateful neurons keep their membranes from step to step (cleared at
    the start of the batch's inference); the output layer's scores are summed over the steps. With
    an input that is the same at every step (``direct``, ``threshold``), the first layer's sums
    are computed once."""
    plans = plans or [plan_for(l) for l in model.layers]
    T = model.timesteps
    static = model.static_input
    inputs = model.step_inputs(images)
    B = inputs.shape[0]
    for plan in plans:
        plan.start()
    hidden = len(plans) - 1
    steps = [[] for _ in range(hidden)]  # per hidden layer: its spikes at each step
    preacts: list = [None] * len(plans)
    in_events = np.zeros((B, len(plans)), np.int64)
    syn_events = np.zeros((B, len(plans)), np.int64)
    first = None  # the first layer's (events, synaptic events, sums) when its input is static
    for t in range(T):
        x = inputs if static else inputs[:, t]
        for l, plan in enumerate(plans):
            if l == 0 and static:
                first = first or plan.evaluate(x)
                n_active, syn, a = first
            else:
                n_active, syn, a = plan.evaluate(x)  # the kind's golden part (bitsnn.kinds)
            in_events[:, l] += n_active
            syn_events[:, l] += syn
            preacts[l] = a if preacts[l] is None else preacts[l] + a
            if plan.layer.is_output:
                break
            x = plan.fire(a)  # the neuron model's golden part
            steps[l].append(x)
    scores = preacts[-1]
    classes = np.argmax(scores, axis=1).astype(np.int64)  # first maximum: ties to the lowest index
    if T == 1:
        spikes = [s[0] if s[0].dtype != np.int8 else np.abs(s[0]).view(np.uint8) for s in steps]
    else:  # spikes of either sign
        count_type = np.uint8 if T < 256 else np.uint16
        spikes = [np.add.reduce(np.abs(s) if s[0].dtype == np.int8 else s, dtype=count_type) for s in steps]
    return GoldenResult(
        inputs=inputs,
        spikes=spikes,
        preacts=preacts,
        scores=scores,
        classes=classes,
        # a hidden layer's spikes are the next layer's input events
        spike_counts=in_events[:, 1:].copy(),
        input_events=in_events,
        synaptic_events=syn_events,
        steps=T,
        step_spikes=[s[0][:, None] if T == 1 else np.stack(s, axis=1) for s in steps],
    )
