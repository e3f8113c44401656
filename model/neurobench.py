"""NeuroBench metrics of a hardware model, computed by the ``neurobench`` package itself on a
torch module built from the ``.bsnn`` file that is bit-exact with the golden model.

The module (:func:`torch_module`) computes each layer in the integer form that
``bitsnn.nirgraph`` writes to NIR (:func:`bitsnn.nirgraph.integer_form` at threshold 0): a
``Conv2d`` / ``Linear`` of the +-1 weights times the compare sign s, with bias ``0.5 - s * theta``,
so that ``v = s(a - theta) + 0.5 > 0`` exactly when the hardware neuron fires; every value is a
whole number or a half, exact in float32. The spike is
its own module (:class:`Spike`), registered with NeuroBench as an activation: NeuroBench decides
AC or MAC by looking at a layer's inputs, and counts activation sparsity on activation modules.
A pooling convolution takes the 2 x 2 maximum of its potentials before the spike: ``[max v > 0]``
is the OR of ``[v > 0]``, so the spikes NeuroBench sees are the pooled ones, the next layer's
inputs, as bitsnn counts them. The output layer is a bias-free ``Linear`` of the +-1 weights:
its outputs are the integer class scores; a global sum pool head is a grouped ``Conv2d`` of
ones over the whole map, whose outputs are the same scores.

The module takes the first layer's inputs: ``HardwareModel.encode_input`` of the images (the crop
and the input threshold applied), as (N, 1, H, W) for a convolution first, else (N, n).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from bitsnn import BitsnnError, kinds
from bitsnn.hwmodel import HardwareModel
from bitsnn.nirgraph import integer_form

__all__ = ["Spike", "torch_module", "module_inputs", "check_module", "neurobench_metrics"]


class Spike(nn.Module):
    """Heaviside spike ``[v > 0]`` of the potentials, as 0.0 / 1.0."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return (v > 0).to(v.dtype)


def _signed(layer) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = integer_form(layer, 0.0)  # fires when s*w . x + b > 0
    return torch.as_tensor(w), torch.as_tensor(b)


@torch.no_grad()
def torch_module(hw: HardwareModel) -> nn.Sequential:
    """The float32 torch module of ``hw`` (see the module docstring), in eval mode."""
    mods: list[nn.Module] = []
    flat = not kinds.of(hw.layers[0]).input_is_map
    for layer in hw.layers:
        if not kinds.of(layer).has_weights:
            # a global sum pool (the output layer): each class's channels summed over the map, a
            # grouped convolution of ones as large as the map (NeuroBench counts an accumulate per
            # input spike, as the hardware's counters add one; its footprint counts the ones,
            # which the hardware does not store)
            c, h, w = layer.in_shape
            if flat:
                mods.append(nn.Unflatten(1, (c, h, w)))
            pool = nn.Conv2d(c, layer.n_out, (h, w), groups=layer.n_out, bias=False)
            pool.weight.fill_(1.0)
            mods += [pool, nn.Flatten()]
            flat = True
            continue
        if kinds.of(layer).output_is_map:
            c_in, _h, _w = layer.in_shape
            k = layer.kernel
            conv = nn.Conv2d(c_in, layer.channels, k, padding=k // 2)
            w, b = _signed(layer)
            conv.weight.copy_(w.reshape(layer.channels, c_in, k, k))
            conv.bias.copy_(b)
            mods.append(conv)
            if layer.pool > 1:
                mods.append(nn.MaxPool2d(layer.pool))
            mods.append(Spike())
            flat = False
            continue
        if not flat:
            mods.append(nn.Flatten())
            flat = True
        if layer.is_output:
            fc = nn.Linear(layer.n_in, layer.n_out, bias=False)
            fc.weight.copy_(torch.as_tensor(layer.weights_int(), dtype=torch.float32))
            mods.append(fc)
        else:
            fc = nn.Linear(layer.n_in, layer.n_out)
            w, b = _signed(layer)
            fc.weight.copy_(w)
            fc.bias.copy_(b)
            mods += [fc, Spike()]
    return nn.Sequential(*mods).eval()


def module_inputs(hw: HardwareModel, images) -> torch.Tensor:
    """The module's input batch for ``images``: the first layer's inputs as float32."""
    x = torch.as_tensor(hw.encode_input(images), dtype=torch.float32)
    first = hw.layers[0]
    return x.reshape(len(x), *first.in_shape) if kinds.of(first).input_is_map else x


@torch.no_grad()
def check_module(hw: HardwareModel, net: nn.Module, images, golden_result, batch_size: int = 1000) -> int:
    """Images on which ``net`` differs from the golden model in any hidden layer's spikes, the scores
    or the class (0 for :func:`torch_module`)."""
    spikes = [m for m in net.modules() if isinstance(m, Spike)]
    bad = np.zeros(len(images), dtype=bool)
    for lo in range(0, len(images), batch_size):
        seen = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.reshape(len(out), -1).numpy()))
                 for m in spikes]
        try:
            scores = net(module_inputs(hw, images[lo : lo + batch_size])).numpy()
        finally:
            for h in hooks:
                h.remove()
        sl = slice(lo, lo + len(scores))
        m = np.any(scores != golden_result.scores[sl], axis=1) | (scores.argmax(1) != golden_result.classes[sl])
        for s_mod, s_gold in zip(seen, golden_result.spikes, strict=True):
            m |= np.any(s_mod.astype(np.uint8) != s_gold[sl], axis=1)
        bad[sl] = m
    return int(bad.sum())


def neurobench_metrics(hw: HardwareModel, images, labels, golden_result, *, batch_size: int = 500) -> dict:
    """NeuroBench's footprint, connection sparsity, activation sparsity, synaptic operations and
    accuracy of ``hw`` over ``images`` (run by ``neurobench.benchmarks.Benchmark``), after
    checking the module against the golden model on every image."""
    try:
        from neurobench.benchmarks import Benchmark
        from neurobench.metrics.static import ConnectionSparsity, Footprint
        from neurobench.metrics.workload import ActivationSparsity, ClassificationAccuracy, SynapticOperations
        from neurobench.models import TorchModel
        from neurobench.version import __version__ as nb_version
    except ImportError as e:
        raise BitsnnError(f"--neurobench needs the neurobench package ({e.name} is missing): pip install 'bitsnn[nir]'") \
            from None
    net = torch_module(hw)
    bad = check_module(hw, net, images, golden_result)
    if bad:
        raise BitsnnError(f"--neurobench: the torch module differs from the golden model on {bad} images")
    model = TorchModel(net)
    model.add_activation_module(Spike)
    data = torch.utils.data.TensorDataset(module_inputs(hw, images), torch.as_tensor(np.asarray(labels), dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    bench = Benchmark(model, loader, [], [lambda out: out.argmax(-1)],
                      [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations, ClassificationAccuracy]])
    res = bench.run(quiet=True)
    return {"neurobench_version": nb_version, "images": len(images), "module_mismatches": bad,
            **{k: (dict(v) if isinstance(v, dict) else float(v)) for k, v in res.items()}}
