"""The end-to-end flow behind ``bitsnn demo``: named steps, each writing into its own folder of
the run directory, in one direction through the hardware-model file.

    train -> export -> cosim -> build -> report

Each step calls the same function as its CLI subcommand. A step whose artifact already exists is
skipped (resume by re-running), so delete a step's folder to redo it; ``time_per_step.json`` records
how long each step took. A failed step (a golden mismatch, a design too large) stops the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from . import BitsnnError
from .fileio import atomic_write_text

__all__ = ["STEPS", "run_flow", "demo_main"]

#: Training settings of the demo's model: the ``tiny`` preset (576-160-10 on the central 24x24
#: window, fits iCE40UP5K EBR).
DEMO_PRESET = "tiny"
DEMO_COSIM_IMAGES = 100
DEMO_BOARD = "icebreaker"


def _step_train(run: Path, data_dir) -> Path:
    from bitsnn.model.train import train_main

    ckpt = run / "train" / "model.ckpt"
    train_main(SimpleNamespace(preset=DEMO_PRESET, epochs=None, seed=0, batch_size=None, lr=None, sparsity=None,
                               surrogate=None, input_encoding=None, device="cpu", limit_train=None,
                               data_dir=data_dir, output=str(ckpt)))
    return ckpt


def _step_export(run: Path, data_dir) -> Path:
    from bitsnn.model.export import export_main

    out = run / "export" / "model.bsnn"
    export_main(SimpleNamespace(checkpoint=str(run / "train" / "model.ckpt"), data_dir=data_dir, output=str(out)))
    return out


def _step_cosim(run: Path, data_dir) -> Path:
    from bitsnn.sim.cosim.cli import sim_main

    wave = run / "cosim" / "image0.vcd"
    wave.parent.mkdir(parents=True, exist_ok=True)
    rc = sim_main(SimpleNamespace(model=str(run / "export" / "model.bsnn"), images=DEMO_COSIM_IMAGES,
                                  simulator="icarus", mode="event", wave=str(wave), image=0, data_dir=data_dir))
    if rc:
        raise BitsnnError("co-simulation does not match the golden model")
    return wave


def _step_build(run: Path, data_dir) -> Path:
    from bitsnn.boards.build import build_main

    out = run / f"build-{DEMO_BOARD}"
    rc = build_main(SimpleNamespace(board=DEMO_BOARD, model=str(run / "export" / "model.bsnn"), output=str(out)))
    if rc:
        raise BitsnnError(f"the {DEMO_BOARD} build did not meet timing (see {out / 'report.json'})")
    return out / "report.json"


def _step_report(run: Path, data_dir) -> Path:
    from bitsnn.report import report_main

    out = run / "report"
    report_main(SimpleNamespace(model=str(run / "export" / "model.bsnn"), board=DEMO_BOARD,
                                build_dir=str(run / f"build-{DEMO_BOARD}"), output=str(out), data_dir=data_dir,
                                images=None, mode=None, lanes=None, word=None,
                                vcd=str(run / "cosim" / "image0.vcd")))
    return out / "report.json"


#: step name -> (function, the artifact whose presence means the step is done)
STEPS = {
    "train": (_step_train, "train/model.ckpt"),
    "export": (_step_export, "export/model.bsnn"),
    "cosim": (_step_cosim, "cosim/image0.vcd"),
    "build": (_step_build, f"build-{DEMO_BOARD}/report.json"),
    "report": (_step_report, "report/report.json"),
}


def run_flow(run_dir, data_dir=None, *, steps=tuple(STEPS), log=print) -> dict:
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    times_path = run / "time_per_step.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    t_all = time.perf_counter()
    for name in steps:
        func, artifact = STEPS[name]
        if (run / artifact).exists():
            log(f"==> {name}: done already ({run / artifact}); delete it to redo")
            continue
        log(f"==> {name}")
        t0 = time.perf_counter()
        func(run, data_dir)
        times[name] = round(time.perf_counter() - t0, 1)
        atomic_write_text(times_path, json.dumps(times, indent=2) + "\n")
        log(f"==> {name}: {times[name]} s")
    log(f"==> flow finished in {time.perf_counter() - t_all:.1f} s; artifacts in {run}")
    return times


def demo_main(args) -> int:
    run_flow(args.run_dir, args.data_dir)
    return 0
