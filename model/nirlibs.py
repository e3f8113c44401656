"""Run a NIR graph in a NIR-reading library (snnTorch, Norse) at one time step, image by image,
and collect what each hidden layer's neurons fired and the class scores, for comparison with the
golden model (docs/ecosystem.md). The libraries are imported when asked for."""

from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["LIBRARIES", "load_in", "spike_nodes", "run_graph", "norse_if_reference", "snntorch_leaky_reference"]

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


# --- reference networks over time steps, defined in the libraries themselves -------------------


def norse_if_reference(n_in: int = 100, n_hidden: int = 40, seed: int = 0):
    """A Norse network of the exact form (``docs/ecosystem.md``, "Over time steps"): Linear with
    weights +-0.25 and biases in steps of 1/8, ``IAFCell`` (v_th 1, reset to 0), Linear of +-1.
    Returns (the module, its NIR graph, ``run(x, steps)`` -> (hidden spikes (B, T, n_hidden),
    outputs summed over the steps)) with x (B, n_in) 0/1 the same at every step."""
    import norse.torch as norse

    torch.manual_seed(seed)
    net = norse.SequentialState(torch.nn.Linear(n_in, n_hidden),
                                norse.IAFCell(norse.IAFParameters(v_th=torch.ones(n_hidden))),
                                torch.nn.Linear(n_hidden, 10, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.sign(net[0].weight) * 0.25)
        net[0].bias.copy_(torch.round(net[0].bias * 8) / 8)
        net[2].weight.copy_(torch.sign(net[2].weight))

    @torch.no_grad()
    def run(x: np.ndarray, steps: int):
        seen, state, total = [], None, 0
        h = net[1].register_forward_hook(lambda _m, _i, o: seen.append(o[0].detach().numpy().copy()))
        try:
            for _ in range(steps):
                o, state = net(torch.as_tensor(x, dtype=torch.float32), state)
                total = total + o.numpy()
        finally:
            h.remove()
        return np.stack(seen, axis=1).astype(np.uint8), total

    return net, norse.to_nir(net, torch.zeros(1, n_in)), run


def snntorch_leaky_reference(train_images: np.ndarray, train_labels: np.ndarray, steps: int = 25, seed: int = 0):
    """An snnTorch network trained in snnTorch on ``train_images`` (784-64-10, ``Leaky`` at beta
    0.9 and threshold 1, spike counts over ``steps`` into the loss), then binarised (each hidden
    row +-its mean magnitude, the output +-one power of two). Returns (the module, its NIR graph,
    ``run(images)`` -> (hidden spikes (B, T, 64), the output layer's outputs summed over the
    steps)) for uint8 images whose pixels >= 128 are the input spikes."""
    import snntorch as snn
    import snntorch.utils  # noqa: F401  (snn.utils.reset)
    import torch.nn.functional as F
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(seed)
    fc1, fc2 = torch.nn.Linear(784, 64), torch.nn.Linear(64, 10, bias=False)
    # per-neuron beta and threshold: snnTorch writes a scalar one as a shapeless LIF, which NIR's type check refuses
    lif1 = snn.Leaky(beta=torch.full((64,), 0.9), threshold=torch.ones(64), init_hidden=True)
    lif2 = snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), init_hidden=True, output=True)
    net = torch.nn.Sequential(torch.nn.Flatten(), fc1, lif1, fc2, lif2)
    x = torch.as_tensor(train_images >= 128).float().unsqueeze(1)
    y = torch.as_tensor(train_labels).long()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for i in range(0, len(x) - 99, 100):
        snn.utils.reset(net)
        count = sum(net(x[i : i + 100])[0] for _ in range(steps))
        opt.zero_grad()
        F.cross_entropy(count, y[i : i + 100]).backward()
        opt.step()
    with torch.no_grad():
        fc1.weight.copy_(torch.sign(fc1.weight) * fc1.weight.abs().mean(1, keepdim=True))
        fc2.weight.copy_(torch.sign(fc2.weight) * 2.0 ** torch.round(torch.log2(fc2.weight.abs().mean())))

    @torch.no_grad()
    def run(images: np.ndarray):
        seen, total = [], 0
        h = lif1.register_forward_hook(lambda _m, _i, o: seen.append(o.detach().numpy().copy()))
        try:
            snn.utils.reset(net)
            xi = torch.as_tensor(images >= 128).float().unsqueeze(1)
            for _ in range(steps):
                net(xi)
                total = total + fc2(torch.as_tensor(seen[-1])).numpy()
        finally:
            h.remove()
        return np.stack(seen, axis=1).astype(np.uint8), total

    return net, export_to_nir(net, torch.zeros(1, 1, 28, 28), ignore_dims=[0]), run
