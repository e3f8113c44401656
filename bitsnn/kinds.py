"""Layer kinds and neuron models: the one list of each, and where each stage keeps its part.

A layer is its **connectivity** (a :class:`LayerKind`: ``dense``, ``conv2d``) x its **weight
bits** (1: +-1 weights; 2..8: symmetric integers; an attribute of the layer) x its **neuron
model** (a :class:`NeuronModel`: ``step``, today's one-step threshold neuron). The file names a
layer's kind and bits together, as it always has: ``binary_dense`` / ``int_dense`` (with a
``bits`` key), ``binary_conv2d`` / ``int_conv2d`` (:data:`FILE_KINDS`); those names are
spellings of (kind, bits), not kinds of their own.

Every stage of the flow handles a kind through one *part*, named here as ``"module:attribute"``
and imported only when asked for, so that this list imports nothing (the golden model never
loads torch or amaranth, hw/ never loads torch or sim/):

============  =====================================================================================
part          what it states
============  =====================================================================================
``layer``     the file's fields and their validation, fan-in and fan-out, value range, operation
              counts (:mod:`bitsnn.hwmodel`)
``export``    the torch module it is exported from, and how (:mod:`bitsnn.model.export`)
``golden``    its evaluation and synaptic events in the golden model (:mod:`bitsnn.sim.golden`)
``plan``      its hardware plan: lanes, groups, accumulator widths, cycles (:mod:`bitsnn.hwplan`)
``estimate``  its resource estimate (:mod:`bitsnn.hw.estimate`)
``stage``     its Amaranth stage, behind the one stage signature (:mod:`bitsnn.hw.stage`)
``nir``       the NIR nodes it is written as (:mod:`bitsnn.nirgraph`)
============  =====================================================================================

The questions code outside the parts asks about a layer (is its output a map, can it take
run-time weights, which header keys it has, which NIR nodes it reads from) are answered by its
:class:`LayerKind` (``kinds.of(layer)``), not by branching on its class or name;
``tests/test_kind_seam.py`` counts what still branches.

Adding a kind or a neuron model is adding an entry here and its parts (docs/kinds.md);
``tests/test_kinds.py`` checks that every part exists and answers to its entry, and that
docs/kinds.md's table matches this file. A kind may come before its hardware: its
:data:`HARDWARE_PARTS` are then None, the file, export and golden model take it, and sim, build,
report and run refuse it by name (:func:`bitsnn.hwplan.check_supported`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = ["PARTS", "HARDWARE_PARTS", "CONNECTIVITIES", "LayerKind", "KINDS", "FILE_KINDS", "kind", "of", "part",
           "file_kind", "NEURON_PARTS", "NeuronModel", "NEURONS", "neuron", "RESETS"]

#: the parts every kind has (see the module docstring)
PARTS = ("layer", "export", "golden", "plan", "estimate", "stage", "nir")
#: the parts a kind without hardware yet leaves None
HARDWARE_PARTS = ("plan", "estimate", "stage")
#: how a kind's neurons connect to its input: every input (a vector out), a k x k window of
#: feature maps (maps out), or every position of one map (a channel's sum out: ALBSNN's global
#: sum pooling head, no weights and no neurons)
CONNECTIVITIES = ("dense", "conv", "global_pool")


def _resolve(owner: str, parts: dict, name: str, known: tuple):
    if name not in known:
        raise KeyError(f"unknown part {name!r} (expected one of {known})")
    if parts[name] is None:
        raise KeyError(f"{owner} has no {name} part yet")
    module, attr = parts[name].split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer (one connectivity): its name, a line about it, its parts
    ("module:attribute") and the answers to the questions other code asks about its layers."""

    name: str
    summary: str
    parts: dict = field(default_factory=dict)
    connectivity: str = "dense"
    #: the file's fields of a layer of this kind beside the common ones (name, kind, n_in,
    #: n_out, input, output; ``bits`` with multi-bit weights)
    header_keys: tuple = ()
    #: the first format version that holds the kind (multi-bit weights need version 4)
    min_version: int = 1
    #: the NIR node types its synapses are read from and written as
    nir_nodes: tuple = ()
    #: the file's name of the kind with +-1 weights, and with multi-bit ones
    file_names: tuple = ()

    @property
    def output_is_map(self) -> bool:
        """Whether the layer's output is a stack of feature maps (else a vector)."""
        return self.connectivity == "conv"

    @property
    def input_is_map(self) -> bool:
        """Whether the layer reads its input as a stack of feature maps (else a vector)."""
        return self.connectivity in ("conv", "global_pool")

    @property
    def has_weights(self) -> bool:
        """Whether its layers hold weights (a global sum pool adds its inputs up as they are)."""
        return self.connectivity != "global_pool"

    @property
    def can_be_hidden(self) -> bool:
        """Whether a layer of this kind may pass spikes on (it has neurons); else output only."""
        return self.has_weights

    @property
    def takes_runtime_weights(self) -> bool:
        """Whether its weights can live in writable memory (SPRAM, WRITE_WEIGHTS): a dense
        layer's can; a convolution's kernels stay in its ROM. Weight bits are their own rule
        (bitsnn.hwplan.runtime_weights_problem)."""
        return self.connectivity == "dense"

    @property
    def can_be_output(self) -> bool:
        """Whether the network's last layer (its class scores) may be of this kind."""
        return not self.output_is_map

    @property
    def has_hardware(self) -> bool:
        """Whether the kind has a hardware plan, estimate and stage."""
        return all(self.parts[p] is not None for p in HARDWARE_PARTS)

    def file_kind(self, bits: int) -> str:
        """The file's name of a layer of this kind with ``bits``-bit weights (a kind without
        weights has one name)."""
        return self.file_names[0] if bits == 1 or len(self.file_names) == 1 else self.file_names[1]

    def part(self, name: str):
        """The object that part ``name`` names, imported now."""
        return _resolve(f"layer kind {self.name!r}", self.parts, name, PARTS)


def _kind(name: str, summary: str, connectivity: str, *, header_keys=(), min_version=1, nir_nodes=(),
          file_names=None, **parts: str | None) -> LayerKind:
    assert tuple(parts) == PARTS, parts
    assert all(parts[p] for p in PARTS if p not in HARDWARE_PARTS), parts
    assert connectivity in CONNECTIVITIES, connectivity
    return LayerKind(name, summary, parts, connectivity, tuple(header_keys), min_version, tuple(nir_nodes),
                     tuple(file_names or (f"binary_{name}", f"int_{name}")))


#: every layer kind, in the order the file format introduced them
KINDS: dict[str, LayerKind] = {k.name: k for k in (
    _kind("dense", "fully connected, {0,1} spikes or 8-bit pixels in; hidden or output", "dense",
          nir_nodes=("Affine", "Linear"),
          layer="bitsnn.hwmodel:Layer",
          export="bitsnn.model.export:DENSE",
          golden="bitsnn.sim.golden:DenseEvaluator",
          plan="bitsnn.hwplan:plan_dense",
          estimate="bitsnn.hw.estimate:estimate_dense",
          stage="bitsnn.hw.stage:DenseStage",
          nir="bitsnn.nirgraph:dense_nodes"),
    _kind("conv2d", "k x k convolution, stride 1, zero padding, optional 2 x 2 OR pool; hidden", "conv",
          header_keys=("in_shape", "channels", "kernel", "pool"), min_version=3, nir_nodes=("Conv2d",),
          layer="bitsnn.hwmodel:ConvLayer",
          export="bitsnn.model.export:CONV",
          golden="bitsnn.sim.golden:ConvEvaluator",
          plan="bitsnn.hwplan:plan_conv",
          estimate="bitsnn.hw.estimate:estimate_conv",
          stage="bitsnn.hw.stage:ConvStage",
          nir="bitsnn.nirgraph:conv_nodes"),
    # ALBSNN's head (Pei et al. 2023): each channel's spikes summed over every position of its map
    # (and every step) into that class's score; no weights, no neurons; the output layer only.
    # Format version 6.
    _kind("global_pool", "global sum pooling: each channel's spikes summed over its whole map into its class "
          "score (ALBSNN's head); output only, no weights", "global_pool",
          header_keys=("in_shape",), min_version=6, nir_nodes=("SumPool2d", "AvgPool2d"),
          file_names=("global_sum_pool",),
          layer="bitsnn.hwmodel:GapLayer",
          export="bitsnn.model.export:GAP",
          golden="bitsnn.sim.golden:GapEvaluator",
          plan="bitsnn.hwplan:plan_gap",
          estimate="bitsnn.hw.estimate:estimate_gap",
          stage="bitsnn.hw.stage:GapStage",
          nir="bitsnn.nirgraph:gap_nodes"),
)}

#: the file's layer-kind names: name -> (kind, whether its weights are multi-bit); ``binary_*``
#: since versions 1 and 3, ``int_*`` (with a ``bits`` key) since version 4
FILE_KINDS: dict[str, tuple[LayerKind, bool]] = {
    **{k.file_names[0]: (k, False) for k in KINDS.values()},
    **{k.file_names[1]: (k, True) for k in KINDS.values() if len(k.file_names) > 1},
}


def kind(name: str) -> LayerKind:
    """The kind called ``name`` (or spelt so in a file: ``binary_conv2d`` is ``conv2d``);
    KeyError naming the known ones."""
    if name in KINDS:
        return KINDS[name]
    if name in FILE_KINDS:
        return FILE_KINDS[name][0]
    raise KeyError(f"unsupported layer kind {name!r} (known: {', '.join(KINDS)}; in files: "
                   f"{', '.join(FILE_KINDS)})")


def file_kind(name: str) -> tuple[LayerKind, bool]:
    """The kind a file's layer-kind name spells, and whether its weights are multi-bit."""
    if name not in FILE_KINDS:
        kind(name)  # the error naming the known ones
        raise KeyError(f"{name!r} is not a file's layer kind (one of {', '.join(FILE_KINDS)})")
    return FILE_KINDS[name]


def of(layer) -> LayerKind:
    """The kind of ``layer`` (anything with a ``kind`` name: a layer of the hardware model)."""
    return kind(layer.kind)


def part(kind_name: str, part_name: str):
    """Part ``part_name`` of the kind called ``kind_name``."""
    return kind(kind_name).part(part_name)


# ---- neuron models -----------------------------------------------------------------------------

#: the parts every neuron model has: its torch module (training and the exact path), its golden
#: update, its hardware plan (membrane width, cycles), its estimate and its hardware piece
NEURON_PARTS = ("torch", "golden", "plan", "estimate", "hw")


@dataclass(frozen=True)
class NeuronModel:
    """How a hidden layer's neurons turn their integer input into spikes: its name, a line about
    it, its integer parameters (the file's keys) and its parts."""

    name: str
    summary: str
    parts: dict = field(default_factory=dict)
    #: whether a neuron keeps a membrane between time steps (then its layer has a ``bias`` array
    #: and a ``reset`` rule, and its thresholds are positive)
    stateful: bool = False
    #: the first format version that holds it
    min_version: int = 1
    #: the file's fields of a layer with this model beside ``neuron`` (a stateful one: ``reset``)
    header_keys: tuple = ()
    #: the leaks m it takes: V <- V - ((V * m) >> 16) before each step, a decay of 1 - m/65536
    #: (m = 2^(16-k) is V - (V >> k)); 0: no leak
    leaks: range = range(0, 1)
    #: whether its spikes carry a sign (+1 and -1: the next layer adds or subtracts a weight). An
    #: OR pool of signed spikes means nothing, so a convolution of such neurons pools before them:
    #: each pooled neuron takes the sum of its window's sums.
    signed: bool = False

    @property
    def has_hardware(self) -> bool:
        return all(self.parts[p] is not None for p in ("plan", "estimate", "hw"))

    def leak_problem(self, leak) -> str | None:
        """Why ``leak`` is not a leak m this model takes, or None."""
        if type(leak) is int and leak in self.leaks:
            return None
        takes = "no leak (0)" if len(self.leaks) == 1 else f"a leak of {self.leaks.start}..{self.leaks.stop - 1}"
        return f"leak {leak!r}: {self.name} neurons take {takes}"

    def part(self, name: str):
        """The object that part ``name`` names, imported now."""
        return _resolve(f"neuron model {self.name!r}", self.parts, name, NEURON_PARTS)


def _neuron(name: str, summary: str, *, stateful=False, min_version=1, header_keys=(), leaks=range(0, 1),
            signed=False, **parts: str | None) -> NeuronModel:
    assert tuple(parts) == NEURON_PARTS, parts
    assert parts["torch"] and parts["golden"], parts
    return NeuronModel(name, summary, parts, stateful, min_version, tuple(header_keys), leaks, signed)


#: every neuron model, in the order the file format introduced them
NEURONS: dict[str, NeuronModel] = {n.name: n for n in (
    _neuron("step", "spike = [a >= theta] (or [a <= theta] for a negative folded scale), no state",
            torch="bitsnn.model.layers:SpikeActivation",
            golden="bitsnn.sim.golden:StepNeurons",
            plan="bitsnn.hwplan:neuron_accumulator",
            estimate="bitsnn.hw.estimate:neuron_acc_bits",
            hw="bitsnn.hw.core:threshold_spikes"),
    # Format version 5: membranes over T time steps (docs/hardware-model.md, "Time steps").
    _neuron("if", "integrate and fire: V += c*a*2^shift + b each step; a spike when V >= theta; reset by "
            "subtraction or to 0",
            stateful=True, min_version=5, header_keys=("reset", "shift"),
            torch="bitsnn.model.layers:IFActivation",
            golden="bitsnn.sim.golden:IFNeurons",
            plan="bitsnn.hwplan:membrane_bits",
            estimate="bitsnn.hw.estimate:membrane_lanes",
            hw="bitsnn.hw.neuron:MembraneLanes"),
    _neuron("lif", "if with an exact integer leak before each step: V <- V - ((V * leak) >> 16), arithmetic shift",
            stateful=True, min_version=5, header_keys=("reset", "leak", "shift"), leaks=range(1, 1 << 16),
            torch="bitsnn.model.layers:IFActivation",
            golden="bitsnn.sim.golden:IFNeurons",
            plan="bitsnn.hwplan:membrane_bits",
            estimate="bitsnn.hw.estimate:membrane_lanes",
            hw="bitsnn.hw.neuron:MembraneLanes"),
    # Fast-SNN (Hu et al., TPAMI 2023): a quantised ANN's b-bit activation as T = 2^b - 1 steps
    _neuron("signed_if", "Fast-SNN's signed integrate and fire: V starts at theta/2; V += c*a*2^shift + b each step; "
            "V >= theta: spike +1 and V -= theta; else V < 0 after more +1 than -1 spikes: spike -1 and V += theta",
            stateful=True, min_version=5, header_keys=("shift",), signed=True,
            torch="bitsnn.model.layers:SignedIFActivation",
            golden="bitsnn.sim.golden:SignedIFNeurons",
            plan="bitsnn.hwplan:membrane_bits",
            estimate="bitsnn.hw.estimate:membrane_lanes",
            hw="bitsnn.hw.neuron:MembraneLanes"),
)}

#: how a stateful neuron's membrane is reset after a spike: V -= theta at once, V = 0, or V -=
#: theta at the next step, after its leak (snnTorch's ``Leaky``: mem = beta*mem + I - s_prev*theta)
RESETS = ("subtract", "zero", "subtract-next")


def neuron(name: str) -> NeuronModel:
    """The neuron model called ``name``; KeyError naming the known ones."""
    try:
        return NEURONS[name]
    except KeyError:
        raise KeyError(f"unsupported neuron model {name!r} (known: {', '.join(NEURONS)})") from None
