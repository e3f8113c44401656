"""Analytic cycle model of :class:`bitsnn.hw.Accelerator` (NumPy only: no amaranth, no torch).

``predict_cycles`` gives, per image, exactly the cycle count the hardware reports: the cycles from
the one after the last pixel is accepted to the first valid ``result`` word. The hardware runs the
layers one after another, so

    cycles = START + sum_l T_l + C                                   (C = number of classes)

    dense:  T_l = G_l * ceil(n_in_l / W) + DENSE_LATENCY
    event:  T_l = EVENT_LEAD + Z_l + E_l * G_l + G_l + EVENT_TAIL
    conv:   T_l = bitsnn.hwplan.ConvPlan.cycles (event stage: EVENT_LEAD + Z_l + E_l * k*k * G_l
            + H * W * G_l * T; window stage: H * W * G_l * T * k*k + WINDOW_LATENCY)

Over T time steps (layer by layer: each stage runs all T steps of its layer before the next
starts) E_l and Z_l count every step's input the stage reads: once for the first layer, whose
input is the same at every step, T maps for a layer after a timed convolution.

with G_l = max over the layer's cores of ceil(n_core / min(P, n_core)) (the lane groups of its
biggest core: the first one), E_l the nonzero inputs of layer l (address events), Z_l the
all-zero W-bit chunks of its input vector (one skip beat each). Constants (every cycle named):

The constants live in :mod:`bitsnn.hwplan` (one place for every fact about the hardware):

- ``START`` = 1: the sequencer's START state of layer 0 is the first counted cycle; each later
  layer's START cycle is inside the previous T_l.
- ``DENSE_LATENCY`` = 4: START (1) + weight/input read (1) + popcount register (1) + accumulate
  and fire register (1); ``done`` is seen the cycle it is valid, and the next START follows.
- ``EVENT_LEAD`` = 6: START (1), router FETCH (1) and LOAD (1), first beat written into the FIFO
  (1), ``SyncFIFOBuffered`` write-to-read latency (2); the core accepts the first beat in the
  last of these cycles.
- each skip beat holds the core 1 cycle (Z_l), each event G_l cycles (E_l * G_l); the router
  emits a beat every cycle, so the core is the bottleneck and the FIFO never runs dry
  (``fifo_depth`` >= 3 is required by the Accelerator: a depth-2 ``SyncFIFOBuffered`` leaves bubbles);
- ``G_l`` cycles to read the accumulators out through the threshold compare, and
  ``EVENT_TAIL`` = 2: accumulator read (1) + compare register / ``done`` (1) before the next START.
- ``C`` cycles of the sequential argmax (ties to the lowest index) before the first result word.
"""

from __future__ import annotations

import numpy as np

from bitsnn.hwplan import DENSE_LATENCY, EVENT_LEAD, EVENT_TAIL, START, HardwarePlan, default_lanes

__all__ = ["default_lanes", "START", "DENSE_LATENCY", "EVENT_LEAD", "EVENT_TAIL", "zero_chunks",
           "predict_cycles", "layer_cycles", "bandwidth_bound"]


def _plan(model, mode, lanes, word, k, max_neurons_per_core, conv_engine="auto") -> HardwarePlan:
    return HardwarePlan.of(model, mode=mode, lanes=lanes, word=word, k=k, max_neurons_per_core=max_neurons_per_core,
                           conv_engine=conv_engine)


def zero_chunks(x: np.ndarray, word: int) -> np.ndarray:
    """(B, n) inputs -> (B,) number of all-zero ``word``-wide chunks (the last one zero padded)."""
    B, n = x.shape
    pad = (-n) % word
    nz = np.concatenate([x != 0, np.zeros((B, pad), bool)], axis=1).reshape(B, -1, word).any(axis=2)
    return (~nz).sum(axis=1).astype(np.int64)


def _layer_inputs(golden_result):
    """Each layer's input as its stage reads it: the encoded input (once: the hardware takes only
    inputs that are the same at every step), then each hidden layer's spikes of every step."""
    return [golden_result.inputs] + golden_result.tap_spikes


def layer_cycles(model, golden_result, *, mode: str, lanes: int, word: int, k: int = 1,
                 max_neurons_per_core: int | None = None, conv_engine: str = "auto") -> np.ndarray:
    """(B, layers) int64: T_l of each layer (see the module docstring)."""
    plan = _plan(model, mode, lanes, word, k, max_neurons_per_core, conv_engine)
    B = golden_result.inputs.shape[0]
    out = np.zeros((B, len(model.layers)), np.int64)
    for l, (lp, x) in enumerate(zip(plan.layers, _layer_inputs(golden_result))):
        if mode == "dense":
            out[:, l] = lp.dense_cycles()
        else:
            if lp.input_layout is not None:  # a map, as its store holds it (padding included)
                x = lp.input_layout.to_store(x)
            events = np.count_nonzero(x, axis=1).astype(np.int64)  # of every step the stage reads
            out[:, l] = lp.event_cycles(events, zero_chunks(x, word))
    return out


def predict_cycles(model, golden_result, *, mode: str, lanes: int, word: int, k: int = 1,
                   max_neurons_per_core: int | None = None, fifo_depth: int = 4, conv_engine: str = "auto") -> np.ndarray:
    """(B,) int64: the Accelerator's cycle count per image, exactly. ``k`` and ``fifo_depth``
    (>= 3) do not change it: the core is the bottleneck either way."""
    t = layer_cycles(model, golden_result, mode=mode, lanes=lanes, word=word, k=k,
                     max_neurons_per_core=max_neurons_per_core, conv_engine=conv_engine)
    return START + t.sum(axis=1) + model.num_classes


def bandwidth_bound(model, golden_result, *, mode: str, lanes: int, word: int,
                    max_neurons_per_core: int | None = None) -> np.ndarray:
    """(B,) float: weight bits read / weight-memory bits per cycle, summed over the layers.

    Event mode reads one useful weight bit per synaptic event (E_l * n_out_l in a dense layer, the
    accumulator updates of a convolution), dense mode all n_in * n_out."""
    plan = _plan(model, mode, lanes, word, 1, max_neurons_per_core)
    B = golden_result.inputs.shape[0]
    out = np.zeros(B, np.float64)
    for l, (layer, lp) in enumerate(zip(model.layers, plan.layers)):
        bpc = lp.weight_bits_per_cycle(mode, word)
        if not bpc:  # a layer without weights (a global sum pool) reads none
            continue
        bits = (golden_result.synaptic_events[:, l] if mode == "event"
                else np.full(B, layer.n_in * layer.n_out))
        if l == 0 and golden_result.steps > 1:  # the first layer's sums are made once
            bits = bits // golden_result.steps
        out += bits / bpc
    return out
