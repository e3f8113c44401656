"""The sparsity knob: train the same network at several spike-rate regulariser weights (lambda),
export each (golden check included), and report accuracy, spikes, cycles and energy per inference
for all of them in one `bitsnn report --sweep`, which also draws the accuracy-vs-energy plot.

    python benchmarks/bench_sparsity.py [--preset tiny] [--lambdas 0,0.1,0.3,1,3] [--epochs N]
                                        [--jobs 2] [--out runs/sparsity]

Training runs ``--jobs`` at a time, one torch thread each (the 2-core machine). Checkpoints and
exports already present in ``--out`` are reused, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BITSNN = [sys.executable, "-m", "bitsnn.cli"]


def run(cmd, log_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if r.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"{' '.join(map(str, cmd[2:]))} failed: {tail[0]} (log {log_path})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lambdas", default="0,0.1,0.3,1,3", help="comma-separated sparsity weights")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--board", default="icebreaker")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(REPO / "runs" / "sparsity"))
    args = ap.parse_args(argv)
    lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    if not lambdas:
        raise SystemExit("--lambdas: give at least one value")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    t0 = time.perf_counter()

    def one(lam: float) -> Path:
        tag = f"lambda{lam:g}"
        ckpt, bsnn = out / f"{tag}.ckpt", out / f"{tag}.bsnn"
        if not ckpt.exists():
            cmd = [*BITSNN, "train", "--preset", args.preset, "--sparsity", str(lam), "--seed", str(args.seed),
                   *data, "-o", str(ckpt)]
            if args.epochs is not None:
                cmd[4:4] = ["--epochs", str(args.epochs)]
            run(cmd, out / f"{tag}.train.log")
            print(f"[sweep] trained lambda={lam:g} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if not bsnn.exists():
            run([*BITSNN, "export", str(ckpt), *data, "-o", str(bsnn)], out / f"{tag}.export.log")
            check = [l for l in (out / f"{tag}.export.log").read_text().splitlines() if "golden vs torch" in l]
            print(f"[sweep] exported lambda={lam:g}: {check[-1].strip() if check else ''}", flush=True)
        return bsnn

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        models = list(pool.map(one, lambdas))
    report_dir = out / "report"
    r = subprocess.run([*BITSNN, "report", "--model", str(models[0]), "--sweep", *map(str, models[1:]),
                        "--board", args.board, *data, "-o", str(report_dir)], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bitsnn report failed: {r.stderr.strip()}")
    lines = r.stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("sweep"))
    print("\n".join(lines[start:]))
    print(f"[sweep] {len(models)} models in {time.perf_counter() - t0:.0f} s; plot {report_dir / 'accuracy_energy.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
