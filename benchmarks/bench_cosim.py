"""Co-simulation speed: Verilator vs Icarus on the same generated Accelerator (tiny model, same
MNIST test images), simulated clock cycles per second and the ratio, plus each simulator's build
time (a fresh build directory, so nothing is cached). Every image is checked against the golden
model and the cycle model; any mismatch fails the benchmark.

    python benchmarks/bench_cosim.py [--model tiny.bsnn] [--images 200]
    python benchmarks/bench_cosim.py --images 10000 --simulators verilator   # the whole test set

Without a trained model it exits 1 (a random model's spike rates, hence cycles, are not a
trained model's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST, find_model  # noqa: E402

from bitsnn.hwplan import MODES  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="hardware model (.bsnn); default: the cached tiny model")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--simulators", default="icarus,verilator", help="comma-separated")
    ap.add_argument("--mode", default="event", choices=MODES)
    ap.add_argument("--data-dir", default=str(MNIST) if MNIST.is_dir() else None)
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    from bitsnn.data import load_dataset
    from bitsnn.sim import golden
    from bitsnn.sim.cosim.cli import WORD, compare
    from bitsnn.hwplan import default_lanes
    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing
    from bitsnn.sim.cycles import predict_cycles

    hm, mpath = find_model(args.model)
    if hm is None:
        print("no trained model: pass --model or run the test suite once (it caches the tiny model)")
        return 1
    data = load_dataset(args.data_dir)
    imgs = data.test_images[: args.images]
    g = golden.run(hm, imgs)
    want = predict_cycles(hm, g, mode=args.mode, lanes=default_lanes(hm), word=WORD)
    exp = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts, cycles=want,
               **{f"spikes{i}": s for i, s in enumerate(g.spikes)})
    print(f"model {mpath}: {hm.describe()}; {len(imgs)} MNIST test images; mode {args.mode}")
    out = {"model": mpath, "images": len(imgs), "mode": args.mode}
    failed = False
    for sim in args.simulators.split(","):
        if why := simulator_missing(sim):
            print(f"{sim}: skipped ({why})")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench_{sim}_") as tmp:
            t0 = time.perf_counter()
            r = run_accelerator_cosim(hm, imgs, simulator=sim, mode=args.mode, expected=exp, build_root=tmp,
                                      progress=max(1, len(imgs) // 10) if len(imgs) >= 1000 else 0)
            wall = time.perf_counter() - t0
        bad = compare(g, want, r)
        acc = float(np.mean(r.classes == data.test_labels[: len(imgs)]))
        cps = r.cycles_per_s
        out[sim] = {"cycles_per_s": round(cps), "sim_cycles": int(r.sim_cycles.sum()), "run_s": round(r.run_s, 2),
                    "build_s": round(r.build_s, 2), "convert_s": round(r.convert_s, 2), "wall_s": round(wall, 1),
                    "mismatches": len(bad), "accuracy": acc}
        print(f"{sim:9s}: {cps:12,.0f} cycles/s  ({int(r.sim_cycles.sum()):,} cycles in {r.run_s:.1f} s; "
              f"Verilog {r.convert_s:.1f} s, build {r.build_s:.1f} s, wall {wall:.1f} s); "
              f"accuracy {acc:.2%}, mismatches {len(bad)}")
        if bad:
            failed = True
            print(f"  first mismatch: {bad[0]}")
    if "icarus" in out and "verilator" in out:
        ratio = out["verilator"]["cycles_per_s"] / max(1, out["icarus"]["cycles_per_s"])
        out["verilator_over_icarus"] = round(ratio, 2)
        print(f"Verilator / Icarus: {ratio:.1f}x simulated cycles per second")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
