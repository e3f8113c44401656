"""The report's plots (matplotlib's Agg backend through Figure, no pyplot state), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import BitsnnError
from .. import kinds
from ..fileio import atomic_path
from .build import check_build_report

__all__ = ["plot_spike_raster", "plot_feature_maps", "plot_spikes_per_layer", "plot_accuracy_energy", "plot_utilisation", "plot_time_raster"]


def _figure(w=6.4, h=4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_spike_raster(golden, path, *, index: int = 0, model=None) -> Path:
    """Spike raster of one inference: one column per stage (input events, each hidden layer),
    a dot per active neuron; the output column marks the predicted class."""
    B = golden.inputs.shape[0]
    if not 0 <= index < B:
        raise BitsnnError(f"image index {index} outside 0..{B - 1}")
    stages = [("input", golden.inputs[index] != 0)] + [
        (model.layers[i].name if model else f"layer {i}", s[index] != 0) for i, s in enumerate(golden.spikes)]
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for x, (name, active) in enumerate(stages):
        n = active.size
        idx = np.flatnonzero(active)
        ax.scatter(np.full(idx.size, x), idx / max(n - 1, 1), s=60, marker="_", linewidths=1.0, color="k")
    xo = len(stages)
    C = golden.scores.shape[1]
    ax.scatter([xo], [golden.classes[index] / max(C - 1, 1)], s=40, marker="s", color="tab:red")
    labels = [f"{n}\n({a.sum()}/{a.size})" for n, a in stages] + [f"class\n{int(golden.classes[index])}"]
    ax.set_xticks(range(xo + 1), labels, fontsize=8)
    ax.set_ylabel("neuron (fraction of layer)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Spikes of one inference (image {index})")
    return _save(fig, path)


def plot_time_raster(golden, path, *, index: int = 0, model=None) -> Path:
    """Raster over time of one inference: one panel per hidden layer, a dot for each neuron
    (row) that spikes at each step (column)."""
    B = golden.inputs.shape[0]
    if not 0 <= index < B:
        raise BitsnnError(f"image index {index} outside 0..{B - 1}")
    layers = golden.step_spikes or []
    fig = _figure(3.0 * max(1, len(layers)), 4.5)
    for i, s in enumerate(layers):
        ax = fig.add_subplot(1, max(1, len(layers)), i + 1)
        t, n = np.nonzero(s[index])
        ax.scatter(t, n, s=4, marker="s", color="k")
        ax.set_xticks(range(s.shape[1]))
        ax.set_xlim(-0.5, s.shape[1] - 0.5)
        ax.set_ylim(-0.5, s.shape[2] - 0.5)
        ax.set_xlabel("step")
        name = model.hidden_layers[i].name if model is not None else f"layer {i}"
        ax.set_title(f"{name} ({int(s[index].sum())} spikes)", fontsize=9)
        if i == 0:
            ax.set_ylabel("neuron")
    fig.suptitle(f"Spikes over {golden.steps} steps (image {index})")
    return _save(fig, path)


def plot_feature_maps(golden, model, path, *, index: int = 0, max_channels: int = 16) -> Path:
    """The spike picture of one inference as feature maps: the input image, then each
    convolution's output maps (one panel per channel, up to ``max_channels``; white = spike). An
    input over time (rate or given spikes) shows each input's spikes summed over the steps."""
    B = golden.inputs.shape[0]
    if not 0 <= index < B:
        raise BitsnnError(f"image index {index} outside 0..{B - 1}")
    convs = [(i, l) for i, l in enumerate(model.layers) if kinds.of(l).output_is_map]
    if not convs:
        raise BitsnnError("the model has no convolution to draw as feature maps")
    x = golden.inputs[index]
    if x.ndim == 2:  # rate or given input: its spikes summed over the steps
        x = x.sum(axis=0)
    rows = [("input", x.reshape(convs[0][1].in_shape)[:max_channels])]
    for i, l in convs:
        rows.append((f"{l.name} ({int(golden.spikes[i][index].sum())} spikes)",
                     golden.spikes[i][index].reshape(l.out_shape)[:max_channels]))
    cols = max(m.shape[0] for _, m in rows)
    fig = _figure(1.0 * cols + 1, 1.15 * len(rows) + 0.4)
    for r, (name, maps) in enumerate(rows):
        for c in range(maps.shape[0]):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(maps[c], cmap="gray", vmin=0, vmax=1 if r else max(1, int(maps.max())),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"Feature maps of one inference (image {index}, class {int(golden.classes[index])})", fontsize=9)
    return _save(fig, path)


def plot_spikes_per_layer(spike_counts, path, *, names=None) -> Path:
    """Bar chart of spikes per hidden layer, mean +- std over images; ``spike_counts`` (B, L)."""
    sc = np.asarray(spike_counts, dtype=np.float64)
    if sc.ndim != 2 or sc.shape[0] == 0 or sc.shape[1] == 0:
        raise BitsnnError(f"spike counts must be a non-empty (images, layers) array, not shape {sc.shape}")
    names = list(names) if names is not None else [f"layer {i}" for i in range(sc.shape[1])]
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(range(sc.shape[1]), sc.mean(axis=0), yerr=sc.std(axis=0), capsize=4, color="tab:blue")
    ax.set_xticks(range(sc.shape[1]), names)
    ax.set_ylabel("spikes per inference")
    ax.set_title(f"Spikes per layer (mean ± std over {sc.shape[0]} images)")
    return _save(fig, path)


def plot_accuracy_energy(points, path, *, energy_label: str = "energy per inference (nJ, 45 nm op-count model)") -> Path:
    """Accuracy vs energy across sparsity settings: ``points`` is a list of (label, accuracy, energy_j)."""
    pts = list(points)
    if not pts:
        raise BitsnnError("no (label, accuracy, energy) points to plot")
    for p in pts:
        if len(p) != 3 or not all(isinstance(v, (int, float, np.floating, np.integer)) for v in p[1:]):
            raise BitsnnError(f"each point must be (label, accuracy, energy), not {p!r}")
        if not p[2] > 0:
            raise BitsnnError(f"energy of point {p[0]!r} must be positive, not {p[2]}")
    fig = _figure()
    ax = fig.add_subplot()
    e = [float(p[2]) * 1e9 for p in pts]
    a = [100 * float(p[1]) for p in pts]
    ax.plot(e, a, "o-", color="tab:green")
    for (label, _acc, _en), x, y in zip(pts, e, a):
        ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if max(e) > 10 * min(e):
        ax.set_xscale("log")
    ax.set_xlabel(energy_label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs energy")
    return _save(fig, path)


def plot_utilisation(build: dict, path) -> Path:
    """Used/available per resource from a build report dict (resources the device lacks are skipped)."""
    check_build_report(build)
    items = [(k, v["used"], v["available"]) for k, v in build["utilisation"].items() if v["available"] > 0]
    if not items:
        raise BitsnnError("build report: no resource with a nonzero 'available'")
    fig = _figure()
    ax = fig.add_subplot()
    frac = [u / a * 100 for _, u, a in items]
    ax.barh(range(len(items)), frac, color=["tab:red" if f > 100 else "tab:blue" for f in frac])
    ax.set_yticks(range(len(items)), [f"{k} ({u}/{a})" for k, u, a in items])
    ax.set_xlim(0, max(100, max(frac) * 1.05))
    ax.axvline(100, color="k", lw=0.8)
    ax.set_xlabel("utilisation (%)")
    ax.set_title(f"{build.get('board', '')} {build.get('device', '')}: Fmax {build['fmax_mhz']} MHz".strip())
    return _save(fig, path)
