"""Co-simulation speed, measured in one run, against the targets of the cosim issue:

- Verilator, the harness under its C++ driver (what ``bitsnn sim`` runs) on the tiny model
  (576-160-10), all 10,000 MNIST test images: simulated clock cycles per second (target >=
  1,000,000);
- the same harness under cocotb, on Verilator and on Icarus (fewer images: it is slow): the
  Verilator/Icarus ratio (target >= 20x);
- ``bitsnn sim --simulator verilator --images 10000`` with the build cached: wall time (target
  <= 60 s);
- the old cycle-by-cycle bench (Python on every clock edge) on Verilator, for the speed-up;
- build times, fresh and cached, apart from simulation time;
- with ``--options``: each Verilator option's effect (one fresh build each).

Every image is checked against the golden model and the cycle model; a mismatch fails the
benchmark. Without a trained model it exits 1.

    python benchmarks/bench_cosim.py [--model tiny.bsnn] [--images 10000] [--icarus-images 200] [--options]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST, find_model  # noqa: E402

TARGETS = {"verilator_cycles_per_s": 1_000_000, "verilator_over_icarus": 20, "sim_10000_s": 60}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="hardware model (.bsnn); default: the cached tiny model")
    ap.add_argument("--images", type=int, default=10000, help="Verilator images (harness bench)")
    ap.add_argument("--icarus-images", type=int, default=200)
    ap.add_argument("--cycle-images", type=int, default=200, help="images for the old cycle-by-cycle bench")
    ap.add_argument("--options", action="store_true", help="also measure each Verilator option")
    ap.add_argument("--data-dir", default=str(MNIST) if MNIST.is_dir() else None)
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    from bitsnn.data import load_dataset
    from bitsnn.hwplan import default_lanes
    from bitsnn.sim import golden
    from bitsnn.sim.cosim.cli import WORD, compare, sim_check
    from bitsnn.sim.cosim.runner import VERILATOR_OPTS, run_accelerator_cosim, simulator_missing
    from bitsnn.sim.cycles import predict_cycles

    hm, mpath = find_model(args.model)
    if hm is None:
        print("no trained model: pass --model or run the test suite once (it caches the tiny model)")
        return 1
    for sim in ("verilator", "icarus"):
        if why := simulator_missing(sim):
            print(f"{sim}: {why}")
            return 1
    data = load_dataset(args.data_dir)
    lanes = default_lanes(hm)
    n_max = max(args.images, args.icarus_images, args.cycle_images)
    imgs = data.test_images[:n_max]
    g = golden.run(hm, imgs)
    want = predict_cycles(hm, g, mode="event", lanes=lanes, word=WORD)
    print(f"model {mpath}: {hm.describe()}; lanes {lanes}")
    out = {"model": str(mpath), "lanes": lanes, "targets": TARGETS}
    failed = False

    def run(sim, n, root, **kw):
        nonlocal failed
        sub = imgs[:n]
        exp = dict(classes=g.classes[:n], scores=g.scores[:n], spike_counts=g.spike_counts[:n], cycles=want[:n],
                   **{f"spikes{i}": s[:n] for i, s in enumerate(g.tap_spikes)})
        t0 = time.perf_counter()
        r = run_accelerator_cosim(hm, sub, simulator=sim, expected=exp, build_root=root,
                                  accel_params={"lanes": lanes, "word": WORD}, **kw)
        wall = time.perf_counter() - t0

        class G:  # the golden result, cut to n images
            classes, scores, spike_counts = g.classes[:n], g.scores[:n], g.spike_counts[:n]
            spikes = [s[:n] for s in g.tap_spikes]

        bad = compare(G, want[:n], r)
        failed |= bool(bad)
        rec = {"images": n, "cycles_per_s": round(r.cycles_per_s), "sim_cycles": int(r.sim_cycles.sum()),
               "run_s": round(r.run_s, 2), "build_s": round(r.build_s, 1), "verilog_s": round(r.convert_s, 1),
               "wall_s": round(wall, 1), "mismatches": len(bad)}
        if "free_s" in r.extra:
            rec["free_running_s"] = round(r.extra["free_s"], 2)
        return rec

    def show(label, rec):
        print(f"{label:34s} {rec['cycles_per_s']:>11,} cycles/s  ({rec['sim_cycles']:,} cycles, {rec['images']} "
              f"images in {rec['run_s']:.1f} s; Verilog {rec['verilog_s']:.1f} s, build {rec['build_s']:.1f} s); "
              f"mismatches {rec['mismatches']}")

    with tempfile.TemporaryDirectory(prefix="bench_cosim_") as tmp:
        root = Path(tmp) / "build" / "cosim"  # where bitsnn sim builds with BITSNN_BUILD=<tmp>/build
        out["verilator"] = v = run("verilator", args.images, root)
        show("verilator, harness, C++ driver", v)
        out["verilator_cocotb"] = vc = run("verilator", args.images, root, bench="harness")
        show("verilator, harness under cocotb", vc)
        out["icarus"] = i = run("icarus", args.icarus_images, root)
        show("icarus, harness under cocotb", i)
        out["verilator_cycle_bench"] = c = run("verilator", args.cycle_images, root, bench="cycle")
        show("verilator, cycle-by-cycle bench", c)
        # bitsnn sim on the whole test set with the build cached (its build root is BITSNN_BUILD)
        old = os.environ.get("BITSNN_BUILD")
        os.environ["BITSNN_BUILD"] = str(root.parent)
        try:
            t0 = time.perf_counter()
            rc = sim_check(mpath, images=10000, simulator="verilator", data_dir=args.data_dir, out=io.StringIO())
            sim_s = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("BITSNN_BUILD", None)
            else:
                os.environ["BITSNN_BUILD"] = old
        failed |= rc != 0
        out["sim_10000_s"] = round(sim_s, 1)
        print(f"bitsnn sim --simulator verilator --images 10000 (build cached): {sim_s:.1f} s, "
              f"{'0 mismatches' if rc == 0 else 'MISMATCH'}")
        if args.options:
            n = min(args.images, 5000)
            variants = {
                "all (default)": {},
                "without -march=native": {"verilator_opts": VERILATOR_OPTS[:-2]},
                "without --x-assign/--x-initial fast": {"verilator_opts": ("-O3", "-CFLAGS", "-march=native")},
                "OPT_FAST -Os (Verilator's default)": {"opt_fast": "-Os"},
                "with --threads 2": {"verilator_opts": VERILATOR_OPTS + ("--threads", "2")},
                "under cocotb": {"bench": "harness"},
                "under cocotb, with its --public-flat-rw": {"bench": "harness", "public_all": True},
            }
            out["options"] = {}
            for k, (label, kw) in enumerate(variants.items()):
                rec = run("verilator", n, Path(tmp) / f"opt{k}", **kw)
                out["options"][label] = rec
                show(f"  {label}", rec)
    ratio = vc["cycles_per_s"] / max(1, i["cycles_per_s"])
    out["verilator_over_icarus"] = round(ratio, 1)
    out["harness_over_cycle_bench"] = round(v["cycles_per_s"] / max(1, c["cycles_per_s"]), 1)
    print()
    print(f"{'what':44s} {'measured':>12s} {'target':>12s}")
    rows = [("Verilator simulated cycles/s (tiny)", f"{v['cycles_per_s']:,}", f">= {TARGETS['verilator_cycles_per_s']:,}",
             v["cycles_per_s"] >= TARGETS["verilator_cycles_per_s"]),
            ("Verilator / Icarus (the cocotb harness bench)", f"{ratio:.1f}x", f">= {TARGETS['verilator_over_icarus']}x",
             ratio >= TARGETS["verilator_over_icarus"]),
            ("bitsnn sim, 10000 images, build cached", f"{sim_s:.1f} s", f"<= {TARGETS['sim_10000_s']} s",
             sim_s <= TARGETS["sim_10000_s"]),
            ("C++-driven harness / cycle-by-cycle bench", f"{out['harness_over_cycle_bench']:.1f}x", "", None)]
    for what, got, target, ok in rows:
        print(f"{what:44s} {got:>12s} {target:>12s}  {'' if ok is None else ('met' if ok else 'NOT MET')}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
