"""cocotb 2.x bench for :class:`~bitsnn.sim.cosim.harness.CosimHarness` (run by :mod:`bitsnn.sim.cosim.runner`).

Python touches the simulation only between batches: it writes up to ``batch`` images into the
harness's image memory (one clock cycle each), pulses ``go``, waits for ``busy`` to fall (the
simulator runs free meanwhile, clocked by the Verilog top's own clock generator) and reads each image's result record
and spike vector back (one cycle each). Every image is then compared with the golden model's
expected values as in :mod:`bitsnn.sim.cosim.accel_bench`, and everything observed goes to
``$BITSNN_COSIM_OUT`` in the same format.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from bitsnn.sim.cosim.checks import InOrderChecker, tap_order
from bitsnn.sim.cosim.harness import RecordLayout


def _bits(value, n: int) -> np.ndarray:
    """A resolved vector's bits, bit i at index i, as uint8."""
    s = str(value)
    if len(s) != n or not set(s) <= {"0", "1"}:
        raise AssertionError(f"unresolved or mis-sized spike vector ({len(s)} of {n} bits)")
    return (np.frombuffer(s.encode(), np.uint8)[::-1] - 48).astype(np.uint8)


@cocotb.test()
async def harness_vs_golden(dut):
    meta = json.loads(os.environ["BITSNN_COSIM_META"])
    data = dict(np.load(os.environ["BITSNN_COSIM_IN"]))
    images = data["images"]
    B, n_words, batch = images.shape[0], meta["n_words"], meta["batch"]
    hidden = [int(n) for n in data["hidden"]]
    H, C = len(hidden), n_words - 2 - len(hidden)
    rec = RecordLayout(n_words)
    offsets, n_bits = meta["tap_offsets"], max(1, sum(meta["taps"]))

    # the clock is the top module's own (verilog.clocked_top): no Python, no callback per edge
    for sig in (dut.load_en, dut.go, dut.count, dut.load_addr, dut.read_addr):
        sig.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    checker = InOrderChecker(data, dut._log)
    out = {
        "classes": np.zeros(B, np.int64), "scores": np.zeros((B, C), np.int64),
        "spike_counts": np.zeros((B, H), np.int64), "cycles": np.zeros(B, np.int64),
        "measured_cycles": np.zeros(B, np.int64), "sim_cycles": np.zeros(B, np.int64),
    }
    spikes = [np.zeros((B, n), np.uint8) for n in hidden]

    def flat(l, row):
        """A convolution's or timed layer's tapped store bits in torch's flat order."""
        return tap_order(data, l, row)

    packed = [int.from_bytes(images[b].tobytes(), "little") for b in range(B)]
    progress = int(os.environ.get("BITSNN_COSIM_PROGRESS", "0"))
    t0 = time.perf_counter()
    sim_s = 0.0  # wall time with the simulator running free
    for first in range(0, B, batch):
        n = min(batch, B - first)
        dut.load_en.value = 1
        for i in range(n):
            dut.load_addr.value = i
            dut.load_data.value = packed[first + i]
            await FallingEdge(dut.clk)
        dut.load_en.value = 0
        dut.count.value = n
        dut.go.value = 1
        await FallingEdge(dut.clk)
        dut.go.value = 0
        t1 = time.perf_counter()
        await FallingEdge(dut.busy)
        sim_s += time.perf_counter() - t1
        await FallingEdge(dut.clk)
        dut.read_addr.value = 0
        for i in range(n):
            await FallingEdge(dut.clk)
            r = rec.decode(int(dut.read_record.value))
            bits = _bits(dut.read_spikes.value, n_bits)
            if i + 1 < n:
                dut.read_addr.value = i + 1
            b = first + i
            assert not r["hung"], f"image {b}: no result after {r['cycles']} cycles"
            assert not r["early"], f"image {b}: result before the last pixel went in"
            w = r["words"]
            out["classes"][b], out["cycles"][b] = w[0], w[1]
            out["spike_counts"][b] = w[2:2 + H]
            out["scores"][b] = [x - (1 << 32) if x & (1 << 31) else x for x in w[2 + H:]]
            out["measured_cycles"][b], out["sim_cycles"][b] = r["measured"], r["cycles"]
            for l in range(H):
                spikes[l][b] = bits[offsets[l]:offsets[l] + hidden[l]]
            checker.check(b, out["classes"][b], out["scores"][b], out["spike_counts"][b], out["cycles"][b],
                          [flat(l, s[b]) for l, s in enumerate(spikes)])
        done = first + n
        if progress and (done // progress > first // progress or done == B):
            dt = time.perf_counter() - t0
            print(f"[cosim] {done}/{B} images, {out['sim_cycles'][:done].sum() / dt:,.0f} cycles/s, "
                  f"mismatches {checker.mismatches}", flush=True)
    wall = time.perf_counter() - t0
    for l, s in enumerate(spikes):
        out[f"spikes{l}"] = np.stack([flat(l, row) for row in s]) if B else s
    out["wall_s"] = np.array(wall)
    out["free_s"] = np.array(sim_s)
    np.savez(os.environ["BITSNN_COSIM_OUT"], **out)
    assert checker.mismatches == 0, f"{checker.mismatches} of {B} images differ from the golden model"
