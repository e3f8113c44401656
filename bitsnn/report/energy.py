"""Energy and timing per inference: (a) the 45 nm operation-count model with its fp32 ANN
comparison, (b) the FPGA model; latency and throughput from cycles and the clock."""

from __future__ import annotations

import math

import numpy as np

from .. import BitsnnError
from .constants import HOROWITZ_45NM, FpgaPowerModel
from .counts import LayerCounts

__all__ = ["asic_energy", "ann_fp32_energy", "timing", "fpga_energy"]


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
    16 or 32 bits, rounded up; a pixel times a b-bit weight b adds: the multiply as shift-and-add); weight reads cost E_sram64 per 64 bits, and so does each 64 bits
    of accumulator memory read or written (a convolution's ring of rows). Over time, each membrane
    update costs its adds at the membrane's width (the compare among them: then no separate
    compare). Returns joules, (B,) arrays under ``per_image`` and means elsewhere.
    """
    c = HOROWITZ_45NM if constants is None else constants
    layers, total = [], 0.0
    for lc in counts:
        add = _add_constant(lc.acc_bits)
        e_add = c[add].value
        adds = lc.synaptic_events * e_add * (1 + lc.extra_adds)
        cmp_ = 0.0 if lc.membrane_updates else lc.compares * e_add
        membrane = (lc.membrane_updates * lc.membrane_adds * c[_add_constant(lc.membrane_bits)].value
                    if lc.membrane_updates else 0.0)
        reads = lc.weight_bits / 64.0 * c["sram_8kb_read64"].value
        # an accumulator memory (a convolution's rows) is read and written back: a write costed as a read
        acc = (0.0 if lc.acc_words is None
               else 2 * lc.acc_words * lc.acc_word_bits / 64.0 * c["sram_8kb_read64"].value)
        e = adds + cmp_ + reads + acc + membrane
        total = total + e
        layers.append({"name": lc.name, "add_constant": add, "adds_j": float(np.mean(adds)),
                       "compares_j": float(cmp_), "weight_reads_j": float(np.mean(reads)),
                       "accumulator_memory_j": float(np.mean(acc)), "membranes_j": float(membrane),
                       "total_j": float(np.mean(e))})
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
