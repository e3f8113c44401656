"""``bitsnn report --neurobench``: NeuroBench's metrics (computed by the neurobench package on the
bit-exact torch module of :mod:`bitsnn.model.neurobench`) beside bitsnn's own counts of the same
things, with what each measures. Imports torch only when :func:`neurobench_section` runs."""

from __future__ import annotations

import numpy as np

__all__ = ["neurobench_section", "neurobench_lines"]


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
    zeros = sum(int(np.count_nonzero(l.weights_int() == 0)) for l in model.layers if l.bits > 1)
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
        "effective_macs": bool(np.isclose(syn["Effective_MACs"], ours["synaptic_events_on_pixels_mean"], rtol=1e-9)),
        "effective_acs": bool(np.isclose(syn["Effective_ACs"], ours["synaptic_events_on_spikes_mean"], rtol=1e-9)),
        "dense_synops": bool(syn["Dense"] == ours["synapses_reached_by_all_inputs"]),
        "connection_sparsity": bool(nb["ConnectionSparsity"] == 0.0),
        "accuracy": bool(np.isclose(nb["ClassificationAccuracy"], float(np.mean(golden.classes == np.asarray(labels))),
                                    atol=1e-6)),
    }
    return {
        "neurobench": nb,
        "bitsnn": ours,
        "agree": agree,
        "notes": {
            "footprint": "NeuroBench counts the torch module's float32 parameters (4 bytes per +-1 weight and per "
                         "folded bias); bitsnn stores 1 bit per weight and one integer threshold per neuron or channel",
            "activation_sparsity": "the share of hidden-layer spikes that do not happen, over every hidden "
                                   "neuron of every image; a pooling convolution's spikes are counted after the "
                                   "OR pool, as the next layer receives them",
            "synaptic_operations": "NeuroBench counts, per connection layer, the nonzero inputs times the "
                                   "synapses they reach: bitsnn's synaptic events. It calls a layer's operations "
                                   "MACs when its inputs are not all 0/1 (8-bit pixels into the first layer) and "
                                   "ACs otherwise",
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
        f"1-bit weights and {ours['thresholds']} thresholds",
        f"  connection sparsity {nb['ConnectionSparsity']:.3f} ({mark('connection_sparsity')}: +-1 weights, none zero)",
        f"  activation sparsity {nb['ActivationSparsity']:.6f}; bitsnn {ours['activation_sparsity']:.6f} "
        f"({mark('activation_sparsity')})",
        f"  synaptic operations: effective MACs {syn['Effective_MACs']:.1f}, ACs {syn['Effective_ACs']:.1f}, dense "
        f"{syn['Dense']:.0f}; bitsnn synaptic events on pixels {ours['synaptic_events_on_pixels_mean']:.1f} "
        f"({mark('effective_macs')}), on spikes {ours['synaptic_events_on_spikes_mean']:.1f} ({mark('effective_acs')}), "
        f"synapses reached by all inputs {ours['synapses_reached_by_all_inputs']} ({mark('dense_synops')}; "
        f"{ours['macs_with_padding']} MACs with padding taps)",
        f"  accuracy {nb['ClassificationAccuracy']:.4f} ({mark('accuracy')})",
    ]
