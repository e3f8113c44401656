"""Run a NIR graph in a NIR-reading library (snnTorch, Norse) at one time step, image by image,
and collect what each hidden layer's neurons fired and the class scores, for comparison with the
golden model (docs/ecosystem.md). The libraries are imported when asked for."""

from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["LIBRARIES", "load_in", "spike_nodes", "run_graph"]

#: the NIR readers bitsnn's graphs are checked in (docs/ecosystem.md)
LIBRARIES = ("snntorch", "norse")


def load_in(library: str, graph) -> torch.nn.Module:
    """The torch module ``library`` builds from ``graph``."""
    if library == "snntorch":
        import snntorch as snn
        from snntorch.import_nir import import_from_nir

        net = import_from_nir(copy.deepcopy(graph))
        # snnTorch 1.0.0 builds an IF node as Leaky(init_hidden=False), which returns (spikes,
        # membrane); nirtorch then feeds that pair to the next layer. With init_hidden the Leaky
        # returns its spikes alone, as every other node's module does.
        for m in net.modules():
            if isinstance(m, snn.Leaky):
                m.init_hidden = True
        return net
    if library == "norse":
        import norse.torch

        return norse.torch.from_nir(graph)
    raise ValueError(f"unknown library {library!r}")


def spike_nodes(hw) -> list[str]:
    """The node names of ``bitsnn.nirgraph.to_nir(hw)`` whose outputs are each hidden layer's spikes."""
    return [f"{l.name}_or" if getattr(l, "pool", 1) > 1 else f"{l.name}_spike" for l in hw.hidden_layers]


@torch.no_grad()
def run_graph(net: torch.nn.Module, in_shape, x: np.ndarray, nodes: list[str]):
    """(spikes per node as (N, n) uint8, scores (N, classes) float) of ``net`` on the first-layer
    inputs ``x`` (N, n_inputs), one image at a time from rest: NIR shapes have no batch dimension."""
    mods = dict(net.named_modules())
    seen: dict[str, np.ndarray] = {}

    def hook(name):
        def grab(_m, _i, out):
            out = out[0] if isinstance(out, tuple) else out
            seen[name] = out.detach().reshape(-1).numpy().copy()
        return grab

    handles = [mods[n].register_forward_hook(hook(n)) for n in nodes]
    spikes, scores = [[] for _ in nodes], []
    try:
        for xi in x:
            for m in net.modules():  # snnTorch keeps membranes between calls: start each image at rest
                if hasattr(m, "reset_mem") and callable(m.reset_mem):
                    m.reset_mem()
            out = net(torch.as_tensor(xi, dtype=torch.float32).reshape(tuple(int(d) for d in in_shape)))
            out = out[0] if isinstance(out, tuple) else out
            scores.append(out.reshape(-1).numpy().copy())
            for k, n in enumerate(nodes):
                spikes[k].append(seen.pop(n))
    finally:
        for h in handles:
            h.remove()
    return [np.array(s) for s in spikes], np.array(scores)
