"""``bitsnn report``: load the model and the test set, run the golden and cycle models, print the
summary and write the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import BitsnnError
from .. import protocol as P
from ..hwplan import DEFAULT_WORD, check_supported, default_lanes
from .build import load_build_report
from .core import build_report, check_report_dir, write_report
from .counts import check_hw
from .energy import timing
from .vcd import count_toggles

__all__ = ["summary_lines", "sweep_point", "report_main", "make_report", "end_to_end"]


def _fmt_j(j):
    if j is None:
        return "unknown"
    for unit, s in (("J", 1), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(j) >= s * 0.9995:  # 999.97 nJ prints as 1 uJ, not 1e+03 nJ
            return f"{j / s:.3g} {unit}"
    return f"{j / 1e-15:.3g} fJ"


def _weight_lines(w: dict | None) -> list[str]:
    if not w:
        return []
    if not w["layers"]:  # a global sum pool alone
        return ["weights: none"]
    lines = [f"weights: {w['weight_bits']:,} bits, " + ", ".join(f"{l['name']} {l['weights']:,} x {l['bits']}"
                                                            for l in w["layers"])
             + f"; {100 * w['saving']:.1f} % fewer than all layers at {w['widest_bits']} bits "
             f"({w['weight_bits_at_widest']:,})"]
    p = w.get("precision")
    if p and p.get("estimator"):
        lines.append(f"  chosen by --precision auto ({', '.join(f'{k} {v}' for k, v in (p.get('budget') or {}).items() if v is not None)}); "
                     f"the estimator after epoch {p['epoch']} (loss increase / accuracy drop, averaged):")
        for l, row in zip(w["layers"], p["estimator"]):
            lines.append(f"    {l['name']}: " + ", ".join(f"w{b} {v[0]:+.4f} / {v[1]:+.2f} pt" for b, v in row.items()))
    return lines


def summary_lines(report: dict) -> list[str]:
    t, e = report["timing"], report["energy"]
    lines = [f"model {report['model']['describe']}; {report['images']} images"
             + (f", accuracy {report['accuracy']:.4f}" if report["accuracy"] is not None else "")]
    for l in report["layers"]:
        sp = l["output_spikes"]
        lines.append(
            f"  {l['name']}: input events {l['input_events']['mean']:.1f}, synaptic events "
            f"{l['synaptic_events']['mean']:.0f}, " + (f"spikes {sp['mean']:.1f} ± {sp['std']:.1f}, " if sp else "")
            + (f"weight reads {l['weight_reads_words']['mean']:.0f} x {l['weight_word_bits']}-bit words"
               if l["weight_word_bits"] else "no weights")
            + (f", accumulator memory {l['accumulator_reads_words']['mean']:.0f} x {l['accumulator_word_bits']}-bit "
               "words read and written" if l.get("accumulator_word_bits") else ""))
    lines.extend(_weight_lines(report.get("weights")))
    lines.append(f"cycles {t['cycles']['mean']:.0f} (min {t['cycles']['min']:.0f}, max {t['cycles']['max']:.0f}; "
                 f"{t['cycles_source']}); clock {t['clock_hz'] / 1e6:.2f} MHz ({t['clock_source']})")
    lines.append(f"compute only: latency {t['latency_s']['mean'] * 1e6:.2f} us (max {t['latency_s']['max'] * 1e6:.2f} us), "
                 f"{t['inferences_per_s']:.0f} inferences/s"
                 + (f"; at the achieved Fmax {t['at_fmax']['clock_hz'] / 1e6:.1f} MHz: "
                    f"{t['at_fmax']['latency_s']['mean'] * 1e6:.2f} us" if "at_fmax" in t else ""))
    if t.get("end_to_end"):
        e2e = t["end_to_end"]
        lines.append(f"end to end over the UART at {e2e['baud']:.0f} baud ({e2e['baud_source']}): "
                     f"{e2e['images_per_s']:.0f} images/s, {e2e['per_image_s'] * 1e6:.1f} us per image "
                     f"({e2e['bound']}-bound: {e2e['formula']}; {e2e['command']}; the host's turnaround not counted)")
    a = e["asic_45nm"]
    lines.append(f"energy (a) 45 nm ASIC op model: SNN {_fmt_j(a['snn_j'])}, fp32 ANN {_fmt_j(a['ann_fp32_j'])}"
                 + (f" ({a['ann_over_snn']:.0f}x)" if a["ann_over_snn"] else ""))
    f = e["fpga"]
    lines.append(f"energy (b) FPGA: {_fmt_j(f.get('total_j'))}"
                 + (f" (lower bound: unknown {', '.join(f['unknown_terms'])})" if f.get("lower_bound") else ""))
    tm = report.get("time") or {}
    if tm.get("steps", 1) > 1:
        lines.append(f"over {tm['steps']} steps of {tm['coding']} input: spikes per step "
                     + ", ".join(f"{v:.1f}" for v in tm["spikes_per_step"]) + " (hidden layers, mean)")
        for row in tm.get("against_steps") or []:
            acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            lines.append(f"  first {row['steps']} step{'s' if row['steps'] > 1 else ' '}: accuracy {acc}, "
                         f"{row['spikes_mean']:.1f} spikes, latency {row['latency_s_mean'] * 1e6:.1f} us "
                         f"(max {row['latency_s_max'] * 1e6:.1f}), ASIC {_fmt_j(row['asic_snn_j'])}, "
                         f"FPGA {_fmt_j(row['fpga_j'])}")
    if report.get("sweep"):
        lines.append("sweep (accuracy vs energy):")
        for row in report["sweep"]:
            acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            lines.append(f"  {row['label']:>14}: accuracy {acc}, {row['spikes_mean']:.1f} spikes, "
                         f"{row['cycles_mean']:.0f} cycles, ASIC {_fmt_j(row['asic_snn_j'])}, "
                         f"FPGA {_fmt_j(row['fpga_j'])}")
    if report.get("neurobench"):
        from .neurobench import neurobench_lines

        lines += neurobench_lines(report["neurobench"])
    return lines


def end_to_end(model, cycles, clock_hz: float, board, build: dict | None, nonzero: float) -> dict:
    """Images/s over the board's UART (:func:`bitsnn.link.link_timing`) with INFER at the build's
    rate, else the board's default rate at ``clock_hz``. ``nonzero``: the images' mean nonzero
    first-layer inputs (a pixel INFER carries them)."""
    from .. import protocol as P
    from ..link import RateError, link_timing

    if build is not None and build.get("baud"):
        baud, src = float(build["baud"]), "the built bitstream's"
    else:
        try:
            baud, src = board.default_baud(clock_hz), f"{board.name}'s default at {clock_hz / 1e6:.4g} MHz"
        except RateError as e:
            raise BitsnnError(f"{board.name}: {e}") from None
    n_words = P.result_words(len(model.layers) - 1, model.num_classes)
    pixels = P.infer_carries_pixels(model)
    n_in = P.input_values(model)
    infer = ((build or {}).get("accelerator") or {}).get("infer")  # what the build chose
    if infer is None:
        infer = P.infer_fits(n_in, pixels=pixels)
    compute = float(np.mean(P.run_cycles(n_in, np.asarray(cycles, np.float64), n_words,
                                         infer_pixels=pixels))) / clock_hz
    t = link_timing(n_inputs=n_in, n_words=n_words, infer=infer, infer_pixels=pixels, nonzero=nonzero,
                    baud=baud, compute_s=compute)
    d = t.as_dict()
    what = (("INFER with each group's mask and nonzero pixels" if pixels else "INFER with packed spikes")
            + ", requests in flight") if infer else "LOAD of 8-bit pixels, RUN, READ, one at a time"
    d.update(baud_source=src, command=what)
    return d


def sweep_point(model, report: dict, path: str) -> dict:
    """One row of a sweep: the model's label (its training sparsity when the file records it, and
    its steps when it runs more than one), accuracy, spikes, cycles and energies from its report."""
    lam = ((model.meta or {}).get("training") or {}).get("sparsity")
    label = f"lambda={lam:g}" if isinstance(lam, (int, float)) else Path(path).stem
    if model.timesteps > 1 or any(layer.neuron_model.stateful for layer in model.hidden_layers):
        label = f"T={model.timesteps}, {label}"
    return {
        "model": path,
        "label": label,
        "steps": model.timesteps,
        "sparsity": lam,
        "accuracy": report["accuracy"],
        "spikes_mean": report["totals"]["spikes_mean"],
        "synaptic_events_mean": report["totals"]["synaptic_events_mean"],
        "cycles_mean": report["timing"]["cycles"]["mean"],
        "asic_snn_j": report["energy"]["asic_45nm"]["snn_j"],
        "fpga_j": report["energy"]["fpga"].get("total_j"),
    }


def steps_sweep(model, images, labels, golden, cycles, *, board: str, clock_hz: float, **hw) -> list[dict]:
    """Accuracy, spikes, latency and energy against T: the same model run for its first t steps,
    t = 1..T (its weights, thresholds and membranes unchanged; the last row is the model itself)."""
    import dataclasses

    from ..sim import cycles as cycles_mod
    from ..sim import golden as golden_mod

    rows = []
    for t in range(1, model.timesteps + 1):
        m = model if t == model.timesteps else dataclasses.replace(model, timesteps=t)
        x = images[:, :t] if model.input_coding == "given" else images  # given spikes: the first t steps
        g = golden if t == model.timesteps else golden_mod.run(m, x)
        c = cycles if t == model.timesteps else cycles_mod.predict_cycles(m, g, **hw)
        r = build_report(m, g, c, board=board, clock_hz=clock_hz, clock_source="", labels=labels, **hw)
        rows.append({"steps": t, "accuracy": r["accuracy"], "spikes_mean": r["totals"]["spikes_mean"],
                     "cycles_mean": r["timing"]["cycles"]["mean"], "latency_s_mean": r["timing"]["latency_s"]["mean"],
                     "latency_s_max": r["timing"]["latency_s"]["max"], "asic_snn_j": r["energy"]["asic_45nm"]["snn_j"],
                     "fpga_j": r["energy"]["fpga"]["total_j"]})
    return rows


def report_main(args) -> int:
    """``bitsnn report``."""
    return make_report(args.model, board=args.board, build_dir=args.build_dir, output=args.output,
                       images=args.images, mode=args.mode, lanes=args.lanes, word=args.word,
                       conv_engine=getattr(args, "conv_engine", None), vcd=args.vcd,
                       sweep=args.sweep, data_dir=args.data_dir, neurobench=getattr(args, "neurobench", False),
                       spikes=getattr(args, "spikes", None))


def make_report(model_path, *, board: str = "icebreaker", build_dir=None, output=None, images: int | None = None,
                mode: str | None = None, lanes: int | None = None, word: int | None = None,
                conv_engine: str | None = None, vcd=None, sweep=None, data_dir=None, neurobench: bool = False,
                spikes=None, say=print) -> int:
    """Load the hardware model ``model_path`` and the test set, run golden, cycles, energy and
    plots, print the summary with ``say`` and, with ``output``, write report.json and the plots
    there. ``images``: the first N test images (None: all). ``mode``/``lanes``/``word``/``conv_engine``
    default to the build report's in ``build_dir``, else to what ``bitsnn build --board board``
    generates: event mode, the lanes of :func:`bitsnn.boards.fit.board_lanes` (fewer than
    :func:`bitsnn.hwplan.default_lanes` for a model with convolutions that needs them to fit), 32-bit
    words, "auto" convolution stages.
    ``sweep``: more hardware-model files of the same network. ``neurobench``: add NeuroBench's
    metrics (the only part that needs torch). ``spikes``: a ``given``-coded model's inputs
    (:func:`bitsnn.data.load_spikes`) instead of the test set. Every path and option is checked
    before the work starts."""
    from ..hwmodel import HardwareModel

    model = HardwareModel.load(model_path)
    check_supported(model)  # before any work
    if neurobench and (not model.default_time or any(l.neuron_model.stateful for l in model.hidden_layers)):
        raise BitsnnError(f"--neurobench: the NeuroBench module bitsnn builds runs one step of step neurons; this "
                          f"model is {model.describe()}")
    if output is not None:  # before any work
        inputs = [model_path, vcd, spikes, *(sweep or ())]
        if build_dir:
            inputs += [build_dir, Path(build_dir) / "report.json"]
        check_report_dir(output, inputs=inputs)
    sweep_models = []
    for path in sweep or ():
        m = HardwareModel.load(path)
        if m.sizes != model.sizes or m.input_encoding != model.input_encoding:
            raise BitsnnError(f"--sweep {path}: {m.describe()} is not the same network as {model.describe()}")
        sweep_models.append((path, m))
    from ..boards import board_facts

    board = board_facts(board)
    build = load_build_report(build_dir) if build_dir else None
    accel = (build or {}).get("accelerator") or {}
    given = {"mode": mode, "lanes": lanes, "word": word, "conv_engine": conv_engine}

    def pick(name, default):
        v = given[name]
        return accel.get(name, default()) if v is None else v

    from ..boards.fit import board_lanes

    mode, word, conv_engine = pick("mode", lambda: "event"), pick("word", lambda: DEFAULT_WORD), pick("conv_engine", lambda: "auto")
    check_hw(mode, 1, word, conv_engine)  # before the lanes are fitted with them
    lanes = pick("lanes", lambda: board_lanes(board.name, model, conv_engine) if mode == "event" else default_lanes(model))
    mnpc = accel.get("max_neurons_per_core")
    check_hw(mode, lanes, word, conv_engine)

    from ..data import load_dataset, model_inputs
    from ..sim import cycles as cycles_mod
    from ..sim import golden as golden_mod

    data = None if model.input_coding == "given" or spikes is not None else load_dataset(data_dir)
    if data is not None and images is not None and not 1 <= images <= len(data.test_images):
        raise BitsnnError(f"--images {images}: must be in 1..{len(data.test_images)}, the test set's size")
    images, labels = model_inputs(images, model, spikes=spikes, data=data)
    golden = golden_mod.run(model, images)
    cycles = cycles_mod.predict_cycles(model, golden, mode=mode, lanes=lanes, word=word,
                                       max_neurons_per_core=mnpc, conv_engine=conv_engine)
    # The bitstream runs at the board's PLL clock; the achieved Fmax says how much faster it could.
    clock_hz = board.clk_freq
    if build is not None and build.get("constraint_mhz"):
        clock_hz = float(build["constraint_mhz"]) * 1e6  # the PLL the bitstream was built for (--clock-mhz)
    if build is not None:
        clock_source = (f"{board.name} PLL clock of the built bitstream (achieved Fmax {build['fmax_mhz']:.2f} MHz, "
                        f"timing {'met' if build['fmax_mhz'] * 1e6 >= clock_hz else 'NOT met'}; "
                        f"{Path(build_dir) / 'report.json'})")
    else:
        clock_source = f"{board.name} PLL clock (no build dir given: Fmax not measured)"
    tpc, tsrc = None, ""
    if vcd:
        tc = count_toggles(vcd)
        tpc = tc.per_cycle()
        tsrc = f"{vcd}: {tc.total} toggles over {tc.cycles} cycles of {tc.clock}"
    report = build_report(model, golden, cycles, board=board.name, clock_hz=clock_hz, clock_source=clock_source,
                          mode=mode, lanes=lanes, word=word, max_neurons_per_core=mnpc, conv_engine=conv_engine,
                          labels=labels, build=build,
                          toggles_per_cycle=tpc, toggles_source=tsrc,
                          cycles_source="bitsnn.sim.cycles.predict_cycles (exact model of the Accelerator)",
                          model_path=str(model_path))
    if build is not None:
        report["timing"]["at_fmax"] = timing(cycles, build["fmax_mhz"] * 1e6)
    report["timing"]["end_to_end"] = end_to_end(model, cycles, clock_hz, board, build,
                                                float(np.count_nonzero(P.infer_inputs(model, images), axis=1).mean()))
    if model.timesteps > 1:
        report["time"]["against_steps"] = steps_sweep(model, images, labels, golden, cycles, board=board.name,
                                                      clock_hz=clock_hz, mode=mode, lanes=lanes, word=word,
                                                      max_neurons_per_core=mnpc, conv_engine=conv_engine)
    sweep_plot = None
    if sweep_models:
        rows = [sweep_point(model, report, str(model_path))]
        for path, m in sweep_models:
            g = golden_mod.run(m, images)
            c = cycles_mod.predict_cycles(m, g, mode=mode, lanes=lanes, word=word, max_neurons_per_core=mnpc,
                                          conv_engine=conv_engine)
            r = build_report(m, g, c, board=board.name, clock_hz=clock_hz, clock_source=clock_source, mode=mode,
                             lanes=lanes, word=word, max_neurons_per_core=mnpc, conv_engine=conv_engine,
                             labels=labels, model_path=str(path))
            rows.append(sweep_point(m, r, str(path)))
        rows.sort(key=lambda row: row["asic_snn_j"])
        report["sweep"] = rows
        sweep_plot = [(row["label"], row["accuracy"], row["asic_snn_j"]) for row in rows]
    if neurobench:
        from .neurobench import neurobench_section

        report["neurobench"] = neurobench_section(model, golden, images, labels)
    if output:
        report = write_report(report, output, model=model, golden=golden, build=build, sweep=sweep_plot)
    for line in summary_lines(report):
        say(line)
    if output:
        say(f"wrote {Path(output) / 'report.json'} and {len(report['plots'])} plots")
    return 0
