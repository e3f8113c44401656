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
neurons fold
into integer thresholds at one time step. Anything else is refused with one line naming the node.
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
from .fileio import atomic_write_bytes, check_output_file, magic_kind, same_path
from .hwmodel import (MODEL_FILE, WEIGHT_BITS, ConvLayer, HardwareModel, HardwareModelError, Layer, weight_fields,
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


def conv_nodes(nir, layer: ConvLayer, add, maps):
    """The ``conv2d`` kind's ``nir`` part: ``Conv2d`` then ``IF`` (and ``SumPool2d`` then an OR
    ``IF`` when pooled), each given to ``add(name, node)``; returns the output maps' shape."""
    c_in, h, w_ = layer.in_shape
    k = layer.kernel
    w, b = integer_form(layer, V_THRESHOLD)
    add(layer.name, nir.Conv2d(input_shape=(h, w_), weight=w.reshape(layer.channels, c_in, k, k),
                               stride=1, padding=k // 2, dilation=1, groups=1, bias=b,
                               metadata={"compare": layer.compare.astype(np.int8)}))
    shape = (layer.channels, h, w_)
    add(f"{layer.name}_spike", nir.IF(r=np.ones(shape, np.float32), v_threshold=np.full(shape, V_THRESHOLD, np.float32),
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
    w, b = integer_form(layer, V_THRESHOLD)
    add(layer.name, nir.Affine(weight=w, bias=b, metadata={"compare": layer.compare.astype(np.int8)}))
    n = (layer.n_out,)
    add(f"{layer.name}_spike", nir.IF(r=np.ones(n, np.float32), v_threshold=np.full(n, V_THRESHOLD, np.float32),
                                      v_reset=np.zeros(n, np.float32)))
    return None


def nir_problem(hw: HardwareModel) -> str | None:
    """Why :func:`to_nir` cannot write ``hw`` yet, or None: it writes one step of a model's
    default input coding with step neurons."""
    if hw.default_time and not any(l.neuron_model.stateful for l in hw.layers):
        return None
    runs = time_text(hw.timesteps, hw.input_coding, [(l.neuron, l.leak, l.reset) for l in hw.hidden_layers], False)
    return (f"the NIR export writes one-step models of step neurons; this one runs {runs[2:]} "
            "(a multi-step NIR graph is not written yet)")


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


def _integer_rows(name: str, kind: str, weight: np.ndarray, unit: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(integer weights (rows, fan-in), per-row scale c > 0, bits) of weights that are c times
    integers per row: +-c everywhere (bits 1, +-1 weights), or integers w with |w| <= 2^(b-1) - 1
    for a b of 2..8 (the smallest that holds the layer; bitsnn's own multi-bit export)."""
    w = _finite(name, kind, "weight", weight).reshape(np.shape(weight)[0], -1)
    mag = np.abs(w)
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
                                 f"{WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}-bit integer weights")
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
             dt: float = DEFAULT_DT, source: str = "<graph>") -> HardwareModel:
    """The hardware model of a NIR graph (see the module docstring); NirImportError names what
    does not map. ``input_encoding`` / ``input_threshold`` say how images enter a graph whose
    metadata and nodes do not; ``dt`` is the one time step of LIF neurons."""
    nir = _nir()
    chain = _chain(graph)
    meta = dict(graph.metadata or {})
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
    if isinstance(first, nir.Conv2d):
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
        if isinstance(node, nir.Flatten):
            cur = (math.prod(cur),)
            j += 1
            continue
        if isinstance(node, nir.Conv2d):
            layer, cur, j = _conv(nodes, j, cur, kind_in, len(layers), compare_meta, dt)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            last = j + 1 == len(nodes) or (j + 2 == len(nodes) and isinstance(nodes[j + 1][1], (nir.IF, nir.LIF)))
            layer, cur, j = _dense(nodes, j, cur, kind_in, len(layers), compare_meta, dt, last)
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
        raise NirImportError("the NIR graph does not end in a Linear (or bias-free Affine) layer of class scores")
    crop = _meta_ints(meta, "input_crop", 4) if ours and "input_crop" in meta else None
    file_meta = _meta_json(meta) if ours and "meta" in meta else {"imported_from": os.path.basename(source)}
    try:
        return HardwareModel(input_shape=tuple(input_shape), input_encoding=input_encoding,
                             input_threshold=input_threshold, layers=tuple(layers), meta=file_meta, input_crop=crop)
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


def _conv(nodes, j, cur, kind_in, index, compare_meta, dt):
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
    ints, c, wbits = _integer_rows(name, "Conv2d", w, 1.0 if compare_meta is not None else None)
    b = np.zeros(c_out) if node.bias is None else _broadcast(name, node, _finite(name, "Conv2d", "bias", node.bias), (c_out,))
    shape = (c_out, *cur[1:])
    if j + 1 >= len(nodes):
        raise NirImportError(f"NIR node '{name}' (Conv2d) is not followed by an IF or LIF neuron")
    r, vt = _neuron(nodes[j + 1][0], nodes[j + 1][1], shape, dt)
    theta = _thresholds(c, b, r, vt, _a_max(kind_in, c_in * k * k, wbits))
    ints, theta, compare = _apply_compare(ints, theta, compare_meta, c_out)
    j += 2
    pool = 1
    if j < len(nodes) and isinstance(nodes[j][1], (nir.SumPool2d, nir.AvgPool2d)):
        pname, pnode = nodes[j]
        form = "sum" if isinstance(pnode, nir.SumPool2d) else "avg"
        if not (as_pair(pnode.kernel_size) == (2, 2) and as_pair(pnode.stride) == (2, 2)
                and as_pair(pnode.padding) == (0, 0)):
            raise NirImportError(f"NIR node '{pname}' ({_kind(pnode)}): bitsnn maps 2 x 2 pools of stride 2 without padding")
        pooled = (c_out, shape[1] // 2, shape[2] // 2)
        if j + 1 >= len(nodes):
            raise NirImportError(f"NIR node '{pname}' ({_kind(pnode)}) is not followed by an IF or LIF neuron")
        pr, pvt = _neuron(nodes[j + 1][0], nodes[j + 1][1], pooled, dt)
        top = 4.0 if form == "sum" else 1.0
        ratio = pvt / pr
        if not np.all((ratio >= 0) & (ratio < top / 4)):
            raise NirImportError(f"NIR node '{nodes[j + 1][0]}' ({_kind(nodes[j + 1][1])}): after a {form} pool, a "
                                 f"threshold of {ratio.max():g} is not an OR of the window's spikes")
        pool, shape, j = 2, pooled, j + 2
    layer = ConvLayer(f"conv{index + 1}", **weight_fields(wbits, ints), thresholds=theta, compare=compare,
                      input_kind=kind_in, in_shape=tuple(cur), channels=c_out, kernel=k, pool=pool)
    return layer, shape, j


def _dense(nodes, j, cur, kind_in, index, compare_meta, dt, last):
    nir = _nir()
    name, node = nodes[j]
    w = np.asarray(node.weight)
    n_in = math.prod(cur)
    if w.ndim != 2 or w.shape[1] != n_in:
        raise NirImportError(f"NIR node '{name}' ({_kind(node)}): weights {w.shape} for {n_in} inputs {tuple(cur)}"
                             + (" (a conv output needs a Flatten first)" if len(cur) > 1 and w.ndim == 2 else ""))
    ints, c, wbits = _integer_rows(name, _kind(node), w, 1.0 if compare_meta is not None or last else None)
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
    r, vt = _neuron(nodes[j + 1][0], nodes[j + 1][1], (w.shape[0],), dt)
    theta = _thresholds(c, b, r, vt, _a_max(kind_in, n_in, wbits))
    ints, theta, compare = _apply_compare(ints, theta, compare_meta, w.shape[0])
    layer = Layer(f"fc{index + 1}", n_in, w.shape[0], thresholds=theta, compare=compare, input_kind=kind_in,
                  **weight_fields(wbits, ints))
    return layer, (w.shape[0],), j + 2


def import_main(args) -> int:
    """``bitsnn import GRAPH.nir -o MODEL.bsnn``."""
    check_output_file(args.output, kind=MODEL_FILE, inputs=[args.graph], force=getattr(args, "force", False))
    hw = read_nir(args.graph, input_encoding=args.input, input_threshold=args.input_threshold, dt=args.dt)
    hw.save(args.output)
    print(f"[import] {hw.describe()}; content hash {hw.content_hash[:16]}; wrote {args.output}")
    return 0
