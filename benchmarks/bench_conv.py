"""The convolutional targets of one model and one build, measured in one run.

    python benchmarks/bench_conv.py --model conv-tiny.bsnn --build-dir BUILD [--board icebreaker]
                                    [--images N] [--data-dir D]

Runs `bitsnn report` on the model (golden model and exact cycle model over the test images,
energy at the build's clock) and prints each target beside what was measured:

- test accuracy (the golden model = the hardware, bit for bit);
- latency, mean and worst, at the build's clock (its PLL clock when timing is met);
- FPGA energy per inference (the report's estimate);
- spikes per inference, every layer, input included (nonzero inputs + every hidden layer's spikes);
- cycles / the memory-bandwidth lower bound: per layer, the larger of the weight words its core
  reads (one per cycle) and the accumulator words a convolution reads (one per cycle);
- the resource estimate against the build (logic cells);
- per convolution, its two stages' exact cycles on these images: the event-driven stage's
  (:meth:`bitsnn.hwplan.ConvPlan.event_stage_cycles`) and the sliding-window stage's
  (:meth:`~bitsnn.hwplan.ConvPlan.window_stage_cycles`, the same for every image), and which one
  the build generates (``conv_engine="auto"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

#: the accuracy target per board: `conv-tiny` on the iCEBreaker, `conv` on the ULX3S
ACCURACY = {"icebreaker": 0.988, "ulx3s-85f": 0.993}
TARGETS = {  # issue targets of the UP5K `conv-tiny` (docs/hardware.md); accuracy: ACCURACY
    "accuracy": 0.988, "latency_mean_us": 250.0, "latency_max_us": 500.0, "energy_fpga_nj": 1000.0,
    "spikes": 1700.0, "bandwidth_ratio": 1.5, "estimate_error": 0.05,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--build-dir", default=None, help="a `bitsnn build` output (clock, Fmax, resources)")
    ap.add_argument("--board", default="icebreaker")
    ap.add_argument("--images", type=int, default=None, help="first N test images (default: all)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args(argv)
    TARGETS["accuracy"] = ACCURACY.get(args.board, TARGETS["accuracy"])

    from bitsnn import BitsnnError
    from bitsnn.report import make_report

    with tempfile.TemporaryDirectory() as tmp:
        try:
            make_report(args.model, board=args.board, build_dir=args.build_dir, output=tmp, images=args.images,
                        data_dir=args.data_dir, say=lambda *_: None)
        except BitsnnError as e:
            print(f"bench_conv: {e}", file=sys.stderr)
            return 1
        rep = json.loads((Path(tmp) / "report.json").read_text())

    t, layers = rep["timing"], rep["layers"]
    spikes = layers[0]["input_events"]["mean"] + sum(l["output_spikes"]["mean"] for l in layers if l["output_spikes"])
    bound = sum(max(l["weight_reads_words"]["mean"], l.get("accumulator_reads_words", {"mean": 0})["mean"])
                for l in layers)
    fpga = rep["energy"]["fpga"]
    got = {
        "accuracy": rep["accuracy"],
        "latency_mean_us": t["latency_s"]["mean"] * 1e6,
        "latency_max_us": t["latency_s"]["max"] * 1e6,
        "energy_fpga_nj": None if fpga.get("total_j") is None else fpga["total_j"] * 1e9,
        "spikes": spikes,
        "bandwidth_ratio": t["cycles"]["mean"] / bound,
    }
    build = rep.get("build") or {}
    est, used = (build.get("estimate") or {}).get("logic"), (build.get("utilisation") or {}).get("logic", {}).get("used")
    if est and used:
        got["estimate_error"] = abs(est - used) / used
    rows = [
        ("test accuracy", f"{got['accuracy'] * 100:.2f} %", f">= {TARGETS['accuracy'] * 100:.1f} %",
         got["accuracy"] >= TARGETS["accuracy"]),
        (f"latency mean at {t['clock_hz'] / 1e6:.2f} MHz", f"{got['latency_mean_us']:.1f} us",
         f"<= {TARGETS['latency_mean_us']:.0f} us", got["latency_mean_us"] <= TARGETS["latency_mean_us"]),
        ("latency worst", f"{got['latency_max_us']:.1f} us", f"<= {TARGETS['latency_max_us']:.0f} us",
         got["latency_max_us"] <= TARGETS["latency_max_us"]),
        ("FPGA energy per inference" + (" (lower bound)" if fpga.get("lower_bound") else ""),
         "unknown (no power model for this board)" if got["energy_fpga_nj"] is None else f"{got['energy_fpga_nj']:.0f} nJ",
         "<= 1 uJ", got["energy_fpga_nj"] is not None and got["energy_fpga_nj"] <= TARGETS["energy_fpga_nj"]),
        ("spikes per inference (input included)", f"{spikes:.0f}", "<= 1,700", spikes <= TARGETS["spikes"]),
        ("cycles / bandwidth bound", f"{got['bandwidth_ratio']:.2f}x", "<= 1.5x",
         got["bandwidth_ratio"] <= TARGETS["bandwidth_ratio"]),
    ]
    if "estimate_error" in got:
        rows.append(("resource estimate vs build (logic)", f"{est} vs {used} ({got['estimate_error'] * 100:.1f} %)",
                     "within 5 %", got["estimate_error"] <= TARGETS["estimate_error"]))
    print(f"{rep['model']['describe']}; {rep['images']} images; clock: {t['clock_source']}")
    w = max(len(r[0]) for r in rows)
    for name, value, target, ok in rows:
        print(f"  {name:<{w}}  {value:>28}  target {target:<12} {'met' if ok else 'NOT met'}")
    got["conv_layers"] = conv_cycle_table(args)
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=1))
    return 0


def conv_cycle_table(args) -> list[dict]:
    """Print and return, per convolution, the exact cycles of its event stage on the images and of
    its window stage (the same for every image), and the stage the build generates."""
    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.hwplan import HardwarePlan, default_lanes, window_fits
    from bitsnn.sim import cycles, golden

    model = HardwareModel.load(args.model)
    data = load_dataset(args.data_dir)
    n = args.images or len(data.test_images)
    g = golden.run(model, model.prepare_images(data.test_images[:n]))
    lanes, word = default_lanes(model), 32
    if args.build_dir:  # the build's own lanes (fewer where the default did not fit the board)
        built = json.loads((Path(args.build_dir) / "report.json").read_text()).get("accelerator") or {}
        lanes, word = int(built.get("lanes", lanes)), int(built.get("word", word))
    plan = HardwarePlan.of(model, lanes=lanes, word=word)
    ev_plan = HardwarePlan.of(model, lanes=lanes, word=word, conv_engine="event")
    t = cycles.layer_cycles(model, g, mode="event", lanes=lanes, word=word, conv_engine="event")
    rows = []
    print(f"  convolutions ({lanes} lanes), exact cycles on these images: event-driven stage vs sliding-window "
          "stage (window: spike maps of 2..W channels)")
    for l, (lp, ep) in enumerate(zip(plan.layers, ev_plan.layers)):
        if lp.conv is None:
            continue
        layer = model.layers[l]
        win = ep.conv.window_stage_cycles() if window_fits(layer, word) else None
        row = {"layer": layer.name, "built": lp.conv.engine, "event_mean": float(t[:, l].mean()),
               "event_max": int(t[:, l].max()), "window": win}
        row["event_over_window"] = None if win is None else row["event_mean"] / win
        rows.append(row)
        w_txt = "window: not for pixel input" if win is None else (
            f"window {win}; event / window {row['event_over_window']:.2f}")
        print(f"    {row['layer']} ({row['built']} built): event {row['event_mean']:.0f} mean, "
              f"{row['event_max']} worst; {w_txt}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
