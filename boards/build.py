"""``bitsnn build``: hardware model -> resource check -> Yosys/nextpnr -> bitstream + report.json."""

from __future__ import annotations

import math
import time
from pathlib import Path

from bitsnn import BitsnnError
from bitsnn.hwmodel import HardwareModel
from bitsnn.hwplan import check_supported
from bitsnn.protocol import MAX_LANES

from . import get_board
from .common import Board, BoardTop, ToolchainError, build_into, check_build_dir
from .fit import DEFAULT_ACCEL, INFER_LIMIT, auto_lanes, board_lanes, choose_spram_layers, fit_conv_lanes
from .fit import estimate_on as _estimate

__all__ = ["DEFAULT_ACCEL", "check_fits", "near_limit", "fit_conv_lanes", "board_lanes", "build_board", "build_main"]

#: nextpnr's error when it cannot place the design (retried with the next attempt)
PLACEMENT_FAILED = "Unable to find legal placement"
#: per-cell legalisation effort of nextpnr's heap placer: max(10000, cells^2 / 64) tries instead of
#: cells^2 / 8 (a design it cannot place fails in about 40 s instead of about 10 minutes)
PLACE_EFFORT = "--placer-heap-cell-placement-timeout 64"
#: (seed offset, extra nextpnr options) tried in order when placement fails
PLACEMENT_ATTEMPTS = [(0, ""), (0, "--placer-heap-beta 0.95"), (1, "--placer-heap-beta 0.95")]


class DesignTooLarge(BitsnnError):
    """The estimate says the design cannot fit the board."""


def check_fits(board: Board, estimate: dict) -> None:
    """Raise DesignTooLarge naming every resource that overflows, and by how much."""
    t = board.totals
    limits = {
        "logic": ("logic cells", t.logic),
        "ffs": ("flip-flops", t.ffs),
        "bram_blocks": (f"block RAMs ({t.bram_bits_per_block // 1024} kbit)", t.bram_blocks),
        "spram_blocks": ("SPRAM blocks", t.spram_blocks),
        "dsp_blocks": ("DSP blocks", t.dsp),
    }
    over = []
    for key, (what, avail) in limits.items():
        need = int(estimate.get(key, 0))
        if need > avail:
            over.append(f"{what}: needs {need}, {board.device} has {avail} (over by {need - avail})")
    if over:
        raise DesignTooLarge(f"design does not fit {board.name}: " + "; ".join(over))


#: Above this share of the logic cells a build gets a warning: the estimate has been up to 3 % off
#: either way (docs/hardware.md), and nextpnr failed to place a UP5K design at 95.7 % (one placed at 94.7 %).
NEAR_LIMIT = 0.90


def near_limit(board: Board, estimate: dict) -> str | None:
    """A one-line warning when the estimated logic is close enough to the device's total that
    placement may fail, else None."""
    used, avail = int(estimate.get("logic", 0)), board.totals.logic
    if avail and used > NEAR_LIMIT * avail:
        return (f"warning: the estimate uses {100.0 * used / avail:.0f}% of {board.device}'s {avail} logic cells; "
                f"place and route may fail this close to the limit")
    return None


def spram_layers_syntax(text: str):
    """``--spram-layers`` read without a model: "auto", "none", or the sorted layer numbers of
    "L,L" (each once). BitsnnError for anything else, so a flow can refuse it before its first step."""
    t = str(text).strip().lower()
    if t in ("auto", "none"):
        return t
    parts = [x.strip() for x in t.split(",")]
    if not all(x.isascii() and x.isdigit() for x in parts):
        raise BitsnnError(f"--spram-layers: expected auto, none or layer numbers like 0,1; got {text!r}")
    layers = [int(x) for x in parts]
    if len(set(layers)) != len(layers):
        raise BitsnnError(f"--spram-layers {text}: layer {next(l for l in layers if layers.count(l) > 1)} is named twice")
    return sorted(layers)


def parse_spram_layers(text: str, model: HardwareModel):
    """``--spram-layers``: "auto", "none" or comma-separated layer indices of ``model``."""
    layers = spram_layers_syntax(text)
    if isinstance(layers, str):
        return layers
    if any(not 0 <= l < len(model.layers) for l in layers):
        raise BitsnnError(f"--spram-layers {text}: the model has layers 0..{len(model.layers) - 1}")
    from bitsnn.hwplan import runtime_weights_problem

    for l in layers:
        if (why := runtime_weights_problem(model.layers[l], l)):
            raise BitsnnError(f"--spram-layers {text}: {why}")
    return layers


def build_board(board_name: str, model: HardwareModel, outdir: Path, *, seed: int = 1,
                accel: dict | None = None, clock_mhz: float | None = None, baud: int | None = None,
                placement_retries: int = 2, log=print) -> dict:
    """Check the estimate, build, and compare the estimate with the tools' figures. nextpnr runs
    with ``seed``; when it finds no legal placement, up to ``placement_retries`` more attempts of
    PLACEMENT_ATTEMPTS (a denser heap placer, then the next seed).
    ``clock_mhz``: set the board's PLL to the nearest achievable frequency instead of its default.
    ``baud``: the UART's bit rate (default: the fastest the board's bridge carries at the clock,
    :meth:`Board.check_baud`), checked before any work."""
    from bitsnn.hw.top import UARTTop

    outdir = check_build_dir(outdir)  # before any work: never replace what a build did not write
    board = get_board(board_name)
    if clock_mhz is not None:
        if not (isinstance(clock_mhz, (int, float)) and math.isfinite(clock_mhz) and clock_mhz > 0):
            raise BitsnnError(f"--clock-mhz must be a finite number > 0, got {clock_mhz!r}")
        board = board.with_clock(clock_mhz * 1e6)
        log(f"[build] {board.name}: PLL set to {board.clk_freq / 1e6:.4g} MHz")
    baud = board.check_baud(baud)
    log(f"[build] {board.name}: UART at {baud} baud ({board.bridge}, {round(board.clk_freq / baud)} clocks per bit)")
    from bitsnn.hwplan import CONV_ENGINES, default_lanes

    accel = dict(DEFAULT_ACCEL, **(accel or {}))
    if accel.setdefault("conv_engine", "auto") not in CONV_ENGINES:
        raise BitsnnError(f"--conv-engine must be one of {', '.join(CONV_ENGINES)}, not {accel['conv_engine']!r}")
    lanes_given = accel.get("lanes") is not None
    if not lanes_given:
        accel["lanes"] = default_lanes(model)
    if not 1 <= int(accel["lanes"]) <= MAX_LANES:
        raise BitsnnError(f"--lanes must be in 1..{MAX_LANES}, got {accel['lanes']}")
    spram = accel.pop("spram_layers", "auto")
    if spram == "auto":
        spram = choose_spram_layers(board, model, accel)
    elif spram == "none":
        spram = []
    elif board.totals.spram_blocks == 0 and spram:
        raise BitsnnError(f"--spram-layers: {board.name} ({board.device}) has no SPRAM")
    if not lanes_given:
        fitted = auto_lanes(board, model, accel, spram)
        if fitted != accel["lanes"]:
            log(f"[build] {board.name}: {fitted} lanes (with {accel['lanes']}, the convolutions' lanes and INFER "
                f"would take more than {INFER_LIMIT:.0%} of its logic; --lanes to choose)")
        accel["lanes"] = fitted
    if spram:
        accel["spram_layers"] = list(spram)
        log(f"[build] {board.name}: weights of layer(s) {', '.join(map(str, spram))} in SPRAM, written over "
            f"the UART at run time (bitsnn run does it)")
    infer = accel.pop("infer", "auto")
    if infer not in ("auto", "on", "off"):
        raise BitsnnError(f"--infer must be auto, on or off, not {infer!r}")
    if infer == "auto":
        est = _estimate(board, model, accel)
        infer = "on" if est["logic"] <= INFER_LIMIT * board.totals.logic else "off"
        if infer == "off":
            log(f"[build] {board.name}: INFER left out: with it the estimate is {est['logic']} logic cells, "
                f"{100.0 * est['logic'] / board.totals.logic:.0f}% of {board.device} (--infer on to force it)")
    accel["infer"] = {"auto": None, "on": True, "off": False}[infer]  # None: whenever an image fits a frame
    est = _estimate(board, model, accel)
    log(f"[build] {board.name}: estimate {est['logic']} logic cells, {est['ffs']} FFs, "
        f"{est['bram_blocks']} block RAMs, {est.get('spram_blocks', 0)} SPRAM")
    check_fits(board, est)
    warn = near_limit(board, est)
    if warn:
        log(f"[build] {board.name}: {warn}")
    try:
        design = UARTTop(model, clk_freq=board.clk_freq, baud=baud, monitor=False, **accel)
    except ValueError as e:  # e.g. a clock too slow for the UART's bit rate
        raise BitsnnError(f"{board.name}: cannot generate the design: {e}") from None
    t0 = time.perf_counter()
    # Near a device's logic limit nextpnr's heap placer may find no legal placement: a 576-160-10
    # SPRAM build at 91 % of the UP5K failed with seed 1 after ~10 minutes, and placed with seed 1
    # in 84 s once the placer's maximum density (--placer-heap-beta, default 0.9) was 0.95. Each
    # attempt bounds the per-cell legalisation effort (a failure then takes seconds, not minutes);
    # a placement failure moves on to the next attempt. The ladder is fixed, so the same inputs
    # still give the same bitstream, and report.json names the attempt that produced it.
    attempts = [(int(seed) + k, opts) for k, opts in PLACEMENT_ATTEMPTS][: 1 + max(0, int(placement_retries))]
    for i, (s, opts) in enumerate(attempts):
        log(f"[build] {board.name}: synthesis and place-and-route (seed {s}{', ' + opts if opts else ''}) ...")
        try:
            report = build_into(
                board, BoardTop(board, design), outdir, seed=s, nextpnr_extra=f"{PLACE_EFFORT} {opts}".strip(),
                extra_report={"accelerator": accel, "baud": baud, "bridge": board.bridge, "estimate": est, "seed": s,
                              "nextpnr_options": opts,
                              "attempts": [{"seed": a, "options": o} for a, o in attempts[: i + 1]],
                              "model": {"spec": model.describe(), "content_hash": model.content_hash}},
            )
            break
        except ToolchainError as e:
            if PLACEMENT_FAILED not in str(e) or i == len(attempts) - 1:
                raise
            log(f"[build] {board.name}: no legal placement ({e}); next attempt")
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def format_report(report: dict) -> str:
    u = report["utilisation"]
    est = report.get("estimate", {})
    names = {"logic": "logic cells", "ffs": "flip-flops", "bram": "block RAM", "spram": "SPRAM", "dsp": "DSP"}
    est_key = {"logic": "logic", "ffs": "ffs", "bram": "bram_blocks", "spram": "spram_blocks", "dsp": "dsp_blocks"}
    lines = [f"{report['board']} ({report['device']}):"]
    for k, label in names.items():
        used, avail = u[k]["used"], u[k]["available"]
        pct = 100.0 * used / avail if avail else 0.0
        e = f"  (estimate {est[est_key[k]]})" if k in est_key and est_key[k] in est else ""
        lines.append(f"  {label:12s} {used:6d} / {avail:<6d} {pct:5.1f}%{e}")
    lines.append(f"  Fmax         {report['fmax_mhz']:.2f} MHz achieved, constraint {report['constraint_mhz']:.2f} MHz"
                 f" -> timing {'met' if report['timing_met'] else 'FAILED'}")
    tried = report.get("attempts") or []
    if len(tried) > 1:
        lines.append(f"  nextpnr seed {report['seed']} {report['nextpnr_options']} (attempt {len(tried)}: "
                     "the earlier ones found no legal placement)")
    return "\n".join(lines)


def build_main(args) -> int:
    check_build_dir(args.output, inputs=[args.model])  # before any work
    model = HardwareModel.load(args.model)
    check_supported(model)  # before any work
    spram = parse_spram_layers(getattr(args, "spram_layers", "auto"), model)
    report = build_board(args.board, model, Path(args.output), seed=getattr(args, "seed", None) or 1,
                         accel={"spram_layers": spram, "lanes": getattr(args, "lanes", None),
                                "infer": getattr(args, "infer", None) or "auto",
                                "conv_engine": getattr(args, "conv_engine", None) or "auto"},
                         clock_mhz=getattr(args, "clock_mhz", None), baud=getattr(args, "baud", None))
    print(format_report(report))
    print(f"[build] wrote {Path(args.output) / report['bitstream']} and report.json in {report['build_seconds']} s")
    return 0 if report["timing_met"] else 1
