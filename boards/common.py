"""What every board build shares: device totals, the PLL-clocked wrapper, the YoWASP tool run,
and the parsing of Yosys ``stat -json`` and nextpnr ``--report`` output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from bitsnn import BitsnnError

from . import DeviceTotals

__all__ = ["DeviceTotals", "Board", "BoardTop", "ToolchainError", "run_toolchain", "parse_reports", "BUILD_MARKER",
           "check_build_dir", "build_into", "BITSTREAM_PREAMBLE", "bitstream_problem"]


class ToolchainError(BitsnnError):
    """A missing tool, or Yosys/nextpnr failing on the design."""


@dataclass(frozen=True)
class Board(ABC):
    """A build target: an amaranth-boards platform, its PLL, its device totals and tools."""

    name: str
    device: str
    family: str  # "ice40" | "ecp5"
    clk_freq: float  # the PLL output frequency the design is constrained to, Hz
    bridge: str  # the USB-UART bridge (bitsnn.link.BRIDGES)
    totals: DeviceTotals
    bitstream_suffix: str
    # Environment for amaranth's toolchain wrappers: the YoWASP executables.
    tools: dict = field(default_factory=dict)

    def check_baud(self, baud: int | None) -> int:
        """``baud``, or this board's default at its clock when None, after checking that the
        design's UART and the board's bridge carry it (BitsnnError otherwise)."""
        from bitsnn import BitsnnError
        from bitsnn.link import BRIDGES, RateError, check_rate, default_baud

        try:
            if baud is None:
                return default_baud(self.clk_freq, BRIDGES[self.bridge])
            check_rate(self.clk_freq, baud, BRIDGES[self.bridge])
            return int(baud)
        except RateError as e:
            raise BitsnnError(f"--baud: {self.name}: {e}") from None

    @abstractmethod
    def platform(self):
        """A fresh amaranth-boards platform instance."""

    @abstractmethod
    def pll(self, m: Module, platform) -> tuple[Signal, Signal]:
        """Instantiate the PLL on the board clock; return (output clock, locked)."""

    @abstractmethod
    def with_clock(self, freq: float) -> "Board":
        """This board with its PLL set to the achievable frequency nearest ``freq`` (Hz)."""


class BoardTop(Elaboratable):
    """The design on a board: a PLL ``sync`` domain held in reset until the PLL locks, and the
    design's ``rx``/``tx`` on the board's UART pins."""

    def __init__(self, board: Board, design):
        self.board = board
        self.design = design

    def elaborate(self, platform):
        m = Module()
        clk, locked = self.board.pll(m, platform)
        m.domains.sync = cd = ClockDomain("sync")
        m.domains.por = por_cd = ClockDomain("por", reset_less=True)
        m.d.comb += [cd.clk.eq(clk), por_cd.clk.eq(clk)]
        platform.add_clock_constraint(clk, self.board.clk_freq)
        # iCE40 BRAMs read as zero for ~3 us after configuration: hold the design in reset for
        # 100 us after the PLL locks. The counter itself never resets (its own domain).
        cycles = int(100e-6 * self.board.clk_freq)
        por = Signal(range(cycles + 1), init=cycles)
        with m.If(~locked):
            m.d.por += por.eq(cycles)
        with m.Elif(por != 0):
            m.d.por += por.eq(por - 1)
        m.submodules.reset_sync = ResetSynchronizer(~locked | (por != 0), domain="sync")
        m.submodules.design = self.design
        # Every subsignal raw ("-"): the design buffers rx/tx itself; others (ULX3S rts/dtr) stay unused.
        subsignals = [sub.name for sub in platform.lookup("uart", 0).ios]
        uart = platform.request("uart", 0, dir={name: "-" for name in subsignals})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [self.design.rx.eq(rx.i), tx.o.eq(self.design.tx)]
        return m


def _tool_env(board: Board) -> dict:
    """The environment for the build script: each tool from its variable ($YOSYS, ...) when set,
    else the YoWASP executable on PATH, else the one installed beside the running Python (a
    venv or pipx install run without activating it)."""
    env = dict(os.environ)
    beside = Path(sys.executable).parent
    for var, exe in board.tools.items():
        if var in env:
            continue
        if shutil.which(exe, path=env.get("PATH")) is None and (beside / exe).is_file():
            exe = str(beside / exe)
        env[var] = exe
    return env


def check_tools(board: Board) -> None:
    env = _tool_env(board)
    for var in board.tools:
        exe = env[var]
        if exe != "true" and shutil.which(exe, path=env.get("PATH")) is None:
            raise ToolchainError(f"missing tool {exe} (${var}); install it with: pip install -e '.[hw]'")


def run_toolchain(board: Board, top: Elaboratable, build_dir: Path, *, name: str = "bitsnn", seed: int = 1,
                  nextpnr_extra: str = ""):
    """Synthesise, place and route ``top`` in ``build_dir``; return the parsed reports.

    nextpnr runs with a fixed seed and ``--timing-allow-fail`` (timing is judged from its report).
    """
    check_tools(board)
    platform = board.platform()
    env = _tool_env(board)
    # iCE40: multipliers (b-bit weights times pixels) into the SB_MAC16 DSP blocks; a design
    # without multipliers synthesises as without -dsp. (synth_ecp5 uses MULT18X18D by default.)
    synth = {"synth_opts": "-dsp"} if board.family == "ice40" else {}
    plan = platform.prepare(
        top,
        name=name,
        script_after_synth="tee -q -o stat.json stat -json",
        **synth,
        nextpnr_opts=f"--report report.json --seed {int(seed)} --timing-allow-fail {nextpnr_extra}".strip(),
    )
    plan.extract(str(build_dir))
    script = "build_{}.sh".format(name)
    t0 = time.perf_counter()
    proc = subprocess.run(["sh", script], cwd=build_dir, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise ToolchainError(f"{board.name} build failed: {_first_error(proc, build_dir, name)}")
    report = parse_reports(board, build_dir)
    report["tool_seconds"] = round(elapsed, 1)
    return report


def _first_error(proc, build_dir: Path, name: str) -> str:
    """The first ERROR line the tools printed (or logged), else their last line of output; with
    nextpnr's logic-cell count when it got that far (a placement failure near the device's size)."""
    texts = [proc.stderr or "", proc.stdout or ""]
    for log in (build_dir / f"{name}.tim", build_dir / f"{name}.rpt"):
        if log.exists():
            texts.append(log.read_text(errors="replace"))
    usage = ""
    for text in texts:
        m = _LOGIC_USAGE.search(text)
        if m:
            usage = f" (nextpnr: {m.group(1)} {m.group(2)}/{m.group(3)} used)"
            break
    for text in texts:
        for line in text.splitlines():
            if line.strip().startswith("ERROR"):
                return line.strip() + usage
    lines = (proc.stderr or proc.stdout or "(no output)").strip().splitlines()
    return (lines[-1] if lines else "(no output)") + usage


#: nextpnr's "Device utilisation" line for the logic cells (iCE40 and ECP5)
_LOGIC_USAGE = re.compile(r"\b(ICESTORM_LC|TRELLIS_COMB):\s*(\d+)\s*/\s*(\d+)")


def parse_reports(board: Board, build_dir: Path) -> dict:
    """Utilisation and Fmax from the tools' own reports (Yosys stat -json, nextpnr --report)."""
    stat = json.loads((build_dir / "stat.json").read_text())
    pnr = json.loads((build_dir / "report.json").read_text())
    util = pnr["utilization"]
    cells = stat["design"].get("num_cells_by_type", {})

    def used(*names):
        return sum(util[n]["used"] for n in names if n in util)

    def avail(*names):
        return sum(util[n]["available"] for n in names if n in util)

    if board.family == "ice40":
        res = {
            "logic": (used("ICESTORM_LC"), avail("ICESTORM_LC")),
            "ffs": (sum(v for k, v in cells.items() if k.startswith("SB_DFF")), board.totals.ffs),
            "bram": (used("ICESTORM_RAM"), avail("ICESTORM_RAM")),
            "spram": (used("ICESTORM_SPRAM"), avail("ICESTORM_SPRAM")),
            "dsp": (used("ICESTORM_DSP"), avail("ICESTORM_DSP")),
        }
        luts = cells.get("SB_LUT4", 0)
    else:
        res = {
            "logic": (used("TRELLIS_COMB"), avail("TRELLIS_COMB")),
            "ffs": (used("TRELLIS_FF"), avail("TRELLIS_FF")),
            "bram": (used("DP16KD"), avail("DP16KD")),
            "spram": (0, 0),
            "dsp": (used("MULT18X18D"), avail("MULT18X18D")),
        }
        luts = cells.get("LUT4", 0)
    clocks = pnr.get("fmax", {})
    # The design clock: the constrained net with the lowest constraint is the PLL output.
    fmax = min(clocks.values(), key=lambda c: c["achieved"]) if clocks else {"achieved": 0.0, "constraint": 0.0}
    return {
        "board": board.name,
        "device": board.device,
        "utilisation": {k: {"used": u, "available": a} for k, (u, a) in res.items()},
        "yosys_luts": luts,
        "fmax_mhz": round(fmax["achieved"], 2),
        "constraint_mhz": round(fmax["constraint"], 2),
        "timing_met": fmax["achieved"] >= fmax["constraint"],
    }


def board_dict(board: Board) -> dict:
    return {"name": board.name, "device": board.device, "clk_freq": board.clk_freq, "totals": asdict(board.totals)}


#: the synchronisation word each family's configuration logic looks for near a bitstream's start
#: (iCE40: 0x7EAA997E after icepack's comment; ECP5: 0xFFFFBDB3 after ecppack's)
BITSTREAM_PREAMBLE = {"ice40": b"\x7e\xaa\x99\x7e", "ecp5": b"\xff\xff\xbd\xb3"}


def bitstream_problem(family: str, data: bytes) -> str | None:
    """Why ``data`` is not a plausible bitstream for ``family``, or None: its preamble is not
    within the first 1 KiB, or the file is shorter than any configuration frame."""
    pre = BITSTREAM_PREAMBLE[family]
    if len(data) < 1024:
        return f"{len(data)} bytes is too short for a {family} bitstream"
    if pre not in data[:1024]:
        return f"no {family} preamble ({pre.hex()}) in its first 1 KiB"
    return None


#: the file that marks a directory as a `bitsnn build` output: only such a directory (or an empty
#: one) is ever replaced by a later build
BUILD_MARKER = ".bitsnn-build"


def check_build_dir(outdir, what: str = "-o", *, inputs=()) -> Path:
    """Refuse, before any work, an output directory a build may not replace: a path that exists
    and is not a directory, a non-empty directory without :data:`BUILD_MARKER` (the user's own
    files), or one that holds an input of the build (``inputs``: the model file), which replacing
    it would delete. Also refuses a place that cannot be written. Returns the path."""
    from bitsnn.fileio import check_output_dir, inside

    outdir = check_output_dir(outdir, what)
    for i in inputs:
        if i is not None and outdir.exists() and inside(i, outdir):
            raise BitsnnError(f"{what} {outdir}: holds {i}, an input of this build, which replacing the "
                              "directory would delete; give another directory")
    if outdir.is_dir() and not (outdir / BUILD_MARKER).is_file() and any(outdir.iterdir()):
        raise BitsnnError(f"{what} {outdir}: the directory exists and was not written by bitsnn build "
                          f"(it has no {BUILD_MARKER}); give a new or empty directory")
    # the build is staged beside outdir and moved into place: that folder must be writable too
    check_output_dir(outdir.absolute().parent, what)
    return outdir


def build_into(board: Board, top: Elaboratable, outdir: Path, *, seed: int = 1, extra_report: dict | None = None,
               nextpnr_extra: str = ""):
    """Build and move the bitstream, the tools' reports and ``report.json`` into ``outdir``.

    Everything is built in a temporary directory beside ``outdir`` and moved into place only when
    the build succeeded, so ``outdir`` never holds a half-written result. An existing ``outdir``
    is replaced only when it is empty or an earlier build's (:func:`check_build_dir`).
    """
    from bitsnn.fileio import clean_stale_temps, temp_prefix

    outdir = check_build_dir(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(outdir.parent, outdir.name)  # what a killed build left beside it
    with tempfile.TemporaryDirectory(prefix=temp_prefix(outdir.name), dir=outdir.parent) as tmp:
        tmp = Path(tmp)
        build_dir = tmp / "build"
        report = run_toolchain(board, top, build_dir, seed=seed, nextpnr_extra=nextpnr_extra)
        report.update(extra_report or {})
        stage = tmp / "out"
        stage.mkdir()
        bit = build_dir / f"bitsnn.{board.bitstream_suffix}"
        if (why := bitstream_problem(board.family, bit.read_bytes())):
            raise ToolchainError(f"the toolchain wrote a bitstream bitsnn does not recognise: {why}")
        shutil.copy2(bit, stage / bit.name)
        for f in ("stat.json", "report.json"):
            shutil.copy2(build_dir / f, stage / ("yosys-stat.json" if f == "stat.json" else "nextpnr-report.json"))
        for f in ("bitsnn.rpt", "bitsnn.tim"):
            if (build_dir / f).exists():
                shutil.copy2(build_dir / f, stage / f.replace("bitsnn.rpt", "yosys.log").replace("bitsnn.tim", "nextpnr.log"))
        report["bitstream"] = bit.name
        (stage / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (stage / BUILD_MARKER).write_text(json.dumps({"written_by": "bitsnn build", "board": board.name}) + "\n")
        check_build_dir(outdir)  # again: the user may have put files there while the tools ran
        if outdir.exists():
            os.replace(outdir, tmp / "old")  # an empty directory or an earlier build's, removed with tmp
        os.replace(stage, outdir)
    return report
