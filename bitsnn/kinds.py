"""Layer kinds: the one list of them, and where each stage keeps its part of each.

A layer's kind is the ``kind`` field of its entry in the hardware-model file. Every stage of the
flow handles a kind through one *part*, named here as ``"module:attribute"`` and imported only
when asked for, so that this list imports nothing (the golden model never loads torch or
amaranth, hw/ never loads torch or sim/):

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
============  =====================================================================================

Adding a kind is adding an entry here and its parts (docs/kinds.md); ``tests/test_kinds.py``
checks that every part of every kind exists and answers to its kind. A kind may come before its
hardware: its :data:`HARDWARE_PARTS` are then None, the file, export and golden model take it,
and sim, build, report and run refuse it by name (:func:`bitsnn.hwplan.check_supported`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = ["PARTS", "HARDWARE_PARTS", "CONNECTIVITIES", "LayerKind", "KINDS", "kind", "of", "part"]

#: the parts every kind has (see the module docstring)
PARTS = ("layer", "export", "golden", "plan", "estimate", "stage")
#: the parts a kind without hardware yet leaves None
HARDWARE_PARTS = ("plan", "estimate", "stage")
#: how a kind's neurons connect to its input: every input (a vector out), or a k x k window of
#: feature maps (maps out)
CONNECTIVITIES = ("dense", "conv")


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer: its file name, a line about it, its connectivity and its parts
    ("module:attribute"). The questions code outside the parts asks about a layer are answered
    here, not by branching on its class (tests/test_kind_seam.py counts what still does)."""

    name: str
    summary: str
    parts: dict = field(default_factory=dict)
    connectivity: str = "dense"

    @property
    def output_is_map(self) -> bool:
        """Whether the layer's output is a stack of feature maps (else a vector)."""
        return self.connectivity == "conv"

    @property
    def takes_runtime_weights(self) -> bool:
        """Whether its weights can live in writable memory (SPRAM, WRITE_WEIGHTS): a dense
        layer's can; a convolution's kernels stay in its ROM. Weight bits are their own rule
        (bitsnn.hwplan.runtime_weights_problem)."""
        return self.connectivity == "dense"

    @property
    def has_hardware(self) -> bool:
        """Whether the kind has a hardware plan, estimate and stage."""
        return all(self.parts[p] is not None for p in HARDWARE_PARTS)

    def part(self, name: str):
        """The object that part ``name`` names, imported now."""
        if name not in PARTS:
            raise KeyError(f"unknown part {name!r} (expected one of {PARTS})")
        if self.parts[name] is None:
            raise KeyError(f"layer kind {self.name!r} has no {name} part yet")
        module, attr = self.parts[name].split(":")
        return getattr(importlib.import_module(module), attr)


def _kind(name: str, summary: str, connectivity: str, **parts: str | None) -> LayerKind:
    assert tuple(parts) == PARTS, parts
    assert all(parts[p] for p in PARTS if p not in HARDWARE_PARTS), parts
    assert connectivity in CONNECTIVITIES, connectivity
    return LayerKind(name, summary, parts, connectivity)


#: every layer kind, in the order the file format introduced them
KINDS: dict[str, LayerKind] = {k.name: k for k in (
    _kind("binary_dense", "fully connected, +-1 weights, {0,1} spikes or 8-bit pixels in; hidden or output", "dense",
          layer="bitsnn.hwmodel:Layer",
          export="bitsnn.model.export:DENSE",
          golden="bitsnn.sim.golden:DenseEvaluator",
          plan="bitsnn.hwplan:plan_dense",
          estimate="bitsnn.hw.estimate:estimate_dense",
          stage="bitsnn.hw.stage:DenseStage"),
    _kind("binary_conv2d", "k x k convolution, stride 1, zero padding, +-1 kernels, optional 2 x 2 OR pool; hidden",
          "conv",
          layer="bitsnn.hwmodel:ConvLayer",
          export="bitsnn.model.export:CONV",
          golden="bitsnn.sim.golden:ConvEvaluator",
          plan="bitsnn.hwplan:plan_conv",
          estimate="bitsnn.hw.estimate:estimate_conv",
          stage="bitsnn.hw.stage:ConvStage"),
    # Multi-bit weights (format version 4): the same modules, golden evaluators and stages as their
    # binary twins, integer weights of 2..8 bits (event mode; event stage for convolutions).
    _kind("int_dense", "fully connected, 2..8-bit integer weights, {0,1} spikes or 8-bit pixels in; hidden or output",
          "dense",
          layer="bitsnn.hwmodel:IntDenseLayer",
          export="bitsnn.model.export:DENSE",
          golden="bitsnn.sim.golden:DenseEvaluator",
          plan="bitsnn.hwplan:plan_int_dense",
          estimate="bitsnn.hw.estimate:estimate_dense",
          stage="bitsnn.hw.stage:DenseStage"),
    _kind("int_conv2d", "k x k convolution as binary_conv2d, 2..8-bit integer kernels (event stage); hidden", "conv",
          layer="bitsnn.hwmodel:IntConvLayer",
          export="bitsnn.model.export:CONV",
          golden="bitsnn.sim.golden:ConvEvaluator",
          plan="bitsnn.hwplan:plan_int_conv",
          estimate="bitsnn.hw.estimate:estimate_conv",
          stage="bitsnn.hw.stage:ConvStage"),
)}


def kind(name: str) -> LayerKind:
    """The kind called ``name``; KeyError naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unsupported layer kind {name!r} (known: {', '.join(KINDS)})") from None


def of(layer) -> LayerKind:
    """The kind of ``layer`` (anything with a ``kind`` name: a layer of the hardware model)."""
    return kind(layer.kind)


def part(kind_name: str, part_name: str):
    """Part ``part_name`` of the kind called ``kind_name``."""
    return kind(kind_name).part(part_name)
