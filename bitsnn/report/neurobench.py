"""``bitsnn report --neurobench``: NeuroBench's metrics (computed by the neurobench package on the
bit-exact torch module of :mod:`bitsnn.model.neurobench`) beside bitsnn's own counts of the same
things, with what each measures. Imports torch only when :func:`neurobench_section` runs."""

from __future__ import annotations

import numpy as np

from .. import kinds

__all__ = ["neurobench_section", "neurobench_lines"]


def _weights(layer) -> np.ndarray:
    """A layer's integer weights: (rows, fan-in), +-1 or b-bit."""
    return layer.weights_int()


def nonzero_weight_events(model, golden) -> np.ndarray:
    """(B, layers): the synaptic events whose weight is not zero, the operations NeuroBench counts
    (an input's operation on a zero weight is no operation to it). The hardware adds every reached
    weight, zeros included, so bitsnn's synaptic events hold these and the zero-weight ones. For
    +-1 weights the two are equal."""
    B = golden.inputs.shape[0]
    out = np.zeros((B, len(model.layers)), np.int64)
    for i, layer in enumerate(model.layers):
        x = golden.inputs if i == 0 else golden.spikes[i - 1]
        nz_in = (np.asarray(x) != 0)
        if not kinds.of(layer).has_weights:  # a global sum pool: an input spike adds one to its class
            out[:, i] = nz_in.sum(axis=1)
            continue
        w = _weights(layer) != 0
        if kinds.of(layer).output_is_map:  # a k x k window of maps
            c_in, h, wd = layer.in_shape
            k, r = layer.kernel, layer.kernel // 2
            taps = w.reshape(layer.channels, c_in, k, k).sum(axis=0)  # (c_in, k, k): nonzero weights per tap
            m = nz_in.reshape(B, c_in, h, wd)
            for dy in range(k):
                for dx in range(k):
                    # an input at p reaches the output at p - (d - r), which must lie on the map
                    ys = slice(max(0, dy - r), min(h, h + dy - r))
                    xs = slice(max(0, dx - r), min(wd, wd + dx - r))
                    out[:, i] += m[:, :, ys, xs].sum(axis=(2, 3)) @ taps[:, dy, dx]
        else:
            out[:, i] = nz_in.astype(np.int64) @ w.sum(axis=0)
    return out


def _bitsnn_counts(model, golden) -> dict:
    from ..sim.golden import plan_for

    hidden_neurons = sum(l.n_out for l in model.hidden_layers)
    spikes = golden.spike_counts.sum(axis=1).astype(np.float64)
    syn = golden.synaptic_events.astype(np.float64)
    spike_in = [i for i, l in enumerate(model.layers) if l.input_kind == "spikes"]
    pixel_in = [i for i, l in enumerate(model.layers) if l.input_kind == "pixels"]
    # every synapse an input reaches when every input is nonzero: the same count as
    # golden.synaptic_events, of an all-ones input (taps over a convolution's zero padding excluded)
    dense = 0
    for layer in model.layers:
        dense += int(plan_for(layer).evaluate(np.ones((1, layer.n_in), np.uint8))[1][0])
    weight_bits = model.weight_bits_total  # b bits a weight in a multi-bit layer
    # +-1 weights are never zero; a multi-bit layer's can be (2 bits: {-1, 0, 1})
    weighted = model.weight_layers  # a global sum pool holds none
    zeros = sum(int(np.count_nonzero(l.weights_int() == 0)) for l in weighted)
    n_weights = sum(l.rows * l.fan_in for l in weighted)
    # NeuroBench's module holds a global sum pool as a convolution of ones, one per input
    ones = sum(l.n_in for l in model.layers if not kinds.of(l).has_weights)
    nz = nonzero_weight_events(model, golden).astype(np.float64)
    return {
        "activation_sparsity": float(1 - spikes.mean() / hidden_neurons) if hidden_neurons else None,
        "spikes_per_layer_mean": golden.spike_counts.mean(axis=0).tolist(),
        "synaptic_events_on_pixels_mean": float(syn[:, pixel_in].sum(axis=1).mean()),
        "synaptic_events_on_spikes_mean": float(syn[:, spike_in].sum(axis=1).mean()),
        "synapses_reached_by_all_inputs": dense,
        "macs_with_padding": int(sum(l.macs for l in model.layers)),
        "weight_bits": weight_bits,
        "weight_bytes": (weight_bits + 7) // 8,
        "thresholds": int(sum(l.rows for l in model.hidden_layers)),
        "zero_weights": zeros,
        "weights": n_weights,
        "zero_weight_share": zeros / n_weights if n_weights else 0.0,
        "head_ones": ones,
        "nonzero_weight_events_on_pixels_mean": float(nz[:, pixel_in].sum(axis=1).mean()),
        "nonzero_weight_events_on_spikes_mean": float(nz[:, spike_in].sum(axis=1).mean()),
    }


def neurobench_section(model, golden, images, labels) -> dict:
    """The report's ``neurobench`` entry: NeuroBench's numbers, bitsnn's, and whether the ones
    that measure the same thing agree."""
    from ..model.neurobench import neurobench_metrics

    nb = neurobench_metrics(model, images, labels, golden)
    ours = _bitsnn_counts(model, golden)
    syn = nb["SynapticOperations"]
    agree = {
        "activation_sparsity": bool(np.isclose(nb["ActivationSparsity"], ours["activation_sparsity"], rtol=1e-9,
                                               atol=1e-12)),
        "effective_macs": bool(np.isclose(syn["Effective_MACs"], ours["nonzero_weight_events_on_pixels_mean"],
                                          rtol=1e-9)),
        "effective_acs": bool(np.isclose(syn["Effective_ACs"], ours["nonzero_weight_events_on_spikes_mean"],
                                         rtol=1e-9)),
        "dense_synops": bool(syn["Dense"] == ours["synapses_reached_by_all_inputs"]),
        # NeuroBench rounds it (to 3 or 4 decimals)
        "connection_sparsity": bool(abs(nb["ConnectionSparsity"] - ours["zero_weights"]
                                        / (ours["weights"] + ours["head_ones"])) <= 5e-4),
        "accuracy": bool(np.isclose(nb["ClassificationAccuracy"], float(np.mean(golden.classes == np.asarray(labels))),
                                    atol=1e-6)),
    }
    return {
        "neurobench": nb,
        "bitsnn": ours,
        "agree": agree,
        "notes": {
            "footprint": "NeuroBench counts the torch module's float32 parameters (4 bytes per weight and per "
                         "folded bias); bitsnn stores 1 bit per +-1 weight, b bits per b-bit weight, and one integer "
                         "threshold per neuron or channel",
            "connection_sparsity": "the share of weights that are zero: none of +-1 weights, some of b-bit ones; "
                                   "NeuroBench's module holds a global sum pool head as a convolution of ones (one "
                                   "per input, which the hardware does not store), so it shares the zeros among "
                                   "those too",
            "activation_sparsity": "the share of hidden-layer spikes that do not happen, over every hidden "
                                   "neuron of every image; a pooling convolution's spikes are counted after the "
                                   "OR pool, as the next layer receives them",
            "synaptic_operations": "NeuroBench counts, per connection layer, each nonzero input's synapses "
                                   "whose weight is not zero. bitsnn's synaptic events count every synapse an input "
                                   "reaches, zero weights included, as the hardware adds them all; the two are equal "
                                   "for +-1 weights, and bitsnn's events on nonzero weights equal NeuroBench's. It "
                                   "calls a layer's operations MACs when its inputs are not all 0/1 (8-bit pixels "
                                   "into the first layer) and ACs otherwise",
            "dense": "NeuroBench's Dense counts the synapses every input would reach, without a convolution's "
                     "taps on its zero padding; bitsnn's MAC count (the ANN's, for the energy model) includes them",
        },
    }


def neurobench_lines(section: dict) -> list[str]:
    nb, ours, ok = section["neurobench"], section["bitsnn"], section["agree"]
    syn = nb["SynapticOperations"]
    mark = lambda k: "agrees" if ok[k] else "DIFFERS"  # noqa: E731
    return [
        f"NeuroBench {nb['neurobench_version']} on {nb['images']} images (its own metrics on a torch module "
        f"bit-exact with the golden model, {nb['module_mismatches']} mismatches):",
        f"  footprint {nb['Footprint']:.0f} bytes (float32 parameters); bitsnn: {ours['weight_bytes']} bytes of "
        f"weights ({ours['weight_bits']} bits) and {ours['thresholds']} thresholds",
        f"  connection sparsity {nb['ConnectionSparsity']:.3f}; bitsnn {ours['zero_weight_share']:.3f}: "
        f"{ours['zero_weights']} of {ours['weights']} weights are zero ({mark('connection_sparsity')}"
        + (f" with the head's {ours['head_ones']} ones that NeuroBench's module holds" if ours["head_ones"] else "")
        + ")",
        f"  activation sparsity {nb['ActivationSparsity']:.6f}; bitsnn {ours['activation_sparsity']:.6f} "
        f"({mark('activation_sparsity')})",
        f"  synaptic operations: effective MACs {syn['Effective_MACs']:.1f}, ACs {syn['Effective_ACs']:.1f}, dense "
        f"{syn['Dense']:.0f}; bitsnn synaptic events on nonzero weights: on pixels "
        f"{ours['nonzero_weight_events_on_pixels_mean']:.1f} ({mark('effective_macs')}), on spikes "
        f"{ours['nonzero_weight_events_on_spikes_mean']:.1f} ({mark('effective_acs')}); the hardware's additions, "
        f"zero weights included: {ours['synaptic_events_on_pixels_mean']:.1f} and "
        f"{ours['synaptic_events_on_spikes_mean']:.1f}; synapses reached by all inputs "
        f"{ours['synapses_reached_by_all_inputs']} ({mark('dense_synops')}; "
        f"{ours['macs_with_padding']} MACs with padding taps)",
        f"  accuracy {nb['ClassificationAccuracy']:.4f} ({mark('accuracy')})",
    ]
