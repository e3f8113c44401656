"""Cycles per inference, dense vs event-driven, on real MNIST test images (sim/cycles.py).

    python benchmarks/bench_cycles.py [--model tiny.bsnn] [--images 1000] [--validate 20]

Both modes are compared at equal weight-memory bits per cycle (event: P bits; dense: P*W bits).
The cycle model is validated against the Amaranth simulator on ``--validate`` images in the same
run (exact equality, or the benchmark fails). Without a trained model it exits 1: a random model's
spike rates would not be the model's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST, find_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="hardware model (.bsnn); default: the cached tiny model")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--validate", type=int, default=20, help="images checked in the Amaranth simulator")
    ap.add_argument("--lanes", type=int, default=32, help="event-mode P (= weight bits per cycle)")
    ap.add_argument("--word", type=int, default=32, help="event-mode chunk width W")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)

    from bitsnn.data import load_dataset
    from bitsnn.sim import golden
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cycles import bandwidth_bound, predict_cycles

    model, where = find_model(args.model)
    if model is None:
        print("no trained hardware model found (pass --model path.bsnn, or train the tiny model first); "
              "refusing to benchmark a random stand-in", file=sys.stderr)
        return 1
    images = load_dataset(MNIST, download=False).test_images[: args.images]
    g = golden.run(model, images)
    bpc = args.lanes
    configs = [("event", args.lanes, args.word)] + [("dense", bpc // w, w) for w in (32, 16, 8) if bpc % w == 0 and bpc // w >= 1]
    rows = []
    for mode, P, W in configs:
        c = predict_cycles(model, g, mode=mode, lanes=P, word=W)
        b = bandwidth_bound(model, g, mode=mode, lanes=P, word=W)
        rows.append(dict(mode=mode, lanes=P, word=W, bits_per_cycle=P * (W if mode == "dense" else 1),
                         cycles_mean=float(c.mean()), cycles_min=int(c.min()), cycles_max=int(c.max()),
                         bound_mean=float(b.mean()), ratio_to_bound=float((c / b).mean())))
    event = rows[0]
    dense = min(rows[1:], key=lambda r: r["cycles_mean"])
    # Validate the cycle model (and the results) against the Amaranth simulator.
    n = min(args.validate, len(images))
    for r in (event, dense):
        sim = run_accelerator(model, images[:n], mode=r["mode"], lanes=r["lanes"], word=r["word"])
        pred = predict_cycles(model, golden.run(model, images[:n]), mode=r["mode"], lanes=r["lanes"], word=r["word"])
        if not (np.array_equal(sim.cycles, pred) and np.array_equal(sim.classes, g.classes[:n])):
            print(f"cycle model or results disagree with the simulator in {r['mode']} mode", file=sys.stderr)
            return 2
        r["validated_images"] = n
    rates = (g.input_events / np.array([l.n_in for l in model.layers])).mean(axis=0)
    print(f"model {where}: {model.describe()}")
    print(f"{len(images)} MNIST test images; mean input spike rate per layer: "
          + ", ".join(f"{x:.3f}" for x in rates))
    print(f"{'mode':6} {'P':>3} {'W':>3} {'bits/cyc':>8} {'cycles mean':>11} {'min':>5} {'max':>5} "
          f"{'bound':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['mode']:6} {r['lanes']:3} {r['word']:3} {r['bits_per_cycle']:8} {r['cycles_mean']:11.1f} "
              f"{r['cycles_min']:5} {r['cycles_max']:5} {r['bound_mean']:8.1f} {r['ratio_to_bound']:6.3f}")
    speedup = dense["cycles_mean"] / event["cycles_mean"]
    print(f"event-driven vs best dense at {bpc} weight bits/cycle: {speedup:.2f}x fewer cycles "
          f"(target >= 3x); event/bound {event['ratio_to_bound']:.3f} (target <= 1.25); "
          f"validated on {n} images in the Amaranth simulator")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(model=where, rows=rows, speedup=speedup,
                                                   spike_rates=rates.tolist()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
