"""The whole report as one JSON-ready dict, and writing it with its plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import BitsnnError
from .. import kinds
from ..fileio import atomic_write_text, check_output_dir, inside
from .build import check_build_report
from .constants import FPGA_POWER, FpgaPowerModel, constants_table
from .counts import layer_counts
from .energy import ann_fp32_energy, asic_energy, fpga_energy, timing
from .plots import (plot_accuracy_energy, plot_feature_maps, plot_spike_raster,
                    plot_spikes_per_layer, plot_time_raster, plot_utilisation)

__all__ = ["REPORT_VERSION", "REPORT_KEYS", "REPORT_MARKER", "build_report", "write_report", "check_report_dir"]

REPORT_VERSION = 1
#: the file that marks a directory as a ``bitsnn report -o`` output: only such a directory (or an
#: empty one) is written into by a later report
REPORT_MARKER = ".bitsnn-report"

#: Top-level keys of report.json (documented in docs/report.md).
REPORT_KEYS = ("report_version", "model", "board", "hardware", "images", "accuracy", "layers", "totals",
               "timing", "energy", "time", "weights", "constants", "build", "plots")


def build_report(model, golden, cycles, *, board: str, clock_hz: float, clock_source: str,
                 mode: str = "event", lanes: int = 32, word: int = 32, max_neurons_per_core: int | None = None,
                 conv_engine: str = "auto", labels=None, build: dict | None = None, toggles_per_cycle: float | None = None,
                 toggles_source: str = "", cycles_source: str = "", model_path: str | None = None,
                 power: FpgaPowerModel | None = None) -> dict:
    """The whole report as a JSON-ready dict (keys: :data:`REPORT_KEYS`).

    ``cycles``: (B,) cycles per image (``bitsnn.sim.cycles.predict_cycles`` or the hardware's own);
    ``toggles_per_cycle``: from :func:`count_toggles` on a waveform of this design, or None;
    toggles per inference are estimated as toggles_per_cycle x cycles.
    """
    cycles = np.asarray(cycles)
    B = golden.input_events.shape[0]
    if cycles.shape != (B,):
        raise BitsnnError(f"cycles has shape {cycles.shape}, expected ({B},): one count per image")
    if build is not None:
        check_build_report(build)
    counts = layer_counts(model, golden, mode=mode, lanes=lanes, word=word, max_neurons_per_core=max_neurons_per_core,
                          conv_engine=conv_engine)
    tim = timing(cycles, clock_hz)
    tim.update(cycles_source=cycles_source, clock_source=clock_source)
    asic = asic_energy(counts)
    ann = ann_fp32_energy(model)
    power = power if power is not None else FPGA_POWER.get(board)
    toggles = None if toggles_per_cycle is None else float(toggles_per_cycle) * tim["cycles"]["mean"]
    if power is None:
        fpga = {"total_j": None, "lower_bound": True, "unknown_terms": ["static_j", "clock_j", "toggle_j"],
                "note": f"no FPGA power model for board {board!r}"}
    else:
        fpga = fpga_energy(tim["latency_s"]["mean"], tim["cycles"]["mean"], toggles, power)
    fpga["toggles_per_cycle"] = toggles_per_cycle
    fpga["toggles_source"] = toggles_source or ("none: no waveform given" if toggles_per_cycle is None else "")
    spikes = [lc.output_spikes for lc in counts if lc.output_spikes is not None]
    total_spikes = np.sum(spikes, axis=0) if spikes else np.zeros(B, np.int64)
    accuracy = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (B,):
            raise BitsnnError(f"labels has shape {labels.shape}, expected ({B},)")
        accuracy = float(np.mean(golden.classes == labels))
    return {
        "report_version": REPORT_VERSION,
        "model": {"path": model_path, "content_hash": model.content_hash, "describe": model.describe(),
                  "sizes": model.sizes, "input_encoding": model.input_encoding,
                  "weight_bits": model.weight_bits_total},
        "board": {"name": board, "device": getattr(power, "device", None)},
        "hardware": {"mode": mode, "lanes": int(lanes), "word": int(word),
                     "max_neurons_per_core": max_neurons_per_core, "conv_engine": conv_engine},
        "images": int(B),
        "accuracy": accuracy,
        "layers": [lc.summary() for lc in counts],
        "totals": {
            "spikes_mean": float(total_spikes.mean()),
            "synaptic_events_mean": float(sum(lc.synaptic_events for lc in counts).mean()),
            "weight_reads_bits_mean": float(sum(lc.weight_bits for lc in counts).mean()),
            "weight_reads_words_mean": float(sum(lc.weight_words for lc in counts).mean()),
            "macs_dense": ann["macs"],
        },
        "timing": tim,
        "energy": {
            "asic_45nm": {
                "note": "Horowitz 45 nm 0.9 V ASIC figures, not FPGA: an operation-count comparison only",
                "snn_j": asic["mean_j"], "snn_std_j": asic["std_j"], "snn_layers": asic["layers"],
                "ann_fp32_j": ann["total_j"], "ann_fp32": ann,
                "ann_over_snn": ann["total_j"] / asic["mean_j"] if asic["mean_j"] > 0 else None,
            },
            "fpga": fpga,
        },
        "time": time_section(model, golden),
        "weights": weights_section(model),
        "constants": constants_table(board),
        "build": build,
        "plots": [],
    }


def weights_section(model) -> dict:
    """Each layer's weight width and bits, against the same layers all at the model's widest
    width; with a ``--precision auto`` model, the estimator's last (averaged) values and the budget
    from the file's training metrics (docs/model.md, "Per-layer precision")."""
    layers = [{"name": l.name, "bits": int(l.bits), "weights": int(l.rows * l.fan_in),
               "weight_bits": int(l.rows * l.fan_in * l.bits)} for l in model.weight_layers]
    widest = max((l["bits"] for l in layers), default=0)  # 0: a global sum pool alone holds none
    at_widest = sum(l["weights"] * widest for l in layers)
    total = sum(l["weight_bits"] for l in layers)
    out = {"layers": layers, "weight_bits": total, "widest_bits": widest, "weight_bits_at_widest": at_widest,
           "saving": 1.0 - total / at_widest if at_widest else 0.0, "precision": None}
    train = model.meta.get("train_metrics") if isinstance(model.meta, dict) else None
    prec = train.get("precision") if isinstance(train, dict) else None
    if isinstance(prec, dict) and prec.get("history"):
        last = prec["history"][-1]
        out["precision"] = {"budget": prec.get("budget"), "widths": prec.get("widths"), "epoch": last.get("epoch"),
                            "estimator": last.get("smoothed") or last.get("estimator")}
    return out


def time_section(model, golden) -> dict:
    """The time steps: T, the input coding, and each hidden layer's spikes at each step (means over
    the images; ``spikes_per_step`` sums the layers). ``against_steps`` is filled in by ``bitsnn report``."""
    layers = [{"name": layer.name, "spikes_per_step": s.sum(axis=2).mean(axis=0).tolist()}
              for layer, s in zip(model.hidden_layers, golden.step_spikes or [])]
    total = np.sum([row["spikes_per_step"] for row in layers], axis=0).tolist() if layers else [0.0] * golden.steps
    return {"steps": int(golden.steps), "coding": model.input_coding, "layers": layers,
            "spikes_per_step": total, "against_steps": None}


def check_report_dir(outdir, *, inputs=(), what: str = "-o") -> Path:
    """Refuse, before any work, a directory a report may not write into: one that exists and is
    not a directory, a non-empty one without :data:`REPORT_MARKER` (the user's own files, or a
    build's), one that holds an input of the report (``inputs``: the model, the build report, the
    waveform, ...), or a place that cannot be written. Returns the path."""
    outdir = check_output_dir(outdir, what)
    if outdir.is_dir() and not (outdir / REPORT_MARKER).is_file() and any(outdir.iterdir()):
        raise BitsnnError(f"{what} {outdir}: the directory exists and was not written by bitsnn report "
                          f"(it has no {REPORT_MARKER}); give a new or empty directory")
    for i in inputs:
        if i is not None and outdir.exists() and inside(i, outdir):
            raise BitsnnError(f"{what} {outdir}: holds {i}, an input of this report; give another directory")
    return outdir


def write_report(report: dict, outdir, *, model=None, golden=None, build: dict | None = None,
                 sweep=None) -> dict:
    """Write ``report.json`` and the plots into ``outdir`` atomically, with the marker
    :data:`REPORT_MARKER` (:func:`check_report_dir` first); return the report with its ``plots``
    list filled in. ``sweep``: optional (label, accuracy, energy) points."""
    outdir = check_report_dir(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(outdir / REPORT_MARKER, json.dumps({"written_by": "bitsnn report"}) + "\n")
    plots = []
    if golden is not None:
        plots.append(plot_spike_raster(golden, outdir / "spike_raster.png", model=model).name)
        if golden.steps > 1:
            plots.append(plot_time_raster(golden, outdir / "time_raster.png", model=model).name)
        if any(kinds.of(l).output_is_map for l in model.layers):
            plots.append(plot_feature_maps(golden, model, outdir / "feature_maps.png").name)
        if golden.spike_counts.shape[1]:
            names = [l.name for l in model.hidden_layers] if model is not None else None
            plots.append(plot_spikes_per_layer(golden.spike_counts, outdir / "spikes_per_layer.png", names=names).name)
    if build is not None:
        plots.append(plot_utilisation(build, outdir / "utilisation.png").name)
    if sweep:
        plots.append(plot_accuracy_energy(sweep, outdir / "accuracy_energy.png").name)
    report = dict(report, plots=plots)
    atomic_write_text(outdir / "report.json", json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
