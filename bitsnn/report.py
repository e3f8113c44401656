"""Reports: spikes, synaptic events, weight-memory reads, cycles, latency and energy per inference.

Everything here is a function of plain inputs (a :class:`~bitsnn.hwmodel.HardwareModel`, a golden
result, a cycles array, a build-report dict, toggle counts), so it is testable without training or
a toolchain; :func:`report_main` (``bitsnn report``) only wires them together. NumPy only, plus
matplotlib (Agg, no pyplot state) for the plots and pyvcd for reading waveforms.

Two energy estimates, kept apart on purpose (docs/report.md has every constant with its source):

(a) ``asic_45nm``: an operation-count model with Horowitz's 45 nm, 0.9 V figures (ISSCC 2014).
    These are ASIC figures for a 45 nm process, NOT FPGA figures; they compare the SNN's
    operations with an equivalent fp32 ANN on the same network, nothing more::

        E_snn = sum_l [ syn_events_l * E_add(acc_bits_l) + compares_l * E_add(acc_bits_l)
                        + weight_bits_read_l / 64 * E_sram64 ]
        E_ann = sum_l n_in_l * n_out_l * (E_fmul32 + E_fadd32) + weights * 32 / 64 * E_sram64

(b) ``fpga``: E = P_static * latency + cycles * E_clock + toggles * E_toggle, with the static
    power, clock energy per cycle and energy per toggle of the board's device (see
    :data:`FPGA_POWER`); a term whose constant has no trustworthy source is reported as unknown
    (null) and the total is then marked as a lower bound.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import BitsnnError
from .fileio import atomic_path, atomic_write_text, check_output_dir
from .hwplan import MODES, HardwarePlan, check_supported, default_lanes, preact_bits

__all__ = [
    "REPORT_VERSION",
    "REPORT_KEYS",
    "Constant",
    "HOROWITZ_45NM",
    "FpgaPowerModel",
    "FPGA_POWER",
    "LayerCounts",
    "ToggleCounts",
    "acc_bits",
    "layer_counts",
    "asic_energy",
    "ann_fp32_energy",
    "fpga_energy",
    "timing",
    "count_toggles",
    "load_build_report",
    "check_build_report",
    "build_report",
    "write_report",
    "plot_spike_raster",
    "plot_spikes_per_layer",
    "plot_accuracy_energy",
    "plot_utilisation",
    "report_main",
]

REPORT_VERSION = 1

#: Top-level keys of report.json (documented in docs/report.md).
REPORT_KEYS = ("report_version", "model", "board", "hardware", "images", "accuracy", "layers", "totals",
               "timing", "energy", "constants", "build", "plots")


# ---- constants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    """A cited number: ``value`` in ``unit``; ``source`` says where it comes from."""

    value: float
    unit: str
    source: str


_HOROWITZ = ('M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014, '
             "paper 1.1 (doi:10.1109/ISSCC.2014.6757323), table of rough energy costs per operation, "
             "45 nm, 0.9 V")

#: Horowitz 45 nm figures (ASIC, not FPGA). Only the values checked against two independent
#: reproductions of the table are used (docs/report.md lists them).
HOROWITZ_45NM = {
    "int8_add": Constant(0.03e-12, "J", _HOROWITZ + ": 8-bit integer add 0.03 pJ"),
    "int16_add": Constant(0.05e-12, "J", _HOROWITZ + ": 16-bit integer add 0.05 pJ"),
    "int32_add": Constant(0.1e-12, "J", _HOROWITZ + ": 32-bit integer add 0.1 pJ"),
    "fp32_add": Constant(0.9e-12, "J", _HOROWITZ + ": 32-bit float add 0.9 pJ"),
    "fp32_mult": Constant(3.7e-12, "J", _HOROWITZ + ": 32-bit float multiply 3.7 pJ"),
    "sram_8kb_read64": Constant(10e-12, "J", _HOROWITZ + ": 64-bit read from an 8 KB cache (SRAM) 10 pJ"),
}

_ICE40_POWER = ("tinyvision-ai-inc/ice40_power, README.md 'Results' table (commit 1af931e): core-rail "
                "current of an iCE40UP5K on the Lattice iCE40 UltraPlus Breakout Board, icestorm "
                "bitstreams, Joulescope JS110, VCC = 1.219 V")


@dataclass(frozen=True)
class FpgaPowerModel:
    """The constants of the FPGA energy estimate for one board; None means unknown."""

    device: str
    static_w: float | None
    static_source: str
    clock_j_per_cycle: float | None
    clock_source: str
    toggle_j: float | None
    toggle_source: str


# iCE40UP5K, from the measurement table cited above (currents in A, core rail 1.219 V):
#   static:  'Blank design' 85.6 uA                                   -> 104.3 uW
#   clock:   'External 12 MHz + 28 bit counter (32 LC's)' 613.5 uA minus 'External halted clock
#            (0 kHz) + 24 bit counter' 92.1 uA, per 12 MHz cycle       -> 52.97 pJ/cycle
#   toggle:  'External 12 MHz + 28*8 bit counter' 641.3 uA minus '+ 28 bit counter' 613.5 uA:
#            7 more 28-bit counters, each 2*(1 - 2**-28) ~ 2 bit toggles per cycle, at 12 MHz
#                                                                       -> 0.2017 pJ/toggle
_V_ICE40 = 1.219
_ICE40_STATIC = 85.6e-6 * _V_ICE40
_ICE40_CLOCK = (613.5e-6 - 92.1e-6) * _V_ICE40 / 12e6
_ICE40_TOGGLE = (641.3e-6 - 613.5e-6) * _V_ICE40 / (12e6 * 7 * 2 * (1 - 2.0**-28))
# ECP5 (LFE5U-85F): no trustworthy static or clock figure was found (docs/report.md); the toggle
# energy is the iCE40 one rescaled by C*V^2 to the ECP5 core supply of 1.1 V, i.e. the same
# effective switched capacitance per toggle (both are 40 nm Lattice fabrics) -- an assumption.
_ECP5_TOGGLE = _ICE40_TOGGLE * (1.1 / _V_ICE40) ** 2

FPGA_POWER = {
    "icebreaker": FpgaPowerModel(
        device="iCE40UP5K",
        static_w=_ICE40_STATIC,
        static_source=_ICE40_POWER + ": 'Blank design' 85.6 uA x 1.219 V (a measurement of one part, "
        "not the datasheet's typical figure)",
        clock_j_per_cycle=_ICE40_CLOCK,
        clock_source=_ICE40_POWER + ": (613.5 uA at 12 MHz - 92.1 uA halted) x 1.219 V / 12 MHz; a "
        "32-LC design, so the clock load of a bigger design is under-counted",
        toggle_j=_ICE40_TOGGLE,
        toggle_source=_ICE40_POWER + ": (641.3 - 613.5) uA x 1.219 V / (12 MHz x 7 counters x 2 toggles "
        "per cycle); includes the clock load of the added flip-flops, so it is an upper bound per toggle",
    ),
    "ulx3s-85f": FpgaPowerModel(
        device="LFE5U-85F",
        static_w=None,
        static_source="unknown: no trustworthy LFE5U-85F static figure found (ECP5 family data sheet "
        "FPGA-DS-02012 not readable with the tools used)",
        clock_j_per_cycle=None,
        clock_source="unknown: no ECP5 clock-network measurement found",
        toggle_j=_ECP5_TOGGLE,
        toggle_source="assumption: the iCE40UP5K energy per toggle rescaled by C*V^2 from 1.219 V to the "
        "ECP5 core supply 1.1 V (same effective capacitance per toggle); not an ECP5 measurement",
    ),
}


# ---- operation counts ------------------------------------------------------------------------


def acc_bits(layer) -> int:
    """Bits of a signed accumulator that holds any pre-activation of ``layer`` (|a| <= R):
    :func:`bitsnn.hwplan.preact_bits`."""
    return preact_bits(layer.a_max)


@dataclass
class LayerCounts:
    """Per-image counts of one layer for B images (arrays of shape (B,), int64).

    ``input_events``: nonzero inputs (address events); ``synaptic_events``: input events x fan-out;
    ``output_spikes``: spikes the layer emits (None for the output layer);
    ``weight_words``/``weight_bits``: weight-memory reads in words of ``word_bits`` bits and in bits
    (all cores of the layer); ``compares``: threshold compares (hidden) or argmax compares (output).
    """

    name: str
    n_in: int
    n_out: int
    acc_bits: int
    word_bits: int
    input_events: np.ndarray
    synaptic_events: np.ndarray
    output_spikes: np.ndarray | None
    weight_words: np.ndarray
    weight_bits: np.ndarray
    compares: int
    #: accumulator-memory words read per image (as many are written back) and their width: a
    #: convolution's ring of rows; dense event cores keep theirs in registers (0)
    acc_words: np.ndarray | None = None
    acc_word_bits: int = 0

    def summary(self) -> dict:
        def ms(a):
            a = np.asarray(a, dtype=np.float64)
            return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}

        return {
            "name": self.name,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "acc_bits": self.acc_bits,
            "input_events": ms(self.input_events),
            "synaptic_events": ms(self.synaptic_events),
            "output_spikes": None if self.output_spikes is None else ms(self.output_spikes),
            "firing_rate": None if self.output_spikes is None else float(self.output_spikes.mean() / self.n_out),
            "weight_word_bits": self.word_bits,
            "weight_reads_words": ms(self.weight_words),
            "weight_reads_bits": ms(self.weight_bits),
            "compares": self.compares,
            "accumulator_word_bits": self.acc_word_bits,
            "accumulator_reads_words": ms(self.acc_words if self.acc_words is not None else [0]),
            "accumulator_writes_words": ms(self.acc_words if self.acc_words is not None else [0]),
        }


def _check_hw(mode, lanes, word):
    if mode not in MODES:
        raise BitsnnError(f"unknown hardware mode {mode!r} (expected one of {MODES})")
    for name, v in (("lanes", lanes), ("word", word)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise BitsnnError(f"{name} must be a positive integer, not {v!r}")


def layer_counts(model, golden, *, mode: str = "event", lanes: int = 32, word: int = 32,
                 max_neurons_per_core: int | None = None) -> list[LayerCounts]:
    """Spikes, synaptic events and weight-memory reads per layer and image.

    Weight memory (hw/core.py): event mode, a core of n_c neurons has P_c = min(P, n_c)-bit words
    and reads ceil(n_c / P_c) of them per input event; dense mode, P_c*W-bit words, all
    ceil(n_c / P_c) * ceil(n_in / W) of them per image whatever the input.
    """
    _check_hw(mode, lanes, word)
    plan = HardwarePlan.of(model, mode=mode, lanes=int(lanes), word=int(word), max_neurons_per_core=max_neurons_per_core)
    B = golden.input_events.shape[0]
    out = []
    for l, (layer, lp) in enumerate(zip(model.layers, plan.layers)):
        ev = np.asarray(golden.input_events[:, l], dtype=np.int64)
        if mode == "event":
            words = ev * lp.weight_words_per_event()
            bits = ev * lp.weight_read_bits_per_event()
            word_bits = lp.cores[0].lanes
        else:
            words = np.full(B, lp.weight_words_per_event() * lp.input_words, np.int64)
            bits = np.full(B, lp.weight_read_bits_per_event() * word * lp.input_words, np.int64)
            word_bits = lp.cores[0].lanes * word
        spikes = None if layer.is_output else np.asarray(golden.spike_counts[:, l], dtype=np.int64)
        acc_words, acc_word_bits = None, 0
        if lp.conv is not None:
            acc_words = np.asarray(lp.conv.acc_word_accesses(ev), np.int64)
            acc_word_bits = lp.conv.lanes * lp.conv.acc_bits
        out.append(LayerCounts(
            name=layer.name, n_in=layer.n_in, n_out=layer.n_out, acc_bits=acc_bits(layer), word_bits=word_bits,
            input_events=ev, synaptic_events=np.asarray(golden.synaptic_events[:, l], np.int64), output_spikes=spikes,
            weight_words=np.asarray(words, np.int64), weight_bits=np.asarray(bits, np.int64),
            compares=(layer.n_out - 1 if layer.is_output
                      else layer.channels * layer.in_shape[1] * layer.in_shape[2] if lp.conv else layer.n_out),
            acc_words=acc_words, acc_word_bits=acc_word_bits,
        ))
    return out


# ---- energy ----------------------------------------------------------------------------------


def _add_constant(bits: int) -> str:
    if bits <= 8:
        return "int8_add"
    if bits <= 16:
        return "int16_add"
    if bits <= 32:
        return "int32_add"
    raise BitsnnError(f"a {bits}-bit accumulator is beyond the 32-bit add of the energy table")


def asic_energy(counts: list[LayerCounts], constants: dict | None = None) -> dict:
    """(a) SNN energy per image from operation counts and Horowitz's 45 nm constants (ASIC).

    Per layer: synaptic events and compares cost one integer add of the accumulator's width (8,
    16 or 32 bits, rounded up); weight reads cost E_sram64 per 64 bits, and so does each 64 bits
    of accumulator memory read or written (a convolution's ring of rows). Returns joules, (B,)
    arrays under ``per_image`` and means elsewhere.
    """
    c = HOROWITZ_45NM if constants is None else constants
    layers, total = [], 0.0
    for lc in counts:
        add = _add_constant(lc.acc_bits)
        e_add = c[add].value
        adds = lc.synaptic_events * e_add
        cmp_ = lc.compares * e_add
        reads = lc.weight_bits / 64.0 * c["sram_8kb_read64"].value
        # an accumulator memory (a convolution's rows) is read and written back: a write costed as a read
        acc = (0.0 if lc.acc_words is None
               else 2 * lc.acc_words * lc.acc_word_bits / 64.0 * c["sram_8kb_read64"].value)
        e = adds + cmp_ + reads + acc
        total = total + e
        layers.append({"name": lc.name, "add_constant": add, "adds_j": float(np.mean(adds)),
                       "compares_j": float(cmp_), "weight_reads_j": float(np.mean(reads)),
                       "accumulator_memory_j": float(np.mean(acc)), "total_j": float(np.mean(e))})
    per_image = np.asarray(total, np.float64)
    return {"per_image": per_image, "mean_j": float(per_image.mean()), "std_j": float(per_image.std()),
            "layers": layers}


def ann_fp32_energy(model, constants: dict | None = None) -> dict:
    """Energy of the equivalent fp32 ANN on the same network (same 45 nm constants):
    every MAC is one fp32 multiply and one fp32 add; every fp32 weight is read once from SRAM
    (32 of the 64 bits of E_sram64). Activation traffic is not counted (nor is it for the SNN)."""
    c = HOROWITZ_45NM if constants is None else constants
    macs = sum(l.macs for l in model.layers)
    mac_j = macs * (c["fp32_mult"].value + c["fp32_add"].value)
    read_j = macs * 32 / 64 * c["sram_8kb_read64"].value
    return {"macs": macs, "macs_j": mac_j, "weight_reads_j": read_j, "total_j": mac_j + read_j}


def timing(cycles, clock_hz: float) -> dict:
    """Cycles per image -> latency and throughput at ``clock_hz`` (one inference at a time)."""
    cycles = np.asarray(cycles, dtype=np.float64)
    if cycles.ndim != 1 or cycles.size == 0:
        raise BitsnnError("cycles must be a non-empty 1-D array (one count per image)")
    if not (clock_hz > 0 and math.isfinite(clock_hz)):
        raise BitsnnError(f"clock frequency must be positive, not {clock_hz!r}")
    mean = float(cycles.mean())
    return {
        "cycles": {"mean": mean, "std": float(cycles.std()), "min": float(cycles.min()), "max": float(cycles.max())},
        "clock_hz": float(clock_hz),
        "latency_s": {"mean": mean / clock_hz, "min": float(cycles.min()) / clock_hz,
                      "max": float(cycles.max()) / clock_hz},
        "inferences_per_s": clock_hz / mean,
    }


def fpga_energy(latency_s: float, cycles: float, toggles: float | None, power: FpgaPowerModel) -> dict:
    """(b) FPGA energy of one inference: P_static * latency + cycles * E_clock + toggles * E_toggle.

    ``toggles``: signal-bit toggles of one inference (from :func:`count_toggles`), None if no
    waveform was given. A term with an unknown constant or input is null; ``total_j`` sums the
    known terms and ``lower_bound`` says whether any term was left out.
    """
    terms = {
        "static_j": None if power.static_w is None else power.static_w * latency_s,
        "clock_j": None if power.clock_j_per_cycle is None else power.clock_j_per_cycle * cycles,
        "toggle_j": None if (power.toggle_j is None or toggles is None) else power.toggle_j * toggles,
    }
    known = [v for v in terms.values() if v is not None]
    unknown = [k for k, v in terms.items() if v is None]
    return {
        **terms,
        "total_j": float(sum(known)) if known else None,
        "lower_bound": bool(unknown),
        "unknown_terms": unknown,
        "toggles": toggles,
        "device": power.device,
        "static_w": power.static_w,
        "clock_j_per_cycle": power.clock_j_per_cycle,
        "toggle_j_each": power.toggle_j,
    }


# ---- toggle counting from a VCD --------------------------------------------------------------


@dataclass
class ToggleCounts:
    """Bit toggles per signal counted from a VCD file.

    ``toggles``: full hierarchical name -> bit toggles (0->1 or 1->0 of any bit; changes from or to
    x/z are not counted); ``widths``: name -> bits; ``cycles``: rising edges of the clock in the
    counted window (None when no clock was found); ``clock``: the clock's name; ``per_bit``
    (only when asked for): name -> toggles of each bit, least significant first.
    Signals sharing one VCD identifier are one net: it is counted once, under its first name.
    """

    toggles: dict[str, int]
    widths: dict[str, int]
    cycles: int | None
    clock: str | None
    t_start: int = 0
    t_end: int | None = None
    timescale: str = ""
    per_bit: dict[str, list[int]] | None = None

    @property
    def total(self) -> int:
        return int(sum(self.toggles.values()))

    def per_cycle(self) -> float:
        """Toggles per clock cycle over all counted signals."""
        if not self.cycles:
            raise BitsnnError("the waveform has no clock edges in the counted window: toggles per cycle unknown")
        return self.total / self.cycles

    def per_signal_per_cycle(self) -> dict[str, float]:
        if not self.cycles:
            raise BitsnnError("the waveform has no clock edges in the counted window: toggles per cycle unknown")
        return {k: v / self.cycles for k, v in self.toggles.items()}


def _parse_bits(value, size: int) -> tuple[int, int]:
    """A VCD value -> (bits with x/z as 0, mask of x/z bits)."""
    if isinstance(value, int):
        return value, 0
    s = str(value).lower()
    if len(s) < size:
        s = (s[0] if s and s[0] in "xz" else "0") * (size - len(s)) + s
    v = m = 0
    for ch in s:
        v <<= 1
        m <<= 1
        if ch == "1":
            v |= 1
        elif ch != "0":
            m |= 1
    return v, m


class _HeaderFixed(io.RawIOBase):
    """A VCD byte stream whose header (up to ``$enddefinitions``) is rewritten so that pyvcd can
    parse it: Amaranth names anonymous signals ``$signal``, which pyvcd rejects as a reference, so
    a reference starting with ``$`` gets a ``_`` instead. The value changes are streamed as is."""

    _VAR = re.compile(rb"(\$var\s+\S+\s+\d+\s+\S+\s+)\$(?!end\b)(\S+)")

    def __init__(self, f):
        head = bytearray()
        while True:
            line = f.readline()
            head += line
            if not line or b"$enddefinitions" in line:
                break
        self._head = memoryview(bytes(self._VAR.sub(rb"\1_\2", bytes(head))))
        self._f = f

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._f.readinto(b)


def count_toggles(path: str | os.PathLike, *, clock: str = "clk", exclude=(), t_start: int = 0,
                  t_end: int | None = None, per_bit: bool = False) -> ToggleCounts:
    """Count bit toggles per signal in a VCD (Amaranth's ``Simulator.write_vcd``, Icarus, Verilator).

    ``clock``: the last component of the clock's name; its net is excluded from the toggles (the
    clock network is costed per cycle, not per toggle) and its rising edges are the cycles.
    ``exclude``: more signal names (last component or full name) not to count.
    ``t_start``/``t_end``: count changes at VCD times t_start <= t < t_end (the values before the
    window are tracked, so the first change inside it counts correctly). The initial values
    (``$dumpvars`` or a signal's first value) are never toggles. ``per_bit``: also count each
    bit separately (slower).
    """
    from vcd.reader import TokenKind, VCDParseError, tokenize

    path = Path(path)
    exclude = set(exclude)
    names: dict[str, str] = {}  # id_code -> first full name
    sizes: dict[str, int] = {}
    skip: set[str] = set()
    clock_ids: set[str] = set()
    clock_name = None
    scope: list[str] = []
    state: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    bit_counts: dict[str, list[int]] = {}
    cycles = 0
    t = 0
    timescale = ""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BitsnnError(f"cannot read waveform {path}: {e.strerror}") from None
    try:
        with f:
            for tok in tokenize(_HeaderFixed(f)):
                kind = tok.kind
                if kind is TokenKind.CHANGE_SCALAR or kind is TokenKind.CHANGE_VECTOR:
                    idc, value = tok.data.id_code, tok.data.value
                    if idc not in sizes or idc in skip:
                        continue
                    new = _parse_bits(value, sizes[idc])
                    old = state.get(idc)
                    state[idc] = new
                    if old is None:
                        continue
                    inside = t >= t_start and (t_end is None or t < t_end)
                    if not inside:
                        continue
                    if idc in clock_ids:
                        if old == (0, 0) and new == (1, 0):
                            cycles += 1
                        continue
                    flips = (old[0] ^ new[0]) & ~(old[1] | new[1])
                    if flips:
                        counts[idc] = counts.get(idc, 0) + int(flips).bit_count()
                        if per_bit:
                            bc = bit_counts.setdefault(idc, [0] * sizes[idc])
                            while flips:
                                low = flips & -flips
                                bc[low.bit_length() - 1] += 1
                                flips ^= low
                elif kind is TokenKind.CHANGE_TIME:
                    t = tok.data
                elif kind is TokenKind.VAR:
                    var = tok.data
                    full = ".".join(scope + [var.reference])
                    idc = var.id_code
                    if var.type_.name in ("real", "realtime", "string", "event"):
                        skip.add(idc)
                        continue
                    if var.reference in exclude or full in exclude:
                        skip.add(idc)
                    if var.reference == clock and var.size == 1 and (clock_name is None or idc in clock_ids):
                        clock_ids.add(idc)
                        clock_name = clock_name or full
                    if idc not in names:
                        names[idc] = full
                        sizes[idc] = var.size
                elif kind is TokenKind.SCOPE:
                    scope.append(tok.data.ident)
                elif kind is TokenKind.UPSCOPE:
                    if scope:
                        scope.pop()
                elif kind is TokenKind.TIMESCALE:
                    ts = tok.data
                    timescale = f"{ts.magnitude.value} {ts.unit.value}"
    except VCDParseError as e:
        raise BitsnnError(f"{path}: not a readable VCD file ({e})") from None
    if not names:
        raise BitsnnError(f"{path}: the waveform declares no signals")
    toggles = {names[i]: counts.get(i, 0) for i in names if i not in skip and i not in clock_ids}
    widths = {names[i]: sizes[i] for i in names if i not in skip and i not in clock_ids}
    bits = None
    if per_bit:
        bits = {names[i]: bit_counts.get(i, [0] * sizes[i]) for i in names if i not in skip and i not in clock_ids}
    return ToggleCounts(toggles=toggles, widths=widths, cycles=cycles if clock_ids else None,
                        clock=clock_name, t_start=t_start, t_end=t_end, timescale=timescale, per_bit=bits)


# ---- build reports ---------------------------------------------------------------------------


def check_build_report(report, source: str = "build report") -> dict:
    """Check the fields this report reads (``fmax_mhz``, ``utilisation``); raise BitsnnError."""
    if not isinstance(report, dict):
        raise BitsnnError(f"{source}: not a JSON object")
    fmax = report.get("fmax_mhz")
    if isinstance(fmax, bool) or not isinstance(fmax, (int, float)):
        raise BitsnnError(f"{source}: missing or non-numeric field 'fmax_mhz'")
    if not fmax > 0:
        raise BitsnnError(f"{source}: 'fmax_mhz' is {fmax}: the build has no timed clock")
    util = report.get("utilisation")
    if not isinstance(util, dict) or not util:
        raise BitsnnError(f"{source}: missing field 'utilisation'")
    for name, entry in util.items():
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                                                and entry.get(k) >= 0 for k in ("used", "available"))):
            raise BitsnnError(f"{source}: utilisation of {name!r} needs non-negative integers 'used' and 'available'")
    return report


def load_build_report(build_dir: str | os.PathLike) -> dict:
    """``report.json`` of a ``bitsnn build`` output directory, checked."""
    path = Path(build_dir) / "report.json"
    try:
        text = path.read_text()
    except OSError as e:
        raise BitsnnError(f"cannot read build report {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BitsnnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return check_build_report(data, str(path))


# ---- the report ------------------------------------------------------------------------------


def _constants_table(board: str | None) -> dict:
    table = {k: asdict(v) for k, v in HOROWITZ_45NM.items()}
    p = FPGA_POWER.get(board) if board else None
    if p is not None:
        table["fpga_static_w"] = {"value": p.static_w, "unit": "W", "source": p.static_source}
        table["fpga_clock_per_cycle"] = {"value": p.clock_j_per_cycle, "unit": "J", "source": p.clock_source}
        table["fpga_toggle"] = {"value": p.toggle_j, "unit": "J", "source": p.toggle_source}
    return table


def build_report(model, golden, cycles, *, board: str, clock_hz: float, clock_source: str,
                 mode: str = "event", lanes: int = 32, word: int = 32, max_neurons_per_core: int | None = None,
                 labels=None, build: dict | None = None, toggles_per_cycle: float | None = None,
                 toggles_source: str = "", cycles_source: str = "", model_path: str | None = None,
                 power: FpgaPowerModel | None = None) -> dict:
    """The whole report as a JSON-ready dict (keys: :data:`REPORT_KEYS`).

    ``cycles``: (B,) cycles per image (``bitsnn.sim.cycles.predict_cycles`` or the hardware's own);
    ``toggles_per_cycle``: from :func:`count_toggles` on a waveform of this design, or None;
    toggles per inference are estimated as toggles_per_cycle x cycles.
    """
    cycles = np.asarray(cycles)
    B = golden.input_events.shape[0]
    if cycles.shape != (B,):
        raise BitsnnError(f"cycles has shape {cycles.shape}, expected ({B},): one count per image")
    if build is not None:
        check_build_report(build)
    counts = layer_counts(model, golden, mode=mode, lanes=lanes, word=word, max_neurons_per_core=max_neurons_per_core)
    tim = timing(cycles, clock_hz)
    tim.update(cycles_source=cycles_source, clock_source=clock_source)
    asic = asic_energy(counts)
    ann = ann_fp32_energy(model)
    power = power if power is not None else FPGA_POWER.get(board)
    toggles = None if toggles_per_cycle is None else float(toggles_per_cycle) * tim["cycles"]["mean"]
    if power is None:
        fpga = {"total_j": None, "lower_bound": True, "unknown_terms": ["static_j", "clock_j", "toggle_j"],
                "note": f"no FPGA power model for board {board!r}"}
    else:
        fpga = fpga_energy(tim["latency_s"]["mean"], tim["cycles"]["mean"], toggles, power)
    fpga["toggles_per_cycle"] = toggles_per_cycle
    fpga["toggles_source"] = toggles_source or ("none: no waveform given" if toggles_per_cycle is None else "")
    spikes = [lc.output_spikes for lc in counts if lc.output_spikes is not None]
    total_spikes = np.sum(spikes, axis=0) if spikes else np.zeros(B, np.int64)
    accuracy = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (B,):
            raise BitsnnError(f"labels has shape {labels.shape}, expected ({B},)")
        accuracy = float(np.mean(golden.classes == labels))
    return {
        "report_version": REPORT_VERSION,
        "model": {"path": model_path, "content_hash": model.content_hash, "describe": model.describe(),
                  "sizes": model.sizes, "input_encoding": model.input_encoding,
                  "weight_bits": model.weight_bits_total},
        "board": {"name": board, "device": getattr(power, "device", None)},
        "hardware": {"mode": mode, "lanes": int(lanes), "word": int(word),
                     "max_neurons_per_core": max_neurons_per_core},
        "images": int(B),
        "accuracy": accuracy,
        "layers": [lc.summary() for lc in counts],
        "totals": {
            "spikes_mean": float(total_spikes.mean()),
            "synaptic_events_mean": float(sum(lc.synaptic_events for lc in counts).mean()),
            "weight_reads_bits_mean": float(sum(lc.weight_bits for lc in counts).mean()),
            "weight_reads_words_mean": float(sum(lc.weight_words for lc in counts).mean()),
            "macs_dense": ann["macs"],
        },
        "timing": tim,
        "energy": {
            "asic_45nm": {
                "note": "Horowitz 45 nm 0.9 V ASIC figures, not FPGA: an operation-count comparison only",
                "snn_j": asic["mean_j"], "snn_std_j": asic["std_j"], "snn_layers": asic["layers"],
                "ann_fp32_j": ann["total_j"], "ann_fp32": ann,
                "ann_over_snn": ann["total_j"] / asic["mean_j"] if asic["mean_j"] > 0 else None,
            },
            "fpga": fpga,
        },
        "constants": _constants_table(board),
        "build": build,
        "plots": [],
    }


# ---- plots -----------------------------------------------------------------------------------


def _figure(w=6.4, h=4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_spike_raster(golden, path, *, index: int = 0, model=None) -> Path:
    """Spike raster of one inference: one column per stage (input events, each hidden layer),
    a dot per active neuron; the output column marks the predicted class."""
    B = golden.inputs.shape[0]
    if not 0 <= index < B:
        raise BitsnnError(f"image index {index} outside 0..{B - 1}")
    stages = [("input", golden.inputs[index] != 0)] + [
        (model.layers[i].name if model else f"layer {i}", s[index] != 0) for i, s in enumerate(golden.spikes)]
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for x, (name, active) in enumerate(stages):
        n = active.size
        idx = np.flatnonzero(active)
        ax.scatter(np.full(idx.size, x), idx / max(n - 1, 1), s=60, marker="_", linewidths=1.0, color="k")
    xo = len(stages)
    C = golden.scores.shape[1]
    ax.scatter([xo], [golden.classes[index] / max(C - 1, 1)], s=40, marker="s", color="tab:red")
    labels = [f"{n}\n({a.sum()}/{a.size})" for n, a in stages] + [f"class\n{int(golden.classes[index])}"]
    ax.set_xticks(range(xo + 1), labels, fontsize=8)
    ax.set_ylabel("neuron (fraction of layer)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Spikes of one inference (image {index})")
    return _save(fig, path)


def plot_feature_maps(golden, model, path, *, index: int = 0, max_channels: int = 16) -> Path:
    """The spike picture of one inference as feature maps: the input image, then each
    convolution's output maps (one panel per channel, up to ``max_channels``; white = spike)."""
    B = golden.inputs.shape[0]
    if not 0 <= index < B:
        raise BitsnnError(f"image index {index} outside 0..{B - 1}")
    convs = [(i, l) for i, l in enumerate(model.layers) if l.kind == "binary_conv2d"]
    if not convs:
        raise BitsnnError("the model has no convolution to draw as feature maps")
    rows = [("input", golden.inputs[index].reshape(1, *convs[0][1].in_shape[1:]))]
    for i, l in convs:
        rows.append((f"{l.name} ({int(golden.spikes[i][index].sum())} spikes)",
                     golden.spikes[i][index].reshape(l.out_shape)[:max_channels]))
    cols = max(m.shape[0] for _, m in rows)
    fig = _figure(1.0 * cols + 1, 1.15 * len(rows) + 0.4)
    for r, (name, maps) in enumerate(rows):
        for c in range(maps.shape[0]):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(maps[c], cmap="gray", vmin=0, vmax=1 if r else max(1, int(maps.max())),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"Feature maps of one inference (image {index}, class {int(golden.classes[index])})", fontsize=9)
    return _save(fig, path)


def plot_spikes_per_layer(spike_counts, path, *, names=None) -> Path:
    """Bar chart of spikes per hidden layer, mean +- std over images; ``spike_counts`` (B, L)."""
    sc = np.asarray(spike_counts, dtype=np.float64)
    if sc.ndim != 2 or sc.shape[0] == 0 or sc.shape[1] == 0:
        raise BitsnnError(f"spike counts must be a non-empty (images, layers) array, not shape {sc.shape}")
    names = list(names) if names is not None else [f"layer {i}" for i in range(sc.shape[1])]
    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(range(sc.shape[1]), sc.mean(axis=0), yerr=sc.std(axis=0), capsize=4, color="tab:blue")
    ax.set_xticks(range(sc.shape[1]), names)
    ax.set_ylabel("spikes per inference")
    ax.set_title(f"Spikes per layer (mean ± std over {sc.shape[0]} images)")
    return _save(fig, path)


def plot_accuracy_energy(points, path, *, energy_label: str = "energy per inference (nJ, 45 nm op-count model)") -> Path:
    """Accuracy vs energy across sparsity settings: ``points`` is a list of (label, accuracy, energy_j)."""
    pts = list(points)
    if not pts:
        raise BitsnnError("no (label, accuracy, energy) points to plot")
    for p in pts:
        if len(p) != 3 or not all(isinstance(v, (int, float, np.floating, np.integer)) for v in p[1:]):
            raise BitsnnError(f"each point must be (label, accuracy, energy), not {p!r}")
        if not p[2] > 0:
            raise BitsnnError(f"energy of point {p[0]!r} must be positive, not {p[2]}")
    fig = _figure()
    ax = fig.add_subplot()
    e = [float(p[2]) * 1e9 for p in pts]
    a = [100 * float(p[1]) for p in pts]
    ax.plot(e, a, "o-", color="tab:green")
    for (label, _acc, _en), x, y in zip(pts, e, a):
        ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if max(e) > 10 * min(e):
        ax.set_xscale("log")
    ax.set_xlabel(energy_label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs energy")
    return _save(fig, path)


def plot_utilisation(build: dict, path) -> Path:
    """Used/available per resource from a build report dict (resources the device lacks are skipped)."""
    check_build_report(build)
    items = [(k, v["used"], v["available"]) for k, v in build["utilisation"].items() if v["available"] > 0]
    if not items:
        raise BitsnnError("build report: no resource with a nonzero 'available'")
    fig = _figure()
    ax = fig.add_subplot()
    frac = [u / a * 100 for _, u, a in items]
    ax.barh(range(len(items)), frac, color=["tab:red" if f > 100 else "tab:blue" for f in frac])
    ax.set_yticks(range(len(items)), [f"{k} ({u}/{a})" for k, u, a in items])
    ax.set_xlim(0, max(100, max(frac) * 1.05))
    ax.axvline(100, color="k", lw=0.8)
    ax.set_xlabel("utilisation (%)")
    ax.set_title(f"{build.get('board', '')} {build.get('device', '')}: Fmax {build['fmax_mhz']} MHz".strip())
    return _save(fig, path)


def write_report(report: dict, outdir, *, model=None, golden=None, build: dict | None = None,
                 sweep=None) -> dict:
    """Write ``report.json`` and the plots into ``outdir`` atomically; return the report with
    its ``plots`` list filled in. ``sweep``: optional (label, accuracy, energy) points."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plots = []
    if golden is not None:
        plots.append(plot_spike_raster(golden, outdir / "spike_raster.png", model=model).name)
        if any(l.kind == "binary_conv2d" for l in model.layers):
            plots.append(plot_feature_maps(golden, model, outdir / "feature_maps.png").name)
        if golden.spike_counts.shape[1]:
            names = [l.name for l in model.hidden_layers] if model is not None else None
            plots.append(plot_spikes_per_layer(golden.spike_counts, outdir / "spikes_per_layer.png", names=names).name)
    if build is not None:
        plots.append(plot_utilisation(build, outdir / "utilisation.png").name)
    if sweep:
        plots.append(plot_accuracy_energy(sweep, outdir / "accuracy_energy.png").name)
    report = dict(report, plots=plots)
    atomic_write_text(outdir / "report.json", json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---- CLI -------------------------------------------------------------------------------------


def _fmt_j(j):
    if j is None:
        return "unknown"
    for unit, s in (("J", 1), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(j) >= s:
            return f"{j / s:.3g} {unit}"
    return f"{j / 1e-15:.3g} fJ"


def summary_lines(report: dict) -> list[str]:
    t, e = report["timing"], report["energy"]
    lines = [f"model {report['model']['describe']}; {report['images']} images"
             + (f", accuracy {report['accuracy']:.4f}" if report["accuracy"] is not None else "")]
    for l in report["layers"]:
        sp = l["output_spikes"]
        lines.append(
            f"  {l['name']}: input events {l['input_events']['mean']:.1f}, synaptic events "
            f"{l['synaptic_events']['mean']:.0f}, " + (f"spikes {sp['mean']:.1f} ± {sp['std']:.1f}, " if sp else "")
            + f"weight reads {l['weight_reads_words']['mean']:.0f} x {l['weight_word_bits']}-bit words"
            + (f", accumulator memory {l['accumulator_reads_words']['mean']:.0f} x {l['accumulator_word_bits']}-bit "
               "words read and written" if l.get("accumulator_word_bits") else ""))
    lines.append(f"cycles {t['cycles']['mean']:.0f} (min {t['cycles']['min']:.0f}, max {t['cycles']['max']:.0f}; "
                 f"{t['cycles_source']}); clock {t['clock_hz'] / 1e6:.2f} MHz ({t['clock_source']})")
    lines.append(f"latency {t['latency_s']['mean'] * 1e6:.2f} us (max {t['latency_s']['max'] * 1e6:.2f} us), "
                 f"{t['inferences_per_s']:.0f} inferences/s"
                 + (f"; at the achieved Fmax {t['at_fmax']['clock_hz'] / 1e6:.1f} MHz: "
                    f"{t['at_fmax']['latency_s']['mean'] * 1e6:.2f} us" if "at_fmax" in t else ""))
    a = e["asic_45nm"]
    lines.append(f"energy (a) 45 nm ASIC op model: SNN {_fmt_j(a['snn_j'])}, fp32 ANN {_fmt_j(a['ann_fp32_j'])}"
                 + (f" ({a['ann_over_snn']:.0f}x)" if a["ann_over_snn"] else ""))
    f = e["fpga"]
    lines.append(f"energy (b) FPGA: {_fmt_j(f.get('total_j'))}"
                 + (f" (lower bound: unknown {', '.join(f['unknown_terms'])})" if f.get("lower_bound") else ""))
    if report.get("sweep"):
        lines.append("sweep (accuracy vs energy):")
        for row in report["sweep"]:
            acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            lines.append(f"  {row['label']:>14}: accuracy {acc}, {row['spikes_mean']:.1f} spikes, "
                         f"{row['cycles_mean']:.0f} cycles, ASIC {_fmt_j(row['asic_snn_j'])}, "
                         f"FPGA {_fmt_j(row['fpga_j'])}")
    return lines


def sweep_point(model, report: dict, path: str) -> dict:
    """One row of a sparsity sweep: the model's label (its training sparsity when the file records
    it), accuracy, spikes, cycles and energies from its report."""
    lam = ((model.meta or {}).get("training") or {}).get("sparsity")
    return {
        "model": path,
        "label": f"lambda={lam:g}" if isinstance(lam, (int, float)) else Path(path).stem,
        "sparsity": lam,
        "accuracy": report["accuracy"],
        "spikes_mean": report["totals"]["spikes_mean"],
        "synaptic_events_mean": report["totals"]["synaptic_events_mean"],
        "cycles_mean": report["timing"]["cycles"]["mean"],
        "asic_snn_j": report["energy"]["asic_45nm"]["snn_j"],
        "fpga_j": report["energy"]["fpga"].get("total_j"),
    }


def report_main(args) -> int:
    """``bitsnn report``."""
    return make_report(args.model, board=args.board, build_dir=args.build_dir, output=args.output,
                       images=args.images, mode=args.mode, lanes=args.lanes, word=args.word, vcd=args.vcd,
                       sweep=args.sweep, data_dir=args.data_dir)


def make_report(model_path, *, board: str = "icebreaker", build_dir=None, output=None, images: int | None = None,
                mode: str | None = None, lanes: int | None = None, word: int | None = None, vcd=None,
                sweep=None, data_dir=None, say=print) -> int:
    """Load the hardware model ``model_path`` and the test set, run golden, cycles, energy and
    plots, print the summary with ``say`` and, with ``output``, write report.json and the plots
    there. ``images``: the first N test images (None: all). ``mode``/``lanes``/``word`` default to
    the build report's in ``build_dir``, else event mode with the lanes ``bitsnn build`` picks.
    ``sweep``: more hardware-model files of the same network. Every path and option is checked
    before the work starts."""
    from .hwmodel import HardwareModel

    model = HardwareModel.load(model_path)
    check_supported(model)  # before any work
    if output is not None:
        check_output_dir(output)  # before any work
    sweep_models = []
    for path in sweep or ():
        m = HardwareModel.load(path)
        if m.sizes != model.sizes or m.input_encoding != model.input_encoding:
            raise BitsnnError(f"--sweep {path}: {m.describe()} is not the same network as {model.describe()}")
        sweep_models.append((path, m))
    from .boards import board_facts

    board = board_facts(board)
    build = load_build_report(build_dir) if build_dir else None
    accel = (build or {}).get("accelerator") or {}
    given = {"mode": mode, "lanes": lanes, "word": word}

    def pick(name, default):
        v = given[name]
        return accel.get(name, default) if v is None else v

    mode, lanes, word = pick("mode", "event"), pick("lanes", default_lanes(model)), pick("word", 32)
    mnpc = accel.get("max_neurons_per_core")
    _check_hw(mode, lanes, word)

    from .data import load_dataset
    from .sim import cycles as cycles_mod
    from .sim import golden as golden_mod

    data = load_dataset(data_dir)
    n = images
    if n is None:
        n = len(data.test_images)
    elif not 1 <= n <= len(data.test_images):
        raise BitsnnError(f"--images {n}: must be in 1..{len(data.test_images)}, the test set's size")
    images, labels = data.test_images[:n], data.test_labels[:n]
    try:
        images = model.prepare_images(images)
    except ValueError as e:
        raise BitsnnError(f"the data set's images do not suit the model: {e}") from None
    golden = golden_mod.run(model, images)
    cycles = cycles_mod.predict_cycles(model, golden, mode=mode, lanes=lanes, word=word,
                                       max_neurons_per_core=mnpc)
    # The bitstream runs at the board's PLL clock; the achieved Fmax says how much faster it could.
    clock_hz = board.clk_freq
    if build is not None and build.get("constraint_mhz"):
        clock_hz = float(build["constraint_mhz"]) * 1e6  # the PLL the bitstream was built for (--clock-mhz)
    if build is not None:
        clock_source = (f"{board.name} PLL clock of the built bitstream (achieved Fmax {build['fmax_mhz']:.2f} MHz, "
                        f"timing {'met' if build['fmax_mhz'] * 1e6 >= clock_hz else 'NOT met'}; "
                        f"{Path(build_dir) / 'report.json'})")
    else:
        clock_source = f"{board.name} PLL clock (no build dir given: Fmax not measured)"
    tpc, tsrc = None, ""
    if vcd:
        tc = count_toggles(vcd)
        tpc = tc.per_cycle()
        tsrc = f"{vcd}: {tc.total} toggles over {tc.cycles} cycles of {tc.clock}"
    report = build_report(model, golden, cycles, board=board.name, clock_hz=clock_hz, clock_source=clock_source,
                          mode=mode, lanes=lanes, word=word, max_neurons_per_core=mnpc, labels=labels, build=build,
                          toggles_per_cycle=tpc, toggles_source=tsrc,
                          cycles_source="bitsnn.sim.cycles.predict_cycles (exact model of the Accelerator)",
                          model_path=str(model_path))
    if build is not None:
        report["timing"]["at_fmax"] = timing(cycles, build["fmax_mhz"] * 1e6)
    sweep_plot = None
    if sweep_models:
        rows = [sweep_point(model, report, str(model_path))]
        for path, m in sweep_models:
            g = golden_mod.run(m, images)
            c = cycles_mod.predict_cycles(m, g, mode=mode, lanes=lanes, word=word, max_neurons_per_core=mnpc)
            r = build_report(m, g, c, board=board.name, clock_hz=clock_hz, clock_source=clock_source, mode=mode,
                             lanes=lanes, word=word, max_neurons_per_core=mnpc, labels=labels, model_path=str(path))
            rows.append(sweep_point(m, r, str(path)))
        rows.sort(key=lambda row: row["asic_snn_j"])
        report["sweep"] = rows
        sweep_plot = [(row["label"], row["accuracy"], row["asic_snn_j"]) for row in rows]
    if output:
        report = write_report(report, output, model=model, golden=golden, build=build, sweep=sweep_plot)
    for line in summary_lines(report):
        say(line)
    if output:
        say(f"wrote {Path(output) / 'report.json'} and {len(report['plots'])} plots")
    return 0
