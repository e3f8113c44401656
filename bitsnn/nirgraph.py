"""NIR (the Neuromorphic Intermediate Representation, PyPI ``nir``) to and from the hardware model.

NumPy and ``nir`` only (``nir`` is imported when a function here runs): no torch, no amaranth.

**Export** (:func:`to_nir`) writes each layer in the integer form the hardware computes, so that
any NIR reader gets the same spikes in float32 at one time step:

- a hidden dense or conv layer is an ``Affine`` / ``Conv2d`` with weights ``s * w`` (w the +-1
  weights, or a multi-bit layer's integers; s = +1 for compare ">=" and -1 for "<=") and bias ``1.5 - s * theta``, then an ``IF``
  with ``r = 1`` and ``v_threshold = 1``: ``v = s(a - theta) + 1.5 > 1`` exactly when
  ``a >= theta`` (s = +1) or ``a <= theta`` (s = -1); ``v`` is a whole number plus one half, so
  ``>`` and ``>=`` readers agree. The weights stay +-1 and every threshold is the same, which is
  what readers that want one threshold per layer (snnTorch) need;
- a 2 x 2 OR pool is ``SumPool2d`` (2, stride 2), then an ``IF`` at 0.5 (a pooled sum of 0/1
  spikes fires when any fired);
- the conv maps are flattened (``Flatten`` from dimension 0, NIR's shapes have no batch), in
  torch's channel, row, column order;
- the output layer is a ``Linear`` of the +-1 (or integer) weights: its outputs are the integer
  class scores.

The graph takes the first layer's input: the 8-bit pixels (``input_encoding = "pixels"``) or the
0/1 spikes ``[pixel >= input_threshold]``. The graph's metadata keeps the input encoding, its
threshold, the image shape, the crop and the file's meta, and each synapse node keeps its ``compare`` directions,
so that :func:`from_nir` gives back the very file (the same content hash).

**Import** (:func:`from_nir`) takes a chain ``Input [Threshold] (Conv2d IF [SumPool2d|AvgPool2d
IF])* [Flatten] (Affine|Linear IF|LIF)* (Affine|Linear) [IF|LIF] Output`` whose weights are
``+-c`` or c times b-bit integers per neuron or channel (c > 0, folded into the threshold) and whose
neurons fold into integer thresholds at one time step, or, with ``steps`` T > 1, into ``if`` and
``lif`` membranes over T steps (:func:`_membrane`; exact for IF neurons whose biases and
thresholds are whole at a power of two, approximate for a LIF's float leak, with the agreement
measured by :func:`graph_agreement` against the graph's float semantics, :func:`simulate_graph`).
Anything else is refused with one line naming the node.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from . import BitsnnError, kinds
from .kinds import RESETS
from .fileio import atomic_write_bytes, check_output_file, magic_kind, same_path
from .hwmodel import (MAX_MEMBRANE_PARAM, MAX_SHIFT, MAX_STEPS, MODEL_FILE, WEIGHT_BITS, ConvLayer, GapLayer, HardwareModel, HardwareModelError, Layer, weight_fields,
                      time_text, weight_limit)

__all__ = ["to_nir", "integer_form", "check_nir_output", "write_nir", "from_nir", "read_nir", "import_main", "NirImportError"]

#: bitsnn's marker in a graph's metadata (the version of this mapping)
MARK = "bitsnn_nir"
MAPPING_VERSION = 1
#: the IF threshold of a layer's neurons
V_THRESHOLD = 1.0
#: the threshold after a pooled sum of 0/1 spikes: fires when any fired
OR_THRESHOLD = 0.5
#: the time step a LIF neuron's one step is taken with, unless told (snnTorch's NIR convention)
DEFAULT_DT = 1e-4
_RTOL = 1e-6


class NirImportError(BitsnnError):
    """A NIR graph that does not map onto bitsnn's arithmetic; the message names the node."""


def _nir():
    try:
        import nir
    except ImportError:  # pragma: no cover - the nir extra is part of bitsnn[all]
        raise BitsnnError("NIR support needs the 'nir' package: pip install 'bitsnn[nir]'") from None
    return nir


# --- export ---------------------------------------------------------------------------------


def integer_form(layer: Layer, v_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights s*w, biases v_threshold + 0.5 - s*theta) of a hidden layer, as float32 rows, with s
    its compare signs: ``s*w . x + b > v_threshold`` exactly when the hardware neuron fires, and
    the left side is a whole number plus one half. The one form of a layer outside bitsnn: the
    NIR graph (v_threshold 1) and the NeuroBench module (0, :mod:`bitsnn.model.neurobench`)."""
    s = layer.compare.astype(np.float64)
    w = layer.weights_int().astype(np.float64) * s[:, None]
    b = v_threshold + 0.5 - s * layer.thresholds.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def neuron_form(layer: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(weights, biases, the IF's v_threshold per row, the synapse node's metadata) of a hidden
    layer as NIR writes it. A step neuron: :func:`integer_form` at v_threshold 1. An ``if``
    neuron with reset to zero, over T steps: weights c*2^s*w, biases b, v_threshold theta - 0.5;
    NIR's IF then adds them to v each step and fires when v > theta - 0.5, that is v >= theta (v is
    whole), resetting to 0: the hardware model's rule, exactly in float32 while |v| < 2^24."""
    meta = {"compare": layer.compare.astype(np.int8)}
    if not layer.neuron_model.stateful:
        w, b = integer_form(layer, V_THRESHOLD)
        return w, b, np.full(layer.rows, V_THRESHOLD, np.float32), meta
    c = layer.compare.astype(np.float64) * 2.0 ** layer.shift
    w = layer.weights_int().astype(np.float64) * c[:, None]
    meta["shift"] = np.int64(layer.shift)
    return (w.astype(np.float32), layer.bias.astype(np.float32), (layer.thresholds - 0.5).astype(np.float32), meta)


def _per_position(v: np.ndarray, shape) -> np.ndarray:
    """A per-channel value over a layer's (C, H, W) positions."""
    return np.broadcast_to(np.asarray(v, np.float32).reshape(-1, *[1] * (len(shape) - 1)), shape).copy()


def conv_nodes(nir, layer: ConvLayer, add, maps):
    """The ``conv2d`` kind's ``nir`` part: ``Conv2d`` then ``IF`` (and ``SumPool2d`` then an OR
    ``IF`` when pooled), each given to ``add(name, node)``; returns the output maps' shape."""
    c_in, h, w_ = layer.in_shape
    k = layer.kernel
    w, b, vt, meta = neuron_form(layer)
    add(layer.name, nir.Conv2d(input_shape=(h, w_), weight=w.reshape(layer.channels, c_in, k, k),
                               stride=1, padding=k // 2, dilation=1, groups=1, bias=b, metadata=meta))
    shape = (layer.channels, h, w_)
    add(f"{layer.name}_spike", nir.IF(r=np.ones(shape, np.float32), v_threshold=_per_position(vt, shape),
                                      v_reset=np.zeros(shape, np.float32)))
    if layer.pool > 1:
        p = layer.pool
        add(f"{layer.name}_pool", nir.SumPool2d(kernel_size=np.array([p, p]), stride=np.array([p, p]),
                                                padding=np.array([0, 0])))
        shape = layer.out_shape
        add(f"{layer.name}_or", nir.IF(r=np.ones(shape, np.float32),
                                       v_threshold=np.full(shape, OR_THRESHOLD, np.float32),
                                       v_reset=np.zeros(shape, np.float32)))
    return layer.out_shape


def dense_nodes(nir, layer: Layer, add, maps):
    """The ``dense`` kind's ``nir`` part: a ``Flatten`` first when ``maps`` (the previous layer's
    output maps) is not None, then ``Affine`` and ``IF`` (hidden) or ``Linear`` (the output
    layer); returns None (a vector)."""
    if maps is not None:  # the first dense layer after convolutions takes their flattened maps
        add("flatten", nir.Flatten(input_type={"input": np.array(maps)}, start_dim=0, end_dim=-1))
    if layer.is_output:
        add(layer.name, nir.Linear(weight=np.asarray(layer.weights_int(), dtype=np.float32)))
        return None
    w, b, vt, meta = neuron_form(layer)
    add(layer.name, nir.Affine(weight=w, bias=b, metadata=meta))
    n = (layer.n_out,)
    add(f"{layer.name}_spike", nir.IF(r=np.ones(n, np.float32), v_threshold=vt, v_reset=np.zeros(n, np.float32)))
    return None


def gap_nodes(nir, layer, add, maps):
    """The ``global_pool`` kind's ``nir`` part (ALBSNN's head, the output layer): ``SumPool2d``
    over each whole map, then ``Flatten``: the C channel sums, the class scores; with several
    channels a class, then a ``Linear`` of 0/1 weights that adds each class's channels. Returns
    None (a vector)."""
    c, h, w = layer.in_shape
    add(layer.name, nir.SumPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0])))
    add(f"{layer.name}_flatten", nir.Flatten(input_type={"input": np.array((c, 1, 1))}, start_dim=0, end_dim=-1))
    if layer.group > 1:
        add(f"{layer.name}_classes", nir.Linear(weight=_class_sums(c, layer.n_out)))
    return None


def _class_sums(channels: int, classes: int) -> np.ndarray:
    """(classes, channels) float32: 1 where a channel is one of its class's consecutive ones."""
    return np.repeat(np.eye(classes, dtype=np.float32), channels // classes, axis=1)


def nir_problem(hw: HardwareModel) -> str | None:
    """Why :func:`to_nir` cannot write ``hw`` exactly, or None. It writes one step of step neurons,
    and over T steps ``if`` neurons that reset to zero (NIR's IF) of an input that is the same at
    every step; a step neuron over several steps (whose membrane clears every step), a ``lif``
    neuron (its integer leak is no float one) and resets by subtraction are not written."""
    stateful = [l.neuron_model.stateful for l in hw.hidden_layers]
    if hw.default_time and not any(stateful):
        return None
    exact = all(stateful) and all(not l.leak and l.reset == "zero" for l in hw.hidden_layers) and hw.static_input
    if exact:
        return None
    runs = time_text(hw.timesteps, hw.input_coding, [(l.neuron, l.leak, l.reset) for l in hw.hidden_layers], False)
    return (f"the NIR export writes one step of step neurons, or if neurons that reset to zero over steps of the "
            f"same input; this one runs {runs[2:]}")


def to_nir(hw: HardwareModel):
    """The NIR graph of ``hw`` (see the module docstring): each layer's nodes from its kind's
    ``nir`` part (:mod:`bitsnn.kinds`)."""
    if (why := nir_problem(hw)):
        raise BitsnnError(why)
    nir = _nir()
    nodes, chain = {}, []

    def add(name, node):
        nodes[name] = node
        chain.append(name)

    first = hw.layers[0]
    in_shape = first.in_shape if kinds.of(first).output_is_map else (first.n_in,)
    add("input", nir.Input(input_type={"input": np.array(in_shape)}))
    maps = None  # the shape of the last convolution's output maps, until a dense layer flattens them
    for layer in hw.layers:
        maps = kinds.of(layer).part("nir")(nir, layer, add, maps)
    add("output", nir.Output(output_type={"output": np.array([hw.num_classes])}))
    meta = {MARK: MAPPING_VERSION, "input_encoding": hw.input_encoding, "input_threshold": int(hw.input_threshold),
            "input_shape": np.array(hw.input_shape, dtype=np.int64),
            "meta": json.dumps(hw.meta, sort_keys=True)}
    if hw.input_crop:
        meta["input_crop"] = np.array(hw.input_crop, dtype=np.int64)
    if not hw.default_time or any(l.neuron_model.stateful for l in hw.layers):
        meta["timesteps"] = np.int64(hw.timesteps)  # read back by from_nir; run the graph this many steps
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])), metadata=meta)


#: what ``--nir`` writes: an existing NIR file of bitsnn's may be replaced
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NIR_FILE = magic_kind("a NIR graph written by bitsnn", HDF5_MAGIC, contains=MARK.encode())


def check_nir_output(path, model_path=None, *, inputs=(), force: bool = False) -> Path:
    """Before any work: ``path`` can take a NIR graph, the ``nir`` package is there, and ``path``
    is not the hardware-model file ``model_path`` written beside it (which it would replace), nor
    one of the command's ``inputs``, nor an existing file other than bitsnn's NIR unless ``force``."""
    if model_path is not None and path is not None and str(path).strip() and same_path(path, model_path):
        raise BitsnnError(f"--nir {path}: is the hardware-model file -o names; give the NIR graph its own name")
    p = check_output_file(path, "--nir", kind=NIR_FILE, inputs=inputs, force=force)
    _nir()
    return p


def write_nir(hw: HardwareModel, path, *, force: bool = False) -> Path:
    """Write ``hw`` as a NIR (HDF5) file at ``path``, atomically."""
    nir = _nir()
    path = Path(path)
    check_output_file(path, kind=NIR_FILE, force=force)
    graph = to_nir(hw)
    buf = io.BytesIO()
    nir.write(buf, graph)
    atomic_write_bytes(path, buf.getvalue())
    return path


# --- import ---------------------------------------------------------------------------------


def read_nir(path, **kwargs) -> HardwareModel:
    """:func:`from_nir` of the NIR file at ``path``; one-line errors for unreadable files."""
    nir = _nir()
    path = Path(path)
    if path.is_dir():
        raise BitsnnError(f"cannot read NIR graph {path}: it is a directory; give the .nir file")
    if not path.is_file():
        raise BitsnnError(f"cannot read NIR graph {path}: no such file")
    with open(path, "rb") as f:
        if f.read(8) != HDF5_MAGIC:
            raise BitsnnError(f"cannot read NIR graph {path}: not an HDF5 file (a NIR graph is one)")
    try:
        # NIR's own type check refuses a batch dimension of 1 that exporters keep on the Input
        # (Norse: [1, 576] -> [576]); from_nir checks every shape it maps itself
        graph = nir.read(path, type_check=False)
    except KeyError as e:
        raise BitsnnError(f"cannot read NIR graph {path}: an HDF5 file without NIR's {e.args[0]!r} entry "
                          "(written only in part, or not by a NIR writer)") from None
    except Exception as e:  # h5py and nir raise many kinds for a file that is not a NIR graph
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "truncated file" in first:
            first = f"the file is truncated ({first.split('(', 1)[-1].rstrip(')')}): written only in part?"
        raise BitsnnError(f"cannot read NIR graph {path}: {first}") from None
    try:
        return from_nir(graph, source=str(path), **kwargs)
    except BitsnnError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as e:
        # A safety net only: from_nir checks what it reads before using it.
        raise NirImportError(f"{path}: a malformed NIR graph ({e.__class__.__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:80]})") from None


def _kind(node) -> str:
    return type(node).__name__


def _chain(graph) -> list[tuple[str, object]]:
    """The graph's nodes in order from its Input to its Output; NirImportError for anything else."""
    nir = _nir()
    nodes, edges = dict(graph.nodes), [tuple(e) for e in graph.edges]
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise NirImportError(f"NIR node '{name}' is a subgraph (a recurrent or nested block); bitsnn maps a "
                                 "feed-forward chain")
    succ, pred = {}, {}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NirImportError(f"NIR edge {a!r} -> {b!r} names a node the graph does not have")
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    for name in nodes:
        if len(succ.get(name, [])) > 1 or len(pred.get(name, [])) > 1:
            raise NirImportError(f"NIR node '{name}' ({_kind(nodes[name])}) has "
                                 f"{len(pred.get(name, []))} inputs and {len(succ.get(name, []))} outputs; "
                                 "bitsnn maps a chain of layers (no branches or recurrence)")
    starts = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise NirImportError(f"NIR graph has {len(starts)} Input nodes; bitsnn maps one")
    out, cur, seen = [], starts[0], set()
    while True:
        out.append((cur, nodes[cur]))
        seen.add(cur)
        nxt = succ.get(cur, [])
        if not nxt:
            break
        cur = nxt[0]
        if cur in seen:
            raise NirImportError(f"NIR node '{cur}' closes a cycle; bitsnn maps a feed-forward chain")
    if not isinstance(out[-1][1], nir.Output):
        raise NirImportError(f"NIR node '{out[-1][0]}' ({_kind(out[-1][1])}) ends the chain; bitsnn needs an Output there")
    if len(out) != len(nodes):
        stray = sorted(set(nodes) - seen)[0]
        raise NirImportError(f"NIR node '{stray}' ({_kind(nodes[stray])}) is not on the chain from the Input to the Output")
    return out


def _finite(name: str, kind: str, what: str, value) -> np.ndarray:
    """``value`` as float64 numbers, all of them finite; else NirImportError naming the node."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NirImportError(f"NIR node '{name}' ({kind}): {what} is not an array of numbers") from None
    if a.size == 0 and what != "bias":
        raise NirImportError(f"NIR node '{name}' ({kind}): {what} is empty")
    if not np.all(np.isfinite(a)):
        raise NirImportError(f"NIR node '{name}' ({kind}): {what} holds {'NaN' if np.isnan(a).any() else 'inf'}; "
                             "bitsnn maps finite numbers")
    return a


def _integer_rows(name: str, kind: str, weight: np.ndarray, unit: float | None = None,
                  quantize: int | None = None, one_scale: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(integer weights (rows, fan-in), per-row scale c > 0, bits) of weights that are c times
    integers per row: +-c everywhere (bits 1, +-1 weights), or integers w with |w| <= 2^(b-1) - 1
    for a b of 2..8 (the smallest that holds the layer; bitsnn's own multi-bit export). With
    ``quantize`` B, any float weights: c = max |w| / (2^(B-1) - 1) per row, w rounded to c's
    nearest multiple (an approximation; the import measures its agreement); ``one_scale``: one c
    for all rows (an output layer's scores share a scale)."""
    w = _finite(name, kind, "weight", weight).reshape(np.shape(weight)[0], -1)
    mag = np.abs(w)
    if quantize is not None:
        q = weight_limit(quantize)
        top = np.full(len(w), mag.max()) if one_scale else mag.max(axis=1)
        c = np.where(top > 0, top / q, 1.0)
        return np.clip(np.rint(w / c[:, None]), -q, q).astype(np.int64), c, int(quantize)
    c = mag.max(axis=1)
    if np.all(c > 0) and np.allclose(mag, c[:, None], rtol=_RTOL, atol=0):
        return np.where(w > 0, 1, -1).astype(np.int64), c, 1
    q = weight_limit(WEIGHT_BITS.stop - 1)
    ints = np.zeros(w.shape, np.int64)
    scale = np.ones(len(w))
    for row in range(len(w)):
        nz = mag[row][mag[row] > 0]
        if not nz.size:
            continue  # a row of zeros: any scale
        if unit is not None:  # bitsnn's own graph: its weights are the integers themselves
            m = mag[row] / unit
            if np.allclose(m, np.rint(m), rtol=_RTOL, atol=_RTOL) and np.rint(m).max() <= q:
                ints[row], scale[row] = np.sign(w[row]).astype(np.int64) * np.rint(m).astype(np.int64), unit
                continue
        for k in range(1, q + 1):  # the smallest magnitude is k units of c
            unit = nz.min() / k
            m = mag[row] / unit
            if np.allclose(m, np.rint(m), rtol=_RTOL, atol=_RTOL) and np.rint(m).max() <= q:
                ints[row], scale[row] = np.sign(w[row]).astype(np.int64) * np.rint(m).astype(np.int64), unit
                break
        else:
            raise NirImportError(f"NIR node '{name}' ({kind}): the weights of output {row} are not c times integers "
                                 f"of at most {WEIGHT_BITS.stop - 1} bits for one c > 0; bitsnn maps +-1 and "
                                 f"{WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}-bit integer weights "
                                 "(--quantize-weights B rounds float weights to B bits)")
    top = int(np.abs(ints).max()) if ints.size else 1
    bits = next(b for b in WEIGHT_BITS if weight_limit(b) >= top)
    return ints, scale, bits


def _broadcast(name: str, node, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}): bias has shape {a.shape}, the layer has {shape} "
                             "outputs") from None


def _per_unit(name: str, node, value, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A neuron parameter as one value per neuron (dense) or per channel (conv maps)."""
    value = _finite(name, _kind(node), what, value)
    a = np.broadcast_to(np.asarray(value, dtype=np.float64), shape) if np.size(value) in (1, math.prod(shape)) \
        else None
    if a is None:
        try:
            a = np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(shape[0], *[1] * (len(shape) - 1)), shape)
        except ValueError:
            raise NirImportError(f"NIR node '{name}' ({_kind(node)}): {what} has shape {np.shape(value)}, the layer "
                                 f"has {shape} neurons") from None
    flat = a.reshape(shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}): {what} differs across one channel's positions; "
                             "bitsnn has one threshold per channel")
    return flat[:, 0].copy()


def _neuron(name: str, node, shape: tuple[int, ...], dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(r, v_threshold) of a neuron at one time step from rest, per unit: fires when r * input > v_threshold."""
    nir = _nir()
    if isinstance(node, nir.IF):
        r, vt = node.r, node.v_threshold
    elif isinstance(node, nir.LIF):
        # tau dv/dt = (v_leak - v) + r I, one Euler step of dt from v = 0: v = dt/tau (v_leak + r I)
        tau = _per_unit(name, node, node.tau, shape, "tau")
        leak = _per_unit(name, node, node.v_leak, shape, "v_leak")
        if np.any(tau <= 0):
            raise NirImportError(f"NIR node '{name}' (LIF): tau must be positive")
        r = _per_unit(name, node, node.r, shape, "r")
        vt = _per_unit(name, node, node.v_threshold, shape, "v_threshold") * tau / dt - leak
    else:
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}) is not an IF or LIF neuron; bitsnn maps IF and LIF "
                             "neurons at one time step")
    r = _per_unit(name, node, r, shape, "r")
    vt = _per_unit(name, node, vt, shape, "v_threshold")
    if np.any(r <= 0):
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}): r must be positive")
    return r, vt


#: a bound q within this relative distance of a whole number is that number: a graph's float32
#: parameters (snnTorch's r = tau/dt, Norse's and NIR's dt/tau) put an exact tie a hair to either side
TIE_RTOL = 1e-5


def _thresholds(c, b, r, vt, a_max: int) -> np.ndarray:
    """theta with ``r (c a + b) > vt  <=>  a >= theta`` for whole a, clamped to [-R-1, R+1].

    NIR's neurons fire when the membrane exceeds the threshold, strictly (as snnTorch's and
    Norse's do): a membrane equal to it does not fire. The bound q = (vt/r - b)/c is snapped to a
    whole number it lies within :data:`TIE_RTOL` of, so such a tie stays one after float32
    rounding, and a >= floor(q) + 1 (a > q) follows."""
    q = (vt / r - b) / c
    near = np.rint(q)
    q = np.where(np.abs(q - near) <= TIE_RTOL * np.maximum(1.0, np.abs(q)), near, q)
    q = np.clip(q, -a_max - 2.0, a_max + 2.0)
    return np.clip(np.floor(q).astype(np.int64) + 1, -a_max - 1, a_max + 1)


def from_nir(graph, *, input_encoding: str | None = None, input_threshold: int | None = None,
             dt: float = DEFAULT_DT, source: str = "<graph>", steps: int = 1, reset: str | None = None,
             coding: str | None = None, quantize_weights: int | None = None) -> HardwareModel:
    """The hardware model of a NIR graph (see the module docstring); NirImportError names what
    does not map. ``input_encoding`` / ``input_threshold`` say how images enter a graph whose
    metadata and nodes do not; ``dt`` is the time step of LIF neurons. ``steps`` > 1 takes the
    graph over that many time steps with its neurons' dynamics (:func:`_membrane`): ``reset``
    ("zero", NIR's v_reset, the default; "subtract"; "subtract-next", snnTorch's ``Leaky``), ``coding`` the input
    at each step (the same image: the encoding's default; ``given``: spikes per step).
    ``quantize_weights`` B rounds float weights to B bits per row (:func:`_integer_rows`)."""
    nir = _nir()
    meta = dict(graph.metadata or {})
    if MARK in meta and "timesteps" in meta and steps == 1:  # bitsnn's own graph over time steps
        steps = _meta_ints(meta, "timesteps", 1)[0]
        reset = (reset or "zero") if steps > 1 else reset
    if quantize_weights is not None and quantize_weights not in WEIGHT_BITS:
        raise NirImportError(f"--quantize-weights {quantize_weights!r}: {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}")
    if type(steps) is not int or not 1 <= steps <= MAX_STEPS:
        raise NirImportError(f"--steps {steps!r}: 1..{MAX_STEPS}")
    if steps == 1 and (reset is not None or coding is not None):
        raise NirImportError("--reset and --coding take a graph over time steps: give --steps T too")
    if reset is not None and reset not in RESETS:
        raise NirImportError(f"--reset {reset!r}: one of {', '.join(RESETS)}")
    ts = _Steps(steps, reset or "zero") if steps > 1 else None
    chain = _chain(graph)
    ours = MARK in meta
    if input_encoding is None and ours:
        input_encoding = _meta_text(meta, "input_encoding")
    if input_threshold is None and ours:
        input_threshold = _meta_ints(meta, "input_threshold", 1)[0]
    name0, inp = chain[0]
    try:
        shape = tuple(int(d) for d in np.atleast_1d(np.asarray(next(iter(inp.input_type.values())), dtype=np.int64)))
    except (StopIteration, TypeError, ValueError, OverflowError):
        raise NirImportError(f"NIR node '{name0}' (Input): its shape is not a list of whole numbers") from None
    if not shape or any(d < 1 for d in shape):
        raise NirImportError(f"NIR node '{name0}' (Input): a {shape} input has no pixels")
    i = 1
    if isinstance(chain[1][1], nir.Threshold):
        t = np.unique(_finite(chain[1][0], "Threshold", "threshold", chain[1][1].threshold))
        if t.size != 1:
            raise NirImportError(f"NIR node '{chain[1][0]}' (Threshold): one input threshold for every pixel, please")
        if input_encoding == "pixels":
            raise NirImportError(f"NIR node '{chain[1][0]}' (Threshold) makes spikes of the input; --input pixels "
                                 "contradicts it")
        input_encoding, input_threshold, i = "spikes", int(math.floor(t[0])) + 1, 2
    if input_encoding is None:
        raise NirImportError("the NIR graph does not say how images enter it: say --input pixels (8-bit values) or "
                             "--input spikes with --input-threshold T")
    if input_encoding not in ("spikes", "pixels"):
        raise NirImportError(f"input encoding must be 'spikes' or 'pixels', got {input_encoding!r}")
    if input_encoding == "spikes" and input_threshold is None:
        raise NirImportError("spike input needs --input-threshold T (a pixel >= T is a spike)")
    input_threshold = 128 if input_threshold is None else int(input_threshold)
    # leading dimensions of 1 (a batch dimension some exporters keep, one image channel) dropped
    core = shape
    while len(core) > 1 and core[0] == 1:
        core = core[1:]
    first = next((n for _, n in chain[i:-1] if not isinstance(n, nir.Flatten)), None)
    if isinstance(first, nir.Conv2d) and len(core) == 3 and coding == "given":
        input_shape, cur = core, core  # an event sensor's channels, given per step
    elif isinstance(first, nir.Conv2d):
        if len(core) != 2:
            raise NirImportError(f"NIR node '{name0}' (Input): a {shape} input; bitsnn's convolutions take "
                                 "one-channel images")
        input_shape, cur = core, (1, *core)
    else:
        input_shape, cur = (core if len(core) <= 2 else (math.prod(core),)), (math.prod(core),)
    if ours and "input_shape" in meta and math.prod(_meta_ints(meta, "input_shape")) == math.prod(shape):
        input_shape = _meta_ints(meta, "input_shape")
    layers: list[Layer] = []
    kind_in = input_encoding
    nodes = chain[i:-1]
    j = 0
    while j < len(nodes):
        name, node = nodes[j]
        compare_meta = np.asarray(node.metadata.get("compare")) if ours and hasattr(node, "metadata") and \
            "compare" in (node.metadata or {}) else None
        unit = 2.0 ** int(np.asarray(node.metadata["shift"])) if compare_meta is not None and \
            "shift" in node.metadata else None  # bitsnn's if layer: weights c * 2^shift * w
        if isinstance(node, nir.Flatten):
            cur = (math.prod(cur),)
            j += 1
            continue
        if isinstance(node, nir.Conv2d):
            layer, cur, j = _conv(nodes, j, cur, kind_in, len(layers), compare_meta, dt, ts, quantize_weights, unit)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            last = j + 1 == len(nodes) or (j + 2 == len(nodes) and isinstance(nodes[j + 1][1], (nir.IF, nir.LIF)))
            layer, cur, j = _dense(nodes, j, cur, kind_in, len(layers), compare_meta, dt, last, ts,
                                   quantize_weights, unit)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)) and (k := _global_pool_classes(node, cur, nodes[j + 1:])):
            layer, cur, j = GapLayer(f"gap{len(layers) + 1}", math.prod(cur), k, in_shape=tuple(cur),
                                     input_kind=kind_in), (k,), len(nodes)
        elif node is None:
            raise NirImportError(f"NIR node '{name}' is empty: its exporter wrote no node for that module (Norse "
                                 "1.1.0 writes none for nn.Flatten; feed the network flat images instead)")
        else:
            raise NirImportError(f"NIR node '{name}' ({_kind(node)}) has no bitsnn mapping here; bitsnn maps Conv2d, "
                                 "Affine and Linear synapses with IF/LIF neurons, 2 x 2 SumPool2d/AvgPool2d OR pools and Flatten")
        if ours:  # bitsnn named each synapse node after its layer
            layer = dataclasses.replace(layer, name=name)
        layers.append(layer)
        kind_in = "spikes"
    if not layers or not layers[-1].is_output:
        raise NirImportError("the NIR graph does not end in a Linear (or bias-free Affine) layer of class scores, "
                             "or a SumPool2d/AvgPool2d over whole maps (a global pool)")
    crop = _meta_ints(meta, "input_crop", 4) if ours and "input_crop" in meta else None
    file_meta = _meta_json(meta) if ours and "meta" in meta else {"imported_from": os.path.basename(source)}
    try:
        return HardwareModel(input_shape=tuple(input_shape), input_encoding=input_encoding,
                             input_threshold=input_threshold, layers=tuple(layers), meta=file_meta, input_crop=crop,
                             timesteps=steps, input_coding=coding)
    except HardwareModelError as e:
        raise NirImportError(f"the NIR graph maps to an invalid hardware model: {e}") from None


def _meta_value(meta: dict, key: str):
    if key not in meta:
        raise NirImportError(f"the NIR graph's metadata is bitsnn's ({MARK}) but has no {key}")
    return meta[key]


def _meta_text(meta: dict, key: str) -> str:
    v = _meta_value(meta, key)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        v = np.asarray(v)
        if v.shape != () or v.dtype.kind not in "US":
            raise NirImportError(f"the NIR graph's metadata {key} must be a string")
        v = str(v)
    return v


def _meta_ints(meta: dict, key: str, length: int | None = None) -> tuple[int, ...]:
    """The graph metadata's ``key`` as whole numbers (``length`` of them, if given)."""
    v = _meta_value(meta, key)
    try:
        a = np.atleast_1d(np.asarray(v))
        ok = a.ndim == 1 and a.dtype.kind in "iuf" and np.all(np.isfinite(a)) and np.all(a == np.round(a)) \
            and np.all(np.abs(a) < 2**62)
    except (TypeError, ValueError):
        ok = False
    if not ok or (length is not None and a.size != length) or a.size == 0:
        n = f"{length} " if length else ""
        raise NirImportError(f"the NIR graph's metadata {key} must be {n}whole number{'s' if length != 1 else ''}, "
                             f"got {_show_meta(v)}")
    return tuple(int(x) for x in a)


def _meta_json(meta: dict) -> dict:
    """The file meta bitsnn's export keeps as JSON text in the graph's metadata."""
    try:
        d = json.loads(_meta_text(meta, "meta"))
    except (json.JSONDecodeError, RecursionError):
        raise NirImportError(f"the NIR graph's metadata meta is not valid JSON: {_show_meta(meta['meta'])}") from None
    if not isinstance(d, dict):
        raise NirImportError(f"the NIR graph's metadata meta must be a JSON object, got {_show_meta(meta['meta'])}")
    return d


def _show_meta(v) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    text = repr(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    text = "".join(c if c.isprintable() else "?" for c in text.replace("\n", " "))
    return text[:40] + ("..." if len(text) > 40 else "")


def _apply_compare(ints, theta, compare_meta, n):
    """bitsnn's own export folded compare -1 into negated weights; undo it where the metadata says so."""
    compare = np.ones(n, dtype=np.int8)
    if compare_meta is not None and compare_meta.shape == (n,) and set(np.unique(compare_meta)) <= {-1, 1}:
        neg = compare_meta < 0
        ints[neg] = -ints[neg]
        theta[neg] = -theta[neg]
        compare[neg] = -1
    return ints, theta, compare


def _a_max(kind_in: str, fan_in: int, bits: int = 1) -> int:
    return (255 if kind_in == "pixels" else 1) * fan_in * weight_limit(bits)


#: an inexact membrane's threshold, in units (about): its bias and leak are rounded to 1/this of
#: a spike. On an snnTorch Leaky graph (784-64-10, beta = 0.9, T = 25, 500 MNIST test images),
#: 4096 against 256 took the hidden spikes equal to snnTorch's own run from 99.21 % to 99.96 %
#: and the classes from 99.4 % to 100 %.
APPROX_THETA = 4096


@dataclasses.dataclass(frozen=True)
class _Steps:
    """How a graph is taken over several time steps: T, and the reset it is read with."""

    steps: int
    reset: str


def _hidden_fields(neuron, shape, ints, c, b, a_max, compare_meta, dt, ts, unit=None):
    """(integer weights, the layer's neuron fields) for the synapse's rows (scales c, biases b)
    and the neuron node after it: a step neuron at one step (``ts`` None), else an if/lif
    membrane over the steps (:func:`_membrane`)."""
    name, node = neuron
    if ts is None:
        r, vt = _neuron(name, node, shape, dt)
        theta = _thresholds(c, b, r, vt, a_max)
        ints, theta, compare = _apply_compare(ints, theta, compare_meta, len(c))
        return ints, {"thresholds": theta, "compare": compare}
    hint = int(round(math.log2(unit))) if unit and unit >= 1 else None
    fields = _membrane(name, node, shape, c, b, dt, ts, hint)
    # bitsnn's own export folded a compare -1 into negated weights: undo it (V += c*a*2^s + b)
    ints, _theta, fields["compare"] = _apply_compare(ints, np.zeros(len(c), np.int64), compare_meta, len(c))
    return ints, fields


def _membrane(name: str, node, shape, c, b, dt: float, ts: _Steps, shift_hint: int | None = None) -> dict:
    """The if/lif fields of a neuron node over several steps.

    In the graph, per step: IF v += r*I; LIF v += dt/tau*(v_leak - v + r*I) (Euler, NIR's and
    snnTorch's convention); I = c*a + b; a spike when v > v_threshold, then v = v_reset (0) or,
    read with reset "subtract", v -= v_threshold. Divided by g*c (g = r, or dt/tau*r) and scaled
    by 2^s: W += a*2^s + round(2^s*beta) with beta = b/c (+ v_leak/(r*c) for a LIF), a spike when
    W > 2^s*q, q = v_threshold/(g*c), so W >= floor(2^s*q) + 1 (q snapped to whole numbers as at
    one step). An IF layer whose biases (and thresholds, with reset by subtraction) are whole at
    some 2^s, s <= 16, is exact; otherwise s gives thresholds of about 256 and the import is
    approximate (a LIF's float leak 1 - dt/tau becomes V - ((V * m) >> 16), m = round(65536 dt/tau)).
    The import measures the agreement it gets (:func:`graph_agreement`)."""
    nir = _nir()
    kind = _kind(node)
    if not isinstance(node, (nir.IF, nir.LIF)):
        raise NirImportError(f"NIR node '{name}' ({kind}) is not an IF or LIF neuron; bitsnn maps IF and LIF "
                             "neurons over time steps")
    r = _per_unit(name, node, node.r, shape, "r")
    vt = _per_unit(name, node, node.v_threshold, shape, "v_threshold")
    v_reset = _per_unit(name, node, getattr(node, "v_reset", 0.0), shape, "v_reset")
    if np.any(r <= 0):
        raise NirImportError(f"NIR node '{name}' ({kind}): r must be positive")
    if np.any(v_reset != 0):
        raise NirImportError(f"NIR node '{name}' ({kind}): v_reset {float(v_reset[v_reset != 0][0]):g}; bitsnn's "
                             "membranes reset to 0 or by subtraction")
    leak, gain, offset = 0, r, np.zeros(len(r))
    if isinstance(node, nir.LIF):
        tau = _per_unit(name, node, node.tau, shape, "tau")
        if np.any(tau <= 0):
            raise NirImportError(f"NIR node '{name}' (LIF): tau must be positive")
        ms = np.rint(dt / tau * 65536)
        if not np.all(ms == ms[0]) or not 1 <= ms[0] <= 65535:
            raise NirImportError(f"NIR node '{name}' (LIF): a leak dt/tau of {float((dt / tau).min()):g}.."
                                 f"{float((dt / tau).max()):g}; bitsnn's integer leak V - ((V * m) >> 16) takes one "
                                 "m of 1..65535 a layer (give --dt as the graph's time step)")
        leak = int(ms[0])
        g = dt / tau
        gain, offset = g * r, g * _per_unit(name, node, node.v_leak, shape, "v_leak")
    beta = b / c + offset / (gain * c)
    q = vt / (gain * c)
    if np.any(q < 0):
        raise NirImportError(f"NIR node '{name}' ({kind}): a threshold below 0 fires at rest; bitsnn's membranes "
                             "start at 0 below a positive threshold")
    whole = lambda v, s: np.allclose(v * 2.0 ** s, np.rint(v * 2.0 ** s), rtol=0, atol=TIE_RTOL)  # noqa: E731
    shift = None
    if not leak:
        # exact: the biases (and, resetting by subtraction, the thresholds) whole numbers at 2^s; a
        # subtraction then takes theta = 2^s q + 1, one unit more than the graph's q, so s also
        # leaves room for a unit per spike below the 2^s of one input (T spikes at most)
        order = ([shift_hint] if shift_hint is not None else []) + list(range(MAX_SHIFT + 1))  # bitsnn's own shift first
        s0 = next((s for s in order if whole(beta, s) and (ts.reset == "zero" or whole(q, s))), None)
        if s0 is not None:
            room = 0 if ts.reset == "zero" else int(math.ceil(math.log2(ts.steps + 1)))
            shift = s0 + room if s0 + room <= MAX_SHIFT else None
    if shift is None:  # approximate: thresholds of about APPROX_THETA units
        med = float(np.median(q)) if q.size else 1.0
        shift = 0 if med <= 0 else int(np.clip(np.ceil(np.log2(APPROX_THETA / med)), 0, MAX_SHIFT))
    scale = 2.0 ** shift
    qs = q * scale
    near = np.rint(qs)
    qs = np.where(np.abs(qs - near) <= TIE_RTOL * np.maximum(1.0, np.abs(qs)), near, qs)
    theta = np.clip(np.floor(qs) + 1, 1, MAX_MEMBRANE_PARAM).astype(np.int64)
    bias = np.clip(np.rint(beta * scale), -MAX_MEMBRANE_PARAM, MAX_MEMBRANE_PARAM).astype(np.int64)
    return {"thresholds": theta, "compare": np.ones(len(theta), np.int8), "bias": bias,
            "neuron": "lif" if leak else "if", "leak": leak, "reset": ts.reset, "shift": shift}


def _global_pool_classes(node, cur, rest) -> int | None:
    """The classes of ALBSNN's head, when a pool node is one: one window over each whole map (a
    sum, or an average, whose 1/(H W) the argmax ignores), then only Flatten, and perhaps a
    ``Linear`` whose 0/1 weights add consecutive channels into each class (a positive scale of
    them too); else None."""
    nir = _nir()
    as_pair = lambda v: tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))  # noqa: E731
    if not (len(cur) == 3 and as_pair(node.kernel_size) == tuple(cur[1:]) and as_pair(node.stride) == tuple(cur[1:])
            and as_pair(node.padding) == (0, 0)):
        return None
    flat = [n for _, n in rest if isinstance(n, nir.Flatten)]
    other = [n for _, n in rest if not isinstance(n, nir.Flatten)]
    if not other:
        return cur[0]
    if len(other) == 1 and isinstance(other[0], nir.Linear) and flat and isinstance(rest[-1][1], nir.Linear):
        w = np.asarray(other[0].weight, np.float64)
        if w.ndim == 2 and w.shape[1] == cur[0] and w.shape[0] and cur[0] % w.shape[0] == 0 and w.max() > 0:
            if np.array_equal(w / w.max(), _class_sums(cur[0], w.shape[0])):
                return w.shape[0]
    return None


def _conv(nodes, j, cur, kind_in, index, compare_meta, dt, ts=None, quantize=None, unit=None):
    nir = _nir()
    name, node = nodes[j]
    w = np.asarray(node.weight)
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
        raise NirImportError(f"NIR node '{name}' (Conv2d): a {w.shape} kernel; bitsnn maps square odd k x k kernels")
    c_out, c_in, k = w.shape[0], w.shape[1], w.shape[2]
    as_pair = lambda v: tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))  # noqa: E731
    pad = node.padding
    if not (as_pair(node.stride) == (1, 1) and as_pair(node.dilation) == (1, 1) and int(node.groups) == 1
            and ((isinstance(pad, str) and pad == "same") or (not isinstance(pad, str) and as_pair(pad) == (k // 2, k // 2)))):
        raise NirImportError(f"NIR node '{name}' (Conv2d): bitsnn maps stride 1, dilation 1, one group and zero "
                             f"padding {k // 2}")
    if len(cur) != 3 or cur[0] != c_in:
        raise NirImportError(f"NIR node '{name}' (Conv2d) takes {c_in} channels; its input is {cur}")
    ints, c, wbits = _integer_rows(name, "Conv2d", w, unit or (1.0 if compare_meta is not None else None), quantize)
    b = np.zeros(c_out) if node.bias is None else _broadcast(name, node, _finite(name, "Conv2d", "bias", node.bias), (c_out,))
    shape = (c_out, *cur[1:])
    if j + 1 >= len(nodes):
        raise NirImportError(f"NIR node '{name}' (Conv2d) is not followed by an IF or LIF neuron")
    ints, fields = _hidden_fields(nodes[j + 1], shape, ints, c, b, _a_max(kind_in, c_in * k * k, wbits),
                                  compare_meta, dt, ts, unit)
    j += 2
    pool = 1
    if j < len(nodes) and isinstance(nodes[j][1], (nir.SumPool2d, nir.AvgPool2d)) \
            and not _global_pool_classes(nodes[j][1], shape, nodes[j + 1:]):  # a global pool is the head, not an OR pool
        pname, pnode = nodes[j]
        form = "sum" if isinstance(pnode, nir.SumPool2d) else "avg"
        if not (as_pair(pnode.kernel_size) == (2, 2) and as_pair(pnode.stride) == (2, 2)
                and as_pair(pnode.padding) == (0, 0)):
            raise NirImportError(f"NIR node '{pname}' ({_kind(pnode)}): bitsnn maps 2 x 2 pools of stride 2 without padding")
        pooled = (c_out, shape[1] // 2, shape[2] // 2)
        if j + 1 >= len(nodes):
            raise NirImportError(f"NIR node '{pname}' ({_kind(pnode)}) is not followed by an IF or LIF neuron")
        pr, pvt = _neuron(nodes[j + 1][0], nodes[j + 1][1], pooled, dt)
        if ts is not None and ts.reset != "zero":
            raise NirImportError(f"NIR node '{nodes[j + 1][0]}' ({_kind(nodes[j + 1][1])}): over several steps, a "
                                 "pool's neuron that resets by subtraction is no OR of each step's spikes")
        top = 4.0 if form == "sum" else 1.0
        ratio = pvt / pr
        if not np.all((ratio >= 0) & (ratio < top / 4)):
            raise NirImportError(f"NIR node '{nodes[j + 1][0]}' ({_kind(nodes[j + 1][1])}): after a {form} pool, a "
                                 f"threshold of {ratio.max():g} is not an OR of the window's spikes")
        pool, shape, j = 2, pooled, j + 2
    layer = ConvLayer(f"conv{index + 1}", **weight_fields(wbits, ints), **fields,
                      input_kind=kind_in, in_shape=tuple(cur), channels=c_out, kernel=k, pool=pool)
    return layer, shape, j


def _dense(nodes, j, cur, kind_in, index, compare_meta, dt, last, ts=None, quantize=None, unit=None):
    nir = _nir()
    name, node = nodes[j]
    w = np.asarray(node.weight)
    n_in = math.prod(cur)
    if w.ndim != 2 or w.shape[1] != n_in:
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}): weights {w.shape} for {n_in} inputs {tuple(cur)}"
                             + (" (a conv output needs a Flatten first)" if len(cur) > 1 and w.ndim == 2 else ""))
    ints, c, wbits = _integer_rows(name, _kind(node), w, unit or (1.0 if compare_meta is not None or last else None),
                                   quantize, one_scale=last)
    b = np.zeros(w.shape[0]) if isinstance(node, nir.Linear) else _broadcast(
        name, node, _finite(name, _kind(node), "bias", node.bias), (w.shape[0],))
    if last and wbits > 1:  # one unit for all rows: the rows' scales are whole multiples of the smallest
        ratio = c / c.min()
        if np.allclose(ratio, np.rint(ratio), rtol=_RTOL, atol=0):
            ints, c = ints * np.rint(ratio).astype(np.int64)[:, None], np.full(len(c), c.min())
            top = int(np.abs(ints).max())
            if top > weight_limit(WEIGHT_BITS.stop - 1):
                raise NirImportError(f"NIR node '{name}' ({_kind(node)}): output weights of {top} units need more "
                                     f"than {WEIGHT_BITS.stop - 1} bits")
            wbits = next(bb for bb in WEIGHT_BITS if weight_limit(bb) >= top)
    if last:
        if np.any(b != 0) or not np.allclose(c, c[0], rtol=_RTOL, atol=0):
            raise NirImportError(f"NIR node '{name}' ({_kind(node)}): an output layer needs one weight scale and no "
                                 "bias (bitsnn classifies by the integer scores)")
        layer = Layer(f"fc{index + 1}", n_in, w.shape[0], input_kind=kind_in, **weight_fields(wbits, ints))
        return layer, (w.shape[0],), len(nodes)  # a trailing IF/LIF is dropped: the class is the argmax of its input
    if j + 1 >= len(nodes):
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}) is not followed by an IF or LIF neuron")
    ints, fields = _hidden_fields(nodes[j + 1], (w.shape[0],), ints, c, b, _a_max(kind_in, n_in, wbits),
                                  compare_meta, dt, ts, unit)
    layer = Layer(f"fc{index + 1}", n_in, w.shape[0], input_kind=kind_in, **weight_fields(wbits, ints), **fields)
    return layer, (w.shape[0],), j + 2


#: the stated random input an import's agreement is measured on: this many inputs of this seed
AGREEMENT_INPUTS, AGREEMENT_SEED = 256, 0


def import_main(args) -> int:
    """``bitsnn import GRAPH.nir -o MODEL.bsnn [--steps T --reset R --coding given]``."""
    check_output_file(args.output, kind=MODEL_FILE, inputs=[args.graph], force=getattr(args, "force", False))
    steps, reset, coding = getattr(args, "steps", None) or 1, getattr(args, "reset", None), getattr(args, "coding", None)
    quantize = getattr(args, "quantize_weights", None)
    hw = read_nir(args.graph, input_encoding=args.input, input_threshold=args.input_threshold, dt=args.dt,
                  steps=steps, reset=reset, coding=coding, quantize_weights=quantize)
    hw.save(args.output)
    print(f"[import] {hw.describe()}; content hash {hw.content_hash[:16]}; wrote {args.output}")
    if steps > 1 or quantize is not None:
        if reset is None and steps > 1:
            print("[import] reset: the graph's v_reset (to 0), as NIR defines; snnTorch's Leaky subtracts the threshold "
                  "at the next step instead: --reset subtract-next")
        rng = np.random.default_rng(AGREEMENT_SEED)
        if coding == "given":
            x = (rng.random((AGREEMENT_INPUTS, steps, *hw.input_shape)) < 0.2).astype(np.uint8)
            what = "given spikes at 20 % density"
        else:
            x = rng.integers(0, 256, size=(AGREEMENT_INPUTS, *hw.image_shape), dtype=np.uint8)
            what = "uniform 8-bit images"
        agree = graph_agreement(_nir().read(args.graph, type_check=False), hw, x, reset=reset or "zero", dt=args.dt)
        over = f"over {steps} steps" if steps > 1 else "at one step"
        print(f"[import] agreement with the graph's own float semantics {over}, {AGREEMENT_INPUTS} random "
              f"{what} (seed {AGREEMENT_SEED}): {100 * agree['spikes']:.2f} % of {agree['spike_count']:,} hidden "
              f"spikes, {100 * agree['classes']:.1f} % of classes")
    return 0


# --- the graph's own float semantics, to measure an import's agreement ------------------------


def simulate_graph(graph, x: np.ndarray, *, reset: str = "zero", dt: float = DEFAULT_DT):
    """Run a NIR chain in float64 over time steps, as its nodes define: synapses ``W x + b``
    (Conv2d with its padding), ``IF`` v += r*I, ``LIF`` v += dt/tau*(v_leak - v + r*I) (from 0),
    a spike when v > v_threshold, then v = v_reset (``reset`` "zero"), v -= v_threshold
    ("subtract"), or v -= v_threshold at the next step after the leak ("subtract-next"); sum and average pools; ``Threshold`` [x > t]; ``Flatten``. ``x``: (B, T,
    *input), each step's input. Returns (the spikes of each layer's last neuron before the next
    synapse, each (B, T, n); the last synapse's outputs summed over the steps: the scores)."""
    nir = _nir()
    chain = _chain(graph)
    B, T = x.shape[:2]
    state: dict = {}
    layers: dict[int, list] = {}
    total = 0.0
    for t in range(T):
        h = np.asarray(x[:, t], dtype=np.float64)
        done, last, score = 0, None, None
        for name, node in chain[1:-1]:
            if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)) and last is not None:
                layers.setdefault(done, []).append(last)
                done, last = done + 1, None
            if isinstance(node, nir.Threshold):
                h = (h > np.asarray(node.threshold, np.float64).reshape(h.shape[1:])).astype(np.float64)
            elif isinstance(node, nir.Flatten):
                h = h.reshape(B, -1)
            elif isinstance(node, (nir.Affine, nir.Linear)):
                h = h.reshape(B, -1) @ np.asarray(node.weight, np.float64).T
                if isinstance(node, nir.Affine) and node.bias is not None:
                    h = h + np.asarray(node.bias, np.float64)
                score = h
            elif isinstance(node, nir.Conv2d):
                h = _conv_float(h, node)
            elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
                b_, c_, hh, ww = h.shape
                h = h[:, :, : hh - hh % 2, : ww - ww % 2].reshape(b_, c_, hh // 2, 2, ww // 2, 2).sum(axis=(3, 5))
                h = h / 4.0 if isinstance(node, nir.AvgPool2d) else h
            elif isinstance(node, (nir.IF, nir.LIF)):
                unit = lambda a: _unit_array(a, h.shape[1:])  # noqa: E731
                v = state.get(name, np.zeros(h.shape))
                if isinstance(node, nir.LIF):
                    v = v + dt / unit(node.tau) * (unit(node.v_leak) - v + unit(node.r) * h)
                else:
                    v = v + unit(node.r) * h
                vt = unit(node.v_threshold)
                if reset == "subtract-next":
                    v = v - state.get(name + "/z", 0.0) * vt
                z = v > vt
                if reset == "subtract":
                    v = np.where(z, v - vt, v)
                elif reset == "zero":
                    v = np.where(z, unit(getattr(node, "v_reset", 0.0)), v)
                else:
                    state[name + "/z"] = z.astype(np.float64)
                state[name] = v
                h = z.astype(np.float64)
                last = h.reshape(B, -1)
            else:
                raise NirImportError(f"NIR node '{name}' ({_kind(node)}): no float semantics here")
        total = total + score
    return [np.stack(layers[i], axis=1) for i in sorted(layers)], total


def _unit_array(a, shape) -> np.ndarray:
    """A neuron parameter broadcast over a layer's units (one value, one per unit, or one per channel)."""
    a = np.asarray(a, np.float64)
    if a.size in (1, math.prod(shape)):
        return np.broadcast_to(a.reshape(shape) if a.size > 1 else a.reshape(()), shape)
    return np.broadcast_to(a.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def _conv_float(h: np.ndarray, node) -> np.ndarray:
    """A Conv2d (stride 1, padding k // 2, as the import takes) in float64."""
    w = np.asarray(node.weight, np.float64)
    c_out, c_in, k, _ = w.shape
    p = k // 2
    B = h.shape[0]
    h = h.reshape(B, c_in, *h.shape[-2:])
    hp = np.pad(h, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(hp, (k, k), axis=(2, 3))  # (B, C_in, H, W, k, k)
    out = np.einsum("bchwyx,ocyx->bohw", win, w, optimize=True)
    if node.bias is not None:
        out = out + np.asarray(node.bias, np.float64).reshape(1, -1, 1, 1)
    return out


def graph_agreement(graph, hw: HardwareModel, x_images: np.ndarray, *, reset: str = "zero",
                    dt: float = DEFAULT_DT) -> dict:
    """How often the imported model agrees with the graph's float semantics (:func:`simulate_graph`)
    on ``x_images`` (uint8 images, or given spikes (B, T, *input)): the fraction of hidden spikes
    (every neuron, every step) and of classes (argmax of the summed scores) that are the same."""
    from .sim import golden  # numpy only

    g = golden.run(hw, x_images)
    nir = _nir()
    # a graph that thresholds its input itself takes the pixels
    x = hw.prepare_images(x_images) if isinstance(_chain(graph)[1][1], nir.Threshold) else hw.step_inputs(x_images)
    x = x.astype(np.float64)
    if x.ndim == 2:  # the same input every step
        x = np.repeat(x[:, None], hw.timesteps, axis=1)
    x = x.reshape(x.shape[0], hw.timesteps, *(hw.layers[0].in_shape if kinds.of(hw.layers[0]).output_is_map
                                               else (hw.n_inputs,)))
    spikes, scores = simulate_graph(graph, x, reset=reset, dt=dt)
    same = total = 0
    for s_graph, s_hw in zip(spikes, g.step_spikes):
        same += int((s_graph.astype(np.uint8) == s_hw).sum())
        total += s_hw.size
    return {"spikes": same / total if total else 1.0, "spike_count": total,
            "classes": float(np.mean(np.argmax(scores, axis=1) == g.classes)), "images": len(g.classes)}
