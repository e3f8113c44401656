"""``bitsnn sim``: run the generated design on test images in a simulator and compare it with the
golden model (:mod:`bitsnn.sim.golden`) and the exact cycle model (:mod:`bitsnn.sim.cycles`).

Simulators: ``icarus`` and ``verilator`` (the generated Verilog inside the co-simulation
harness, :mod:`bitsnn.sim.cosim.runner`: under cocotb on Icarus, under its C++ driver on Verilator), ``amaranth`` (Amaranth's Python simulator,
:mod:`bitsnn.sim.amaranth_run`), ``golden`` (the golden model and cycle model alone, no hardware:
a quick accuracy/spikes/cycles summary). Every image's hidden-layer spikes, scores, class, spike
counts and cycle count are compared; the first difference is printed as image, layer and neuron and
the command exits 1. docs/cosim.md has the measured speeds.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitsnn import BitsnnError
from bitsnn.fileio import VCD, check_output_file
from bitsnn.hwplan import DEFAULT_WORD, input_values, stream_inputs
from bitsnn.options import HDL_SIMULATORS
from bitsnn.protocol import MAX_LANES

__all__ = ["sim_main", "sim_check", "Mismatch", "compare", "simulate"]

#: word width of the Accelerator the CLI builds (bitsnn.hwplan.DEFAULT_WORD); its lanes: --lanes, else
#: bitsnn.hwplan.default_lanes(model) (what ``bitsnn build`` generates, unless it had to take fewer
#: to fit a model with convolutions on its board; ``bitsnn flow`` passes the build's)
WORD = DEFAULT_WORD


@dataclass(frozen=True)
class Mismatch:
    image: int  #: index into the test set
    what: str  #: "spikes", "scores", "class", "spike count", "cycles", "measured cycles"
    layer: int | None  #: layer index (0 = first hidden layer; scores: the output layer)
    neuron: int | None
    got: int
    want: int

    def __str__(self) -> str:
        where = f"image {self.image}"
        if self.layer is not None:
            where += f", layer {self.layer}"
        if self.neuron is not None:
            where += f", neuron {self.neuron}"
        return f"{where}: {self.what} {self.got} != golden {self.want}"


def compare(g, want_cycles: np.ndarray, r, *, first_index: int = 0) -> list[Mismatch]:
    """Every image's first difference between simulation result ``r`` (CosimResult or
    AmaranthResult) and golden result ``g`` / predicted cycles; in image order, at most one per
    image (hidden layers in order, then scores, class, spike counts, cycles)."""
    out = []
    n_layers = len(g.spikes) + 1
    for b in range(len(g.classes)):
        img = first_index + b
        found = None
        for l, (s, gs) in enumerate(zip(r.spikes, getattr(g, "tap_spikes", g.spikes))):  # every step's
            d = np.flatnonzero(np.asarray(s[b]) != gs[b])
            if d.size:
                j = int(d[0])
                found = Mismatch(img, "spikes", l, j, int(s[b][j]), int(gs[b][j]))
                break
        if found is None:
            d = np.flatnonzero(np.asarray(r.scores[b]) != g.scores[b])
            if d.size:
                j = int(d[0])
                found = Mismatch(img, "scores", n_layers - 1, j, int(r.scores[b][j]), int(g.scores[b][j]))
        if found is None and int(r.classes[b]) != int(g.classes[b]):
            found = Mismatch(img, "class", None, None, int(r.classes[b]), int(g.classes[b]))
        if found is None:
            d = np.flatnonzero(np.asarray(r.spike_counts[b]) != g.spike_counts[b])
            if d.size:
                l = int(d[0])
                found = Mismatch(img, "spike count", l, None, int(r.spike_counts[b][l]), int(g.spike_counts[b][l]))
        if found is None and int(r.cycles[b]) != int(want_cycles[b]):
            found = Mismatch(img, "cycles", None, None, int(r.cycles[b]), int(want_cycles[b]))
        if found is None and int(r.measured_cycles[b]) != int(want_cycles[b]):
            found = Mismatch(img, "measured cycles", None, None, int(r.measured_cycles[b]), int(want_cycles[b]))
        if found is not None:
            out.append(found)
    return out


@dataclass
class SimRun:
    result: object  #: CosimResult / AmaranthResult / a golden stand-in with the same fields
    run_s: float  #: wall time of the simulation proper
    sim_cycles: int  #: clock cycles simulated (approximate for amaranth and golden)
    build_s: float = 0.0


class _GoldenAsResult:
    """The golden model dressed as a simulation result (cycles from the cycle model)."""

    def __init__(self, g, cycles):
        self.classes, self.scores, self.spikes = g.classes, g.scores, g.tap_spikes
        self.spike_counts, self.cycles, self.measured_cycles = g.spike_counts, cycles, cycles


def _feed_cycles(hm, cycles) -> int:
    """Clock cycles of a batch when each image streams one pixel per cycle: pixels + compute +
    result words (what the Amaranth runner simulates, give or take a few cycles per image)."""
    from bitsnn.hwplan import result_words

    n_words = result_words(len(hm.hidden_layers), hm.num_classes)
    return int(np.sum(cycles) + len(cycles) * (input_values(hm) + n_words))


def simulate(hm, images, *, simulator: str, mode: str = "event", g=None, want_cycles=None, progress: int = 0,
             build_root=None, lanes: int | None = None, conv_engine: str = "auto", verbose: bool = False,
             out=None) -> SimRun:
    """Run ``images`` on ``simulator``; ``g``/``want_cycles`` (golden) feed the bench's own checker.
    ``lanes``: the event cores' (default: bitsnn.hwplan.default_lanes); ``conv_engine``: the
    convolutions' stages (:data:`bitsnn.hwplan.CONV_ENGINES`)."""
    from bitsnn.hwplan import default_lanes

    lanes = lanes or default_lanes(hm)
    if simulator == "golden":
        t0 = time.perf_counter()
        from bitsnn.sim import golden

        g2 = golden.run(hm, images)
        return SimRun(_GoldenAsResult(g2, want_cycles), time.perf_counter() - t0, _feed_cycles(hm, want_cycles))
    if simulator == "amaranth":
        from bitsnn.sim.amaranth_run import run_accelerator

        t0 = time.perf_counter()
        r = run_accelerator(hm, images, mode=mode, lanes=lanes, word=WORD, conv_engine=conv_engine)
        return SimRun(r, time.perf_counter() - t0, _feed_cycles(hm, r.cycles))
    from .runner import run_accelerator_cosim

    expected = None
    if g is not None:
        expected = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                        **{f"spikes{i}": s for i, s in enumerate(g.tap_spikes)})
        if want_cycles is not None:
            expected["cycles"] = want_cycles
    r = run_accelerator_cosim(hm, images, simulator=simulator, mode=mode, expected=expected, progress=progress,
                              build_root=build_root, verbose=verbose, out=out,
                              accel_params={"lanes": lanes, "word": WORD, "conv_engine": conv_engine})
    return SimRun(r, r.run_s, int(r.sim_cycles.sum()), r.build_s)


def write_wave(hm, image, path, *, simulator: str, mode: str, build_root=None, lanes: int | None = None,
               conv_engine: str = "auto") -> None:
    """A waveform of one image (a separate one-image run)."""
    from bitsnn.hwplan import default_lanes

    lanes = lanes or default_lanes(hm)
    image = stream_inputs(hm, np.asarray(image, np.uint8)[None])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if simulator == "amaranth":
        from bitsnn.sim.amaranth_run import run_accelerator

        run_accelerator(hm, image, mode=mode, lanes=lanes, word=WORD, vcd_path=path, conv_engine=conv_engine)
    else:
        from .runner import run_accelerator_cosim

        run_accelerator_cosim(hm, image, simulator=simulator, mode=mode, wave=path, build_root=build_root,
                              accel_params={"lanes": lanes, "word": WORD, "conv_engine": conv_engine})


def _check_simulator(simulator: str) -> None:
    if simulator == "golden":
        return
    if importlib.util.find_spec("amaranth") is None:
        raise BitsnnError("amaranth is not installed (pip install bitsnn[hw])")
    if simulator in HDL_SIMULATORS:
        from .runner import simulator_missing

        why = simulator_missing(simulator)
        if why:
            raise BitsnnError(f"simulator {simulator}: {why}")
    elif simulator != "amaranth":
        raise BitsnnError(f"unknown simulator {simulator!r}")


def sim_main(args, out=None) -> int:
    """The ``bitsnn sim`` subcommand: 0 when everything matches, 1 on a mismatch."""
    return sim_check(args.model, images=args.images, simulator=args.simulator, mode=args.mode, lanes=args.lanes,
                     conv_engine=getattr(args, "conv_engine", "auto"), wave=args.wave, image=args.image, data_dir=args.data_dir,
                     force=getattr(args, "force", False), verbose=getattr(args, "verbose", False),
                     spikes=getattr(args, "spikes", None), out=out)


def sim_check(model, *, images: int = 100, simulator: str = "icarus", mode: str = "event", lanes: int | None = None,
              conv_engine: str = "auto", wave=None, image: int = 0, data_dir=None, force: bool = False,
              verbose: bool = False, spikes=None, out=None) -> int:
    """Simulate the first ``images`` test images of the hardware model file ``model`` on
    ``simulator`` and compare every spike, score, class, spike count and cycle count with the
    golden and cycle models; print a summary to ``out`` (default stdout). ``wave``: also write a
    waveform of test image ``image`` there (an existing file that is not a VCD only with ``force``). ``lanes``/``conv_engine``: as the Accelerator's. Every option is checked before the simulation
    starts. A model with ``given`` input coding takes its inputs from ``spikes`` (a file:
    :func:`bitsnn.data.load_spikes`) instead of the test set. Returns 0 when everything matches,
    1 on a mismatch (the first ones are printed)."""
    out = out or sys.stdout

    def say(msg=""):
        print(msg, file=out, flush=True)

    from bitsnn.data import load_dataset, model_inputs
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.hwplan import CONV_ENGINES, MODES, HardwarePlan, check_supported, default_lanes
    from bitsnn.sim import cycles as cycles_mod
    from bitsnn.sim import golden

    if mode not in MODES:
        raise BitsnnError(f"mode must be event or dense, not {mode!r}")
    if conv_engine not in CONV_ENGINES:
        raise BitsnnError(f"--conv-engine must be one of {', '.join(CONV_ENGINES)}, not {conv_engine!r}")
    if not Path(model).is_file():
        raise BitsnnError(f"hardware model {model} not found")
    model_path = model
    hm = HardwareModel.load(model_path)
    check_supported(hm)  # before any work
    if int(images) < 1:
        raise BitsnnError(f"--images must be at least 1, got {int(images)}")
    lanes = default_lanes(hm) if lanes is None else int(lanes)
    if not 1 <= lanes <= MAX_LANES:
        raise BitsnnError(f"--lanes must be in 1..{MAX_LANES}, got {lanes}")
    # what the hardware cannot run, before any work
    plan = HardwarePlan.of(hm, mode=mode, lanes=lanes, word=WORD, conv_engine=conv_engine)
    if wave is not None:
        from bitsnn.data import data_inputs

        check_output_file(wave, "--wave", kind=VCD, inputs=[model, *data_inputs(data_dir), *([spikes] if spikes else [])],
                          force=force)
    _check_simulator(simulator)
    data = None if hm.input_coding == "given" or spikes is not None else load_dataset(data_dir)
    images, labels = model_inputs(images, hm, spikes=spikes, data=data)
    n = len(images)
    k = int(image or 0)
    pool = images if data is None else data.test_images
    if wave and not 0 <= k < len(pool):
        raise BitsnnError(f"--image {k} is outside the {'inputs' if data is None else 'test set'} (0..{len(pool) - 1})")

    say(f"model {model_path}: {hm.describe()}")
    t0 = time.perf_counter()
    g = golden.run(hm, images)
    want_cycles = cycles_mod.predict_cycles(hm, g, mode=mode, lanes=lanes, word=WORD, conv_engine=conv_engine)
    say(f"golden model: {n} images in {time.perf_counter() - t0:.2f} s")
    progress = max(1, n // 10) if (n >= 100 and simulator in HDL_SIMULATORS) else 0
    engines = [lp.conv.engine for lp in plan.layers if lp.conv is not None]
    stages = f", convolution stages {'/'.join(engines)}" if engines else ""
    say(f"simulating {n} images on {simulator} (mode {mode}, {lanes} lanes{stages})...")
    run = simulate(hm, images, simulator=simulator, mode=mode, g=g, want_cycles=want_cycles, progress=progress,
                   lanes=lanes, conv_engine=conv_engine, verbose=verbose, out=out)
    r = run.result
    bad = compare(g, want_cycles, r)

    counts = np.asarray(r.spike_counts)
    if labels is not None:
        acc = float(np.mean(np.asarray(r.classes) == labels))
        say(f"accuracy: {acc:.2%} on {n} images (golden {float(np.mean(g.classes == labels)):.2%})")
    else:
        say(f"accuracy: not known ({spikes} has no labels)")
    say(f"mismatches: {len(bad)}")
    say(f"cycles per inference: mean {np.mean(r.cycles):.1f}, min {int(np.min(r.cycles))}, "
        f"max {int(np.max(r.cycles))}")
    per_layer = ", ".join(f"layer {l} {v:.1f}" for l, v in enumerate(counts.mean(axis=0)))
    say(f"spikes per inference: mean {counts.sum(axis=1).mean():.1f} ({per_layer})")
    if simulator == "golden":
        say(f"golden model: {n / max(run.run_s, 1e-9):,.0f} images/s (no hardware simulated; "
            f"cycles from bitsnn.sim.cycles)")
    else:
        approx = "~" if simulator == "amaranth" else ""
        say(f"simulated {approx}{run.sim_cycles:,} cycles in {run.run_s:.2f} s: "
            f"{approx}{run.sim_cycles / max(run.run_s, 1e-9):,.0f} cycles/s"
            + (f" (build {run.build_s:.1f} s)" if run.build_s else ""))
        if getattr(r, "log", None) is not None:
            say(f"build and simulator log in {Path(r.log).parent} (the cache; $BITSNN_BUILD moves it)")
    if wave:
        if simulator == "golden":
            say("--wave: the golden model has no waveform; use a hardware simulator")
        else:
            write_wave(hm, pool[k], wave, simulator=simulator, mode=mode, lanes=lanes,
                       conv_engine=conv_engine)
            say(f"wrote waveform of image {k} to {wave}")
    if bad:
        say(f"MISMATCH: first at {bad[0]}")
        for m in bad[1:5]:
            say(f"  also {m}")
        return 1
    return 0
