"""The golden model: integer inference on a hardware model, NumPy only (no torch, no amaranth).

Every other stage (the PyTorch eval path, the Amaranth design, the generated Verilog on Icarus and
Verilator, the board) is checked against this, bit for bit. Arithmetic (see bitsnn.hwmodel):

    a_j = sum_i s_i * w_ji = 2 * popcount(s & b_j) - popcount(s)       (spike inputs)
    a_j = sum_i x_i * w_ji                                              (8-bit pixel inputs)
    hidden:  spike_j = [a_j >= theta_j]  (compare +1)   or  [a_j <= theta_j]  (compare -1)
    output:  scores = a, class = argmax with ties to the lowest index

Spike-input layers run on packed 64-bit words with ``np.bitwise_count``, vectorised over a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsnn.hwmodel import HardwareModel, Layer, pack_bits

__all__ = ["GoldenResult", "encode_input", "layer_preactivation", "run", "LayerPlan"]

# Elements of the (batch, neurons, words) popcount intermediate per chunk: bounds memory.
_CHUNK_ELEMS = 1 << 22


@dataclass
class GoldenResult:
    """Outputs of :func:`run` for a batch of B images.

    ``inputs``: (B, n_in) uint8, the encoded input (spikes 0/1 or pixels).
    ``spikes``: one (B, n_out) uint8 0/1 array per hidden layer.
    ``preacts``: one (B, n_out) int64 array per layer (the last one equals ``scores``).
    ``scores``: (B, classes) int64. ``classes``: (B,) int64.
    ``spike_counts``: (B, hidden layers) int64, output spikes of each hidden layer.
    ``input_events``: (B, layers) int64, nonzero inputs each layer receives (address events).
    ``synaptic_events``: (B, layers) int64, input events x fan-out (weight reads of one bit each).
    """

    inputs: np.ndarray
    spikes: list[np.ndarray]
    preacts: list[np.ndarray]
    scores: np.ndarray
    classes: np.ndarray
    spike_counts: np.ndarray
    input_events: np.ndarray
    synaptic_events: np.ndarray


class LayerPlan:
    """A layer's weights rearranged once for fast evaluation."""

    def __init__(self, layer: Layer):
        self.layer = layer
        if layer.input_kind == "pixels":
            self.w = layer.weights_pm1().astype(np.float64).T  # (n_in, n_out), exact for |a| < 2**53
        else:
            self.words = _to_words(layer.weight_bits)  # (n_out, n_words) uint64

    def preact(self, x: np.ndarray) -> np.ndarray:
        """x: (B, n_in) uint8 -> a: (B, n_out) int64."""
        layer = self.layer
        if layer.input_kind == "pixels":
            return np.rint(x.astype(np.float64) @ self.w).astype(np.int64)
        s = _to_words(pack_bits(x))  # (B, n_words)
        n_active = np.bitwise_count(s).sum(axis=1, dtype=np.int64)  # popcount(s)
        out = np.empty((x.shape[0], layer.n_out), dtype=np.int64)
        step = max(1, _CHUNK_ELEMS // max(1, layer.n_out * self.words.shape[1]))
        for lo in range(0, x.shape[0], step):
            both = s[lo : lo + step, None, :] & self.words[None, :, :]
            out[lo : lo + step] = np.bitwise_count(both).sum(axis=2, dtype=np.int64)
        return 2 * out - n_active[:, None]


def _to_words(packed: np.ndarray) -> np.ndarray:
    """(..., nbytes) uint8 -> (..., ceil(nbytes/8)) uint64, zero padded."""
    nbytes = packed.shape[-1]
    pad = (-nbytes) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view("<u8")


def encode_input(model: HardwareModel, images: np.ndarray) -> np.ndarray:
    """(B, *input_shape) uint8 images -> (B, n_in) uint8 first-layer inputs."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    x = images.reshape(images.shape[0], -1)
    if x.shape[1] != model.n_inputs:
        raise ValueError(f"images have {x.shape[1]} values each, the model takes {model.n_inputs}")
    if model.input_encoding == "spikes":
        return (x >= model.input_threshold).astype(np.uint8)
    return x.copy()


def layer_preactivation(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One layer's integer pre-activation, the straightforward way (for reference and tests)."""
    return LayerPlan(layer).preact(np.asarray(x, dtype=np.uint8))


def fire(layer: Layer, a: np.ndarray) -> np.ndarray:
    """Threshold compare of a hidden layer: (B, n_out) int64 -> (B, n_out) uint8."""
    ge = a >= layer.thresholds[None, :]
    le = a <= layer.thresholds[None, :]
    return np.where(layer.compare[None, :] > 0, ge, le).astype(np.uint8)


def run(model: HardwareModel, images: np.ndarray, *, plans: list[LayerPlan] | None = None) -> GoldenResult:
    """Integer inference of ``model`` on a batch of uint8 images."""
    plans = plans or [LayerPlan(l) for l in model.layers]
    x = encode_input(model, images)
    inputs = x
    spikes, preacts, in_events = [], [], []
    for plan in plans:
        in_events.append(np.count_nonzero(x, axis=1).astype(np.int64))
        a = plan.preact(x)
        preacts.append(a)
        if plan.layer.is_output:
            break
        x = fire(plan.layer, a)
        spikes.append(x)
    scores = preacts[-1]
    classes = np.argmax(scores, axis=1).astype(np.int64)  # first maximum: ties to the lowest index
    B = inputs.shape[0]
    spike_counts = (
        np.stack([s.sum(axis=1, dtype=np.int64) for s in spikes], axis=1) if spikes else np.zeros((B, 0), np.int64)
    )
    input_events = np.stack(in_events, axis=1)
    fan_out = np.array([l.n_out for l in model.layers], dtype=np.int64)
    return GoldenResult(
        inputs=inputs,
        spikes=spikes,
        preacts=preacts,
        scores=scores,
        classes=classes,
        spike_counts=spike_counts,
        input_events=input_events,
        synaptic_events=input_events * fan_out[None, :],
    )
