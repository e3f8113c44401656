"""Export a user's own ``nn.Module`` built from bitsnn layers: trace it with torch.fx, map each
node onto the hardware model, refuse anything else by name.

The module may be any ``nn.Module`` whose ``forward`` is a chain of

- :class:`~bitsnn.model.layers.InputSpikes` (optional, first: pixels -> {0,1} spikes at a threshold;
  without it the first layer takes the 8-bit pixels and must say ``input_kind="pixels"``),
- :class:`~bitsnn.model.layers.BinaryConv2d` layers (first; a 2 x 2 ``nn.MaxPool2d`` right after one
  built with ``pool=1`` is its OR pool: a max of 0/1 spikes is their OR), then
- :class:`~bitsnn.model.layers.BinaryDense` layers, with any flatten between them
  (``x.flatten(1)``, ``torch.flatten(x, 1)``, ``nn.Flatten()``, ``x.view(x.size(0), -1)``), and
- one :class:`~bitsnn.model.layers.BinaryLinear` with ``scale="scalar"`` whose output the module
  returns (the integer class scores times one positive scale).

The module takes raw pixel values (0..255, unscaled; bitsnn layers scale pixels inside). A
node of any other kind (an activation, an addition, a second branch, a MaxPool, ...) is refused
with one line naming it, the way hls4ml's per-layer handlers refuse a layer they lack. (For
training, ``pool=2`` is the better spelling: it pools the potentials before the spike, so the
surrogate gradient reaches the position that decides each window.)

The chain is then checked twice before anything is written: the network the trace found must
give the module's own outputs on ``example_input`` (so the trace read the module right), and the
hardware model's golden evaluation must equal the torch integer path on every spike of every
layer, the scores and the class (:func:`bitsnn.model.export.compare_with_golden`).
"""

from __future__ import annotations

import copy
import dataclasses
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from bitsnn import BitsnnError, __version__
from bitsnn.fileio import check_output_file
from bitsnn.hwmodel import MODEL_FILE, HardwareModel

from .export import compare_with_golden, to_hardware_model
from .layers import BinaryConv2d, BinaryDense, BinaryLinear, InputSpikes
from .network import BitSNN

__all__ = ["export", "trace_network"]

#: the modules the tracer keeps whole (their insides are bitsnn's, mapped as one layer each)
LEAVES = (InputSpikes, BinaryConv2d, BinaryDense, BinaryLinear, nn.Flatten)
_MAPPED = "bitsnn maps InputSpikes, BinaryConv2d, BinaryDense, flatten and a final BinaryLinear(scale='scalar')"


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


def _what(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} module '{node.target}'"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} {node.target}"


def _refuse(node: fx.Node, modules: dict, why: str = "") -> BitsnnError:
    return BitsnnError(f"export: node '{node.name}' ({_what(node, modules)}) {why or 'has no hardware mapping'}; {_MAPPED}")


def _is_shape_query(node: fx.Node) -> bool:
    """``x.size(0)``, ``x.shape``, ``x.shape[0]``: values a reshape may use, not data."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        return True
    return node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node) \
        and _is_shape_query(node.args[0])


def _is_flatten(node: fx.Node, modules: dict) -> bool:
    """A flatten from dimension 1 on: nn.Flatten(), x.flatten(1), torch.flatten(x, 1), x.view/reshape(B, -1)."""
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if (node.op, node.target) in (("call_method", "flatten"), ("call_function", torch.flatten)):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return len(dims) == 2 and dims[1] == -1 and (isinstance(dims[0], fx.Node) and _is_shape_query(dims[0])
                                                     or dims[0] == -1)
    return False


def _is_or_pool(m: nn.MaxPool2d) -> bool:
    """A 2 x 2 window, stride 2, no padding, dilation or ceil mode: the hardware's OR pool."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    stride = m.kernel_size if m.stride is None else m.stride
    return (pair(m.kernel_size) == (2, 2) and pair(stride) == (2, 2) and pair(m.padding) == (0, 0)
            and pair(m.dilation) == (1, 1) and not m.ceil_mode and not m.return_indices)


def trace_network(model: nn.Module, example_input: torch.Tensor) -> BitSNN:
    """The :class:`BitSNN` around ``model``'s own layers (shared, not copied), found by torch.fx.

    BitsnnError names the first node that does not map (see the module docstring)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # torch.fx raises many kinds (data-dependent control flow, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BitsnnError(f"export: torch.fx cannot trace {type(model).__name__}: {first}") from None
    modules = dict(model.named_modules())
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise BitsnnError(f"export: {type(model).__name__}.forward takes {len(inputs)} inputs; bitsnn maps one (the image)")
    cur = inputs[0]
    encoding, threshold, hidden, output = "pixels", 128, [], None
    for node in graph.nodes:
        if node.op == "placeholder" or _is_shape_query(node):
            continue
        if node.op == "output":
            if output is None or node.args[0] is not cur:
                raise _refuse(node, modules, "returns something other than the final BinaryLinear's output")
            break
        data_args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not _is_shape_query(a)]
        if data_args != [cur]:
            raise _refuse(node, modules, "is not fed by the layer before it alone (bitsnn maps a chain of layers)")
        extra = [u for u in cur.users if u is not node and not _is_shape_query(u)]
        if extra:
            raise _refuse(extra[0], modules, f"also reads '{cur.name}' (bitsnn maps a chain of layers, no branches)")
        if output is not None:
            raise _refuse(node, modules, "comes after the output BinaryLinear")
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, InputSpikes):
            if cur is not inputs[0]:
                raise _refuse(node, modules, "is not the first operation on the input")
            encoding, threshold = "spikes", mod.threshold
        elif isinstance(mod, (BinaryConv2d, BinaryDense)):
            hidden.append(mod)
        elif isinstance(mod, BinaryLinear):
            if mod.scale_kind != "scalar":
                raise _refuse(node, modules, "is a BinaryLinear with per-neuron scales; the output layer needs scale='scalar'")
            output = mod
        elif isinstance(mod, nn.MaxPool2d) and _is_or_pool(mod) and hidden and isinstance(hidden[-1], BinaryConv2d) \
                and hidden[-1].pool == 1 and cur.op == "call_module" and modules.get(cur.target) is hidden[-1]:
            # a 2 x 2 max of 0/1 spikes is their OR: the convolution's own pool=2 (its parameters shared)
            pooled = copy.copy(hidden[-1])
            pooled.pool = 2
            hidden[-1] = pooled
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            raise _refuse(node, modules, "has no hardware mapping here: bitsnn pools a convolution's spikes with a "
                                         "2 x 2 MaxPool2d right after a BinaryConv2d(..., pool=1), or with pool=2")
        elif not _is_flatten(node, modules):
            raise _refuse(node, modules)
        cur = node
    if output is None:
        raise BitsnnError(f"export: {type(model).__name__} has no final BinaryLinear(scale='scalar'); {_MAPPED}")
    shape = tuple(example_input.shape[1:])
    if hidden and isinstance(hidden[0], BinaryConv2d) and len(shape) == 3:
        if shape[0] != 1:
            raise BitsnnError(f"export: the input has {shape[0]} channels; bitsnn takes one-channel images")
        shape = shape[1:]
    elif len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    try:
        return BitSNN.from_layers(hidden, output, input_shape=shape, input_encoding=encoding, input_threshold=threshold)
    except ValueError as e:
        raise BitsnnError(f"export: {e}") from None


def _pixels(x, what: str) -> np.ndarray:
    """Images as uint8 (N, *shape) after checking they hold whole 0..255 values."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim < 2 or len(a) == 0:
        raise BitsnnError(f"export: {what} must be a batch of images, got shape {a.shape}")
    if a.dtype != np.uint8 and (not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 255 or np.any(a != np.rint(a))):
        raise BitsnnError(f"export: {what} must hold raw 8-bit pixel values 0..255 (bitsnn layers scale pixels inside)")
    return a.astype(np.uint8)


@torch.no_grad()
def export(model: nn.Module, example_input, path=None, *, images=None, labels=None, meta: dict | None = None,
           nir=None, force: bool = False, log=None) -> HardwareModel:
    """Trace ``model`` into the hardware model, check it, and write ``path`` (if given) atomically,
    and the NIR graph ``nir`` (if given; :mod:`bitsnn.nirgraph`).

    ``example_input``: a batch of raw 0..255 images as the module takes them (e.g. (B, 1, 28, 28)).
    ``images`` / ``labels``: the images the bit-exactness check runs on (default ``example_input``)
    and optional labels for the accuracy written into the file's meta. Returns the
    :class:`~bitsnn.hwmodel.HardwareModel`; BitsnnError (one line) for anything it cannot map or
    any mismatch, before writing. An existing file at ``path`` (or ``nir``) is replaced only when
    it is a hardware-model file (a NIR graph of bitsnn's), or with ``force``.
    """
    if path is not None:
        check_output_file(path, kind=MODEL_FILE, force=force)
    if nir is not None:
        from bitsnn.nirgraph import check_nir_output

        check_nir_output(nir, path, force=force)
    x = torch.as_tensor(_pixels(example_input, "example_input")).to(torch.float32).reshape(example_input.shape)
    net = trace_network(model, x)
    was_training = model.training
    model.eval()
    try:
        theirs = model(x)
        ours = net.run(x, "float").logits
        if theirs.shape != ours.shape or not torch.allclose(theirs.to(ours.dtype), ours, rtol=1e-4, atol=1e-4):
            raise BitsnnError(f"export: the traced chain does not reproduce {type(model).__name__}'s outputs on "
                              "example_input (does forward do more than its bitsnn layers?)")
        hw = to_hardware_model(net)
        imgs = _pixels(images if images is not None else x, "images")
        imgs = imgs.reshape(len(imgs), -1).reshape(len(imgs), *net.image_shape)
        res = compare_with_golden(net, hw, imgs, None if labels is None else np.asarray(labels))
    finally:
        model.train(was_training)
    if res["mismatches"]:
        raise BitsnnError(f"export: golden vs torch: {res['mismatches']} mismatches on {res['images']} images "
                          f"(first: {res['mismatch_indices'][:5]}); not writing {path}")
    info = {"exported_from": type(model).__name__, "arch": dict(net.arch), "checked_images": res["images"],
            "bitsnn_version": __version__}
    if "accuracy" in res:
        info["test_accuracy"] = res["accuracy"]
    hw = dataclasses.replace(hw, meta={**info, **(meta or {})})
    if path is not None:
        hw.save(path)
    if nir is not None:
        from bitsnn.nirgraph import write_nir

        write_nir(hw, nir, force=force)
    if log:
        log(f"[export] {hw.describe()}; 0 mismatches on {res['images']} images"
            + (f"; accuracy {res['accuracy']:.4f}" if "accuracy" in res else "") + (f"; wrote {path}" if path else "") + (f" and {nir}" if nir else ""))
    return hw
