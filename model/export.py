"""Export: a trained checkpoint -> the integer hardware-model file (``.bsnn``).

Per layer type, a handler turns a torch layer into a hardware-model layer (hls4ml's shape:
handlers registered per type, anything else refused by name):

- :class:`BinaryDense` (hidden): weight bits = ``standardised weight >= 0`` (the signs torch
  uses; sign(0) = +1), thresholds/compare from :func:`bitsnn.model.fold.fold_thresholds`
  (float64, docs/hardware-model.md "Arithmetic"), the same function the torch exact eval path calls;
- :class:`BinaryConv2d` (hidden): a ``binary_conv2d`` layer, kernel bits and per-channel
  thresholds the same way, with its geometry (input maps, channels, kernel, pool);
- :class:`BinaryLinear` with a scalar scale (output): weight bits only; integer scores.

A layer trained with b-bit weights (``bits`` >= 2) becomes the matching ``int_dense`` /
``int_conv2d`` layer, its integer weights in place of the bits.

Before writing, the torch exact path and the golden model (sim/golden.py) both run on the whole
test set; any difference in any layer's spikes, the scores or the class is a mismatch, and export
refuses to write the file when there is one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from bitsnn import BitsnnError, __version__
from bitsnn.fileio import check_output_file
from bitsnn.hwmodel import MODEL_FILE, ConvLayer, GapLayer, HardwareModel, Layer, weight_fields
from bitsnn.kinds import KINDS, part

from .layers import BinaryConv2d, BinaryDense, BinaryLinear, GlobalSumPool
from .network import BitSNN

__all__ = ["to_hardware_model", "compare_with_golden", "export_checkpoint", "export_main", "LayerExport", "layer_handlers"]


#: checkpoint metrics that differ between runs of the same training (wall times, per-epoch history
#: with its timings): kept in the checkpoint, left out of the hardware model's meta
NON_REPRODUCIBLE_METRICS = ("history", "train_seconds")


def _weights(module) -> dict:
    """A torch layer's weights as the file holds them: packed bits (+-1) or b-bit integers."""
    return weight_fields(module.bits, module.weight_ints())


def _linear_layer(fc: BinaryLinear, name: str, input_kind: str, neuron_fields: dict | None = None) -> Layer:
    return Layer(name, fc.n_in, fc.n_out, input_kind=input_kind, **_weights(fc), **(neuron_fields or {}))


def _dense_layer(layer: BinaryDense, name: str) -> Layer:
    return _linear_layer(layer.fc, name, layer.input_kind, layer.neuron_fields())


def _conv_layer(layer: BinaryConv2d, name: str) -> ConvLayer:
    if layer.in_hw is None:
        raise BitsnnError(f"export: {name} does not know its input map size")
    return ConvLayer(name, input_kind=layer.input_kind, in_shape=(layer.c_in, *layer.in_hw), channels=layer.c_out,
                     kernel=layer.kernel_size, pool=layer.pool, **_weights(layer), **layer.neuron_fields())


@dataclasses.dataclass(frozen=True)
class LayerExport:
    """A layer kind's ``export`` part (:mod:`bitsnn.kinds`): the torch module it comes from, the
    name prefix of its layers in the file, and ``convert(module, name)`` -> the hardware-model layer
    (of the binary or the multi-bit kind, by the module's ``bits``: both kinds share this part)."""

    module: type
    prefix: str
    convert: Callable


def _gap_layer(layer: GlobalSumPool, name: str) -> GapLayer:
    return GapLayer(name, layer.channels * layer.in_hw[0] * layer.in_hw[1], layer.n_out,
                    in_shape=(layer.channels, *layer.in_hw), input_kind="spikes")


DENSE = LayerExport(BinaryDense, "fc", _dense_layer)
CONV = LayerExport(BinaryConv2d, "conv", _conv_layer)
GAP = LayerExport(GlobalSumPool, "gap", _gap_layer)


def layer_handlers(*, hidden: bool = True) -> dict:
    """torch module type -> its kind's :class:`LayerExport`: the kinds a hidden layer may be of,
    or (``hidden`` False) the output-only ones (a global sum pool)."""
    return {e.module: e for e in (part(k, "export") for k in KINDS if KINDS[k].can_be_hidden == hidden)}


def to_hardware_model(model: BitSNN, meta: dict | None = None) -> HardwareModel:
    """Fold a trained BitSNN into a HardwareModel; BitsnnError names any unsupported layer."""
    layers = []
    handlers = layer_handlers()
    for i, layer in enumerate(model.hidden):
        entry = handlers.get(type(layer))
        if entry is None:
            raise BitsnnError(
                f"export: layer {i} ({type(layer).__name__}) is not supported; the hardware model holds "
                f"{', '.join(t.__name__ for t in handlers)} hidden layers and a BinaryLinear output"
            )
        layers.append(entry.convert(layer, f"{entry.prefix}{i + 1}"))
    out = model.output
    head = layer_handlers(hidden=False).get(type(out))  # an output-only kind (a global sum pool)
    if head is not None:
        layers.append(head.convert(out, f"{head.prefix}{len(layers) + 1}"))
    elif not isinstance(out, BinaryLinear) or out.scale_kind != "scalar":
        raise BitsnnError("export: the output layer must be a BinaryLinear with one scalar scale, or a global sum pool")
    else:
        layers.append(_linear_layer(out, f"fc{len(layers) + 1}", model.output_input_kind))
    return HardwareModel(
        input_shape=tuple(model.input_shape),
        input_encoding=model.input_encoding,
        input_threshold=model.input_threshold,
        layers=tuple(layers),
        meta=dict(meta or {}),
        input_crop=model.input_crop,
        timesteps=model.timesteps,
        input_coding=model.input_coding,
        input_seed=model.input_seed,
    )


@torch.no_grad()
def compare_with_golden(model: BitSNN, hw: HardwareModel, images: np.ndarray, labels: np.ndarray | None = None,
                        *, batch_size: int = 1000) -> dict:
    """Run the torch exact path and the golden model on ``images``; count per-image mismatches.

    A mismatch is any difference in any hidden layer's spikes, the scores or the class. Also
    counts images the float path (BN + hardtanh + bias, running statistics) classifies
    differently from the exact path (informational).
    """
    from bitsnn.sim import golden

    model.eval()
    plans = [golden.plan_for(l) for l in hw.layers]
    n = len(images)
    bad = np.zeros(n, dtype=bool)
    float_diff = 0
    classes = np.empty(n, dtype=np.int64)
    for lo in range(0, n, batch_size):
        xb = np.ascontiguousarray(images[lo : lo + batch_size])
        g = golden.run(hw, xb, plans=plans)
        tr = model.run(torch.as_tensor(xb), "exact")
        m = np.zeros(len(xb), dtype=bool)
        # every spike of every step: the trace's (B, n) at one step, (B, T, n) over several
        for s_t, s_g in zip(tr.spikes, g.step_spikes):  # signed neurons' -1 spikes too
            s_t = s_t.numpy().astype(np.int16).reshape(len(xb), -1)
            m |= np.any(s_t != s_g.reshape(len(xb), -1).astype(np.int16), axis=1)
        t_scores = tr.scores.numpy()
        if not np.all(np.abs(t_scores) < 2**53) or not np.all(t_scores == np.rint(t_scores)):
            raise BitsnnError("export: the torch exact path produced non-integer scores")
        m |= np.any(t_scores.astype(np.int64) != g.scores, axis=1)
        m |= tr.classes.numpy() != g.classes
        bad[lo : lo + batch_size] = m
        classes[lo : lo + batch_size] = g.classes
        fl = model.run(torch.as_tensor(xb), "float")
        float_diff += int((fl.logits.argmax(1).numpy() != g.classes).sum())
    out = {"images": n, "mismatches": int(bad.sum()), "mismatch_indices": np.flatnonzero(bad)[:20].tolist(),
           "float_path_disagreements": float_diff, "classes": classes}
    if labels is not None:
        out["accuracy"] = float(np.mean(classes == np.asarray(labels)))
    return out


def export_checkpoint(checkpoint, output, data_dir=None, *, nir=None, force: bool = False,
                      log=print) -> HardwareModel:
    """Load, fold, verify against the golden model on the whole test set, write ``output`` (and
    the NIR graph ``nir``, if given). Neither output may be the checkpoint or a data file, nor an
    existing file of another kind unless ``force``."""
    from bitsnn.data import data_inputs, load_dataset

    from .train import load_checkpoint

    inputs = [checkpoint, *(data_inputs(data_dir))]
    check_output_file(output, kind=MODEL_FILE, inputs=inputs, force=force)  # before any work
    if nir is not None:
        from bitsnn.nirgraph import check_nir_output

        check_nir_output(nir, output, inputs=inputs, force=force)
    t0 = time.perf_counter()
    model, config, metrics = load_checkpoint(checkpoint)
    hw = to_hardware_model(model)  # refuses unsupported layers before any data is loaded
    if not hw.static_input and hw.input_coding == "given":
        raise BitsnnError("export checks a model on the data set's test images; this one takes given spikes per "
                          "step, which no data set loader gives yet: check it on your spikes with "
                          "bitsnn.model.export.compare_with_golden and write it with to_hardware_model(...).save")
    if nir is not None:
        from bitsnn.nirgraph import nir_problem

        if (why := nir_problem(hw)):
            raise BitsnnError(f"--nir: {why}")
    ds = load_dataset(data_dir)
    if ds.test_images.shape[1:] != tuple(model.image_shape):
        raise BitsnnError(f"test images are {ds.test_images.shape[1:]}, the model takes {tuple(model.image_shape)}")
    res = compare_with_golden(model, hw, ds.test_images, ds.test_labels)
    log(f"[export] golden vs torch: {res['mismatches']} mismatches on {res['images']} images")
    log(f"[export] float path vs exact path: {res['float_path_disagreements']} of {res['images']} test images "
        "classified differently (informational)")
    if res["mismatches"]:
        raise BitsnnError(
            f"golden vs torch: {res['mismatches']} mismatches on {res['images']} images "
            f"(first: {res['mismatch_indices'][:5]}); not writing {output}"
        )
    meta = {
        "dataset": ds.name,
        "test_accuracy": res["accuracy"],
        "test_images": res["images"],
        "float_path_disagreements": res["float_path_disagreements"],
        "training": {k: v for k, v in config.items()},
        # only what the same inputs reproduce: no timings, no paths (the same training gives a
        # byte-identical file, so the same content hash and device model id)
        "train_metrics": {k: v for k, v in metrics.items() if k not in NON_REPRODUCIBLE_METRICS},
        "bitsnn_version": __version__,
    }
    hw = dataclasses.replace(hw, meta=meta)
    hw.save(output)
    log(f"[export] {hw.describe()}; test accuracy {res['accuracy']:.4f}; wrote {output} "
        f"({time.perf_counter() - t0:.1f} s)")
    if nir is not None:
        from bitsnn.nirgraph import write_nir

        write_nir(hw, nir, force=force)
        log(f"[export] wrote the NIR graph {nir}")
    return hw


def export_main(args) -> int:
    """``bitsnn export``."""
    export_checkpoint(args.checkpoint, args.output, args.data_dir, nir=getattr(args, "nir", None),
                      force=getattr(args, "force", False))
    return 0
