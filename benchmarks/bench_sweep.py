"""A sweep, measured in one run against #34's target: ``bitsnn sweep CONFIG`` runs unattended, is
killed with SIGKILL once ``--kill-after`` trials have finished, is started again, and must end
with its budget of trials, the killed ones run again, the Pareto front plotted and the best
configuration written.

    python benchmarks/bench_sweep.py CONFIG [--workers 2] [--kill-after 5]

CONFIG is a sweep configuration (docs/flow.md); the 20-trial UP5K sweep of docs/measurements.md
is written out by ``--write-up5k FILE``. The sweep's run directory must be new.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402

UP5K = """# conv-tiny on the iCEBreaker: 20 trials of 3 epochs, each built with Yosys and nextpnr
run_dir = "runs/sweep-up5k"
data_dir = "{data}"
skip = ["cosim"]

[train]
preset = "conv-tiny"
epochs = 3

[build]
board = "icebreaker"

[sweep]
trials = 20
seed = 0

[sweep.space]
"train.weight_bits" = [1, 2, 4]
"train.sparsity" = {{low = 0.0, high = 0.02}}
"build.lanes" = [8, 16]
"build.seed" = {{low = 1, high = 50}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", help="a sweep configuration")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-after", type=int, default=5, help="SIGKILL the sweep once N trials have finished")
    ap.add_argument("--write-up5k", metavar="FILE", help="write the UP5K sweep's configuration and stop")
    args = ap.parse_args()
    if args.write_up5k:
        Path(args.write_up5k).write_text(UP5K.format(data=MNIST))
        print(f"wrote {args.write_up5k}")
        return 0
    if not args.config:
        ap.error("give a sweep configuration (or --write-up5k FILE)")
    from bitsnn.sweep import load_sweep

    base, settings, _ = load_sweep(args.config)
    run = Path(base.run_dir)
    cmd = [sys.executable, "-m", "bitsnn", "sweep", args.config, "--workers", str(args.workers)]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finished = 0
    for line in p.stdout:
        print(line, end="", flush=True)
        if " done in " in line or " failed after " in line:
            finished += 1
            if finished >= args.kill_after:
                break
    killed_at = time.time() - t0
    p.send_signal(signal.SIGKILL)
    p.wait()
    print(f"--- SIGKILL after {finished} finished trials ({killed_at:.0f} s); starting the sweep again", flush=True)
    again = subprocess.run(cmd, text=True)
    total = time.time() - t0
    summary = json.loads((run / "sweep.json").read_text()) if (run / "sweep.json").is_file() else {}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=settings.study, storage=settings.storage or f"sqlite:///{run / 'study.db'}")
    trials = study.get_trials()
    flow_failed = [t for t in trials if t.state.name == "FAIL" and "error" in t.user_attrs]
    killed = [t for t in trials if t.state.name == "FAIL" and "error" not in t.user_attrs]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    ok = again.returncode == 0 and len(complete) + len(flow_failed) == settings.trials
    print(f"| what | measured | target |")
    print("|---|---|---|")
    print(f"| trials finished (complete + failed by the flow) | {len(complete)} + {len(flow_failed)} of "
          f"{settings.trials} | all, unattended ({'met' if ok else 'MISSED'}) |")
    print(f"| trials killed by the SIGKILL, run again | {len(killed)} | resumed "
          f"({'met' if ok and killed else 'MISSED'}) |")
    print(f"| Pareto front | trials {summary.get('pareto')} in {run / 'pareto.png'} | plotted "
          f"({'met' if (run / 'pareto.png').is_file() else 'MISSED'}) |")
    print(f"| best configuration | trial {summary.get('best')}: {run / 'best.toml'} | written |")
    print(f"| wall time | {total / 60:.1f} min with {args.workers} workers | |")
    for t in flow_failed:
        print(f"  failed by the flow: trial {t.number}: {t.user_attrs['error']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
