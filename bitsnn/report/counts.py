"""Operation counts per layer and image: input events, synaptic events, spikes, weight- and
accumulator-memory reads, compares (from the golden model's result and the hardware plan)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import BitsnnError
from ..hwplan import CONV_ENGINES, MODES, HardwarePlan, membrane_adds, preact_bits

__all__ = ["LayerCounts", "acc_bits", "check_hw", "layer_counts"]


def acc_bits(layer) -> int:
    """Bits of a signed add that holds any pre-activation of ``layer`` (|a| <= R):
    :func:`bitsnn.hwplan.preact_bits`, the width the energy model prices an event's add at. Not
    :func:`bitsnn.hwplan.acc_bits_for`, the hardware's score and threshold registers, which also
    hold the thresholds -R-1 and R+1 (one bit more when R+1 is a power of two)."""
    return preact_bits(layer.a_max)


@dataclass
class LayerCounts:
    """Per-image counts of one layer for B images (arrays of shape (B,), int64).

    ``input_events``: nonzero inputs (address events); ``synaptic_events``: input events x fan-out;
    ``output_spikes``: spikes the layer emits (None for the output layer);
    ``weight_words``/``weight_bits``: weight-memory reads in words of ``word_bits`` bits and in bits
    (all cores of the layer); ``compares``: threshold compares (hidden) or argmax compares (output).
    """

    name: str
    n_in: int
    n_out: int
    acc_bits: int
    word_bits: int
    input_events: np.ndarray
    synaptic_events: np.ndarray
    output_spikes: np.ndarray | None
    weight_words: np.ndarray
    weight_bits: np.ndarray
    compares: int
    #: accumulator-memory words read per image (as many are written back) and their width: a
    #: convolution's ring of rows; dense event cores keep theirs in registers (0)
    acc_words: np.ndarray | None = None
    acc_word_bits: int = 0
    #: adds a synaptic event costs beyond its one accumulate: b - 1 for a b-bit weight times an
    #: 8-bit pixel (the multiply as shift-and-add), 0 for +-1 weights or spike input
    extra_adds: int = 0
    #: over time: membrane updates per image (a stateful neuron's steps, every neuron at every
    #: step), the adds each costs (:func:`bitsnn.hwplan.membrane_adds`) and their width
    membrane_updates: int = 0
    membrane_adds: int = 0
    membrane_bits: int = 0

    def summary(self) -> dict:
        def ms(a):
            a = np.asarray(a, dtype=np.float64)
            return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}

        return {
            "name": self.name,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "acc_bits": self.acc_bits,
            "input_events": ms(self.input_events),
            "synaptic_events": ms(self.synaptic_events),
            "output_spikes": None if self.output_spikes is None else ms(self.output_spikes),
            "firing_rate": None if self.output_spikes is None else float(self.output_spikes.mean() / self.n_out),
            "weight_word_bits": self.word_bits,
            "weight_reads_words": ms(self.weight_words),
            "weight_reads_bits": ms(self.weight_bits),
            "compares": self.compares,
            "accumulator_word_bits": self.acc_word_bits,
            "accumulator_reads_words": ms(self.acc_words if self.acc_words is not None else [0]),
            "accumulator_writes_words": ms(self.acc_words if self.acc_words is not None else [0]),
            "extra_adds_per_synaptic_event": self.extra_adds,
            "membrane_updates": self.membrane_updates,
            "membrane_adds_per_update": self.membrane_adds,
            "membrane_bits": self.membrane_bits,
        }


def check_hw(mode, lanes, word, conv_engine="auto"):
    if mode not in MODES:
        raise BitsnnError(f"unknown hardware mode {mode!r} (expected one of {MODES})")
    if conv_engine not in CONV_ENGINES:
        raise BitsnnError(f"unknown convolution stage {conv_engine!r} (expected one of {CONV_ENGINES})")
    for name, v in (("lanes", lanes), ("word", word)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise BitsnnError(f"{name} must be a positive integer, not {v!r}")


def layer_counts(model, golden, *, mode: str = "event", lanes: int = 32, word: int = 32,
                 max_neurons_per_core: int | None = None, conv_engine: str = "auto") -> list[LayerCounts]:
    """Spikes, synaptic events and weight-memory reads per layer and image.

    Weight memory (hw/core.py): event mode, a core of n_c neurons has P_c = min(P, n_c)-bit words
    and reads ceil(n_c / P_c) of them per input event; dense mode, P_c*W-bit words, all
    ceil(n_c / P_c) * ceil(n_in / W) of them per image whatever the input.

    Over T steps the counts are of all steps, as the hardware does them: the first layer, whose
    input is the same at every step, takes it once; a timed layer compares each neuron T
    times, and a stateful one updates its membrane T times.
    """
    check_hw(mode, lanes, word, conv_engine)
    plan = HardwarePlan.of(model, mode=mode, lanes=int(lanes), word=int(word), max_neurons_per_core=max_neurons_per_core,
                           conv_engine=conv_engine)
    out = []
    T = golden.steps
    for l, (layer, lp) in enumerate(zip(model.layers, plan.layers)):
        ev = np.asarray(golden.input_events[:, l], dtype=np.int64)
        syn = np.asarray(golden.synaptic_events[:, l], np.int64)
        once = T if l == 0 and model.static_input else 1  # the golden model adds a static input's T times
        ev, syn = ev // once, syn // once
        stateful = lp.timed and layer.neuron_model.stateful
        words, bits, word_bits = lp.weight_reads(ev, mode, word)
        spikes = None if layer.is_output else np.asarray(golden.spike_counts[:, l], dtype=np.int64)
        acc_words, acc_word_bits = lp.accumulator_accesses(ev)
        out.append(LayerCounts(
            name=layer.name, n_in=layer.n_in, n_out=layer.n_out, acc_bits=acc_bits(layer), word_bits=word_bits,
            input_events=ev, synaptic_events=syn, output_spikes=spikes,
            weight_words=np.asarray(words, np.int64), weight_bits=np.asarray(bits, np.int64),
            compares=layer.compares * lp.out_steps,
            acc_words=acc_words, acc_word_bits=acc_word_bits,
            extra_adds=layer.bits - 1 if layer.input_kind == "pixels" else 0,
            membrane_updates=layer.compares * T if stateful else 0,
            membrane_adds=membrane_adds(layer) if stateful else 0,
            membrane_bits=lp.membrane_bits,
        ))
    return out
