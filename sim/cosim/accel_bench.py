"""cocotb 2.x bench for the generated Accelerator (run by :mod:`bitsnn.sim.cosim.runner`).

Structure after cocotb's matrix_multiplier example: a :class:`PixelDriver` streams each image into
``pixels``; a :class:`ResultMonitor` and an :class:`EventMonitor` collect the ``result`` words and
the ``events`` tap; an :class:`InOrderChecker` compares every image, as it completes, with the
golden model's expected values. Inputs come from ``$BITSNN_COSIM_IN`` (an .npz written by the
runner: encoded first-layer inputs... precisely the uint8 pixels, plus expected classes, scores,
spikes and cycles); everything observed goes to ``$BITSNN_COSIM_OUT`` (.npz) for the host to
report. All signals are driven and sampled on the falling clock edge, one ``await`` per cycle.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from bitsnn.sim.cosim.checks import InOrderChecker, tap_order
from bitsnn.sim.cosim.runner import WATCHDOG


def high(handle) -> bool:
    """The signal is a resolved 1 (X/Z read as 0: comb outputs can be X before first evaluated)."""
    v = handle.value
    return v.is_resolvable and int(v) == 1




class PixelDriver:
    """Drives ``pixels``: one image at a time, one pixel per cycle while ``ready``."""

    def __init__(self, dut, images):
        self.valid, self.payload, self.ready = dut.pixels__valid, dut.pixels__payload, dut.pixels__ready
        self.images = images
        self.image = -1
        self.pos = 0
        self.pending = False  # the current pixel is taken at the coming rising edge

    def start(self, b) -> bool:
        """Call at a falling edge: present image b's first pixel (same return as :meth:`step`)."""
        self.image, self.pos, self.pending = b, 0, False
        self.payload.value = int(self.images[b, 0])
        self.valid.value = 1
        return self._sample()

    def _sample(self) -> bool:
        # ready seen now is the ready of the coming rising edge, which takes the pixel on the bus
        if high(self.ready):
            self.pending = True
            return self.pos == self.images.shape[1] - 1
        return False

    def step(self) -> bool:
        """Call at each falling edge; True when the image's last pixel goes in at the next edge."""
        if self.image < 0:
            return False
        if self.pending:
            self.pending = False
            self.pos += 1
            if self.pos == self.images.shape[1]:
                self.valid.value = 0
                self.image = -1
                return False
            self.payload.value = int(self.images[self.image, self.pos])
        return self._sample()


class ResultMonitor:
    def __init__(self, dut):
        self.valid, self.payload = dut.result__valid, dut.result__payload
        dut.result__ready.value = 1
        self.words = []

    def step(self) -> bool:
        if high(self.valid):
            self.words.append(int(self.payload.value))
            return True
        return False


class EventMonitor:
    def __init__(self, dut, meta):
        self.valid, self.payload = dut.events__valid, dut.events__payload
        self.lo, self.lm = meta["layer_offset"], (1 << meta["layer_width"]) - 1
        self.ao, self.am = meta["addr_offset"], (1 << meta["addr_width"]) - 1
        self.events = []

    def step(self):
        if high(self.valid):
            v = int(self.payload.value)
            self.events.append(((v >> self.lo) & self.lm, (v >> self.ao) & self.am))


@cocotb.test()
async def accelerator_vs_golden(dut):
    meta = json.loads(os.environ["BITSNN_COSIM_META"])
    data = dict(np.load(os.environ["BITSNN_COSIM_IN"]))
    images = data["images"]
    B, n_words = images.shape[0], meta["n_words"]
    hidden = [int(n) for n in data["hidden"]]
    H, C = len(hidden), n_words - 2 - len(hidden)

    Clock(dut.clk, 10, unit="ns").start()
    dut.pixels__valid.value = 0
    dut.pixels__payload.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    driver, results, events = PixelDriver(dut, images), ResultMonitor(dut), EventMonitor(dut, meta)
    checker = InOrderChecker(data, dut._log)
    out = {
        "classes": np.zeros(B, np.int64), "scores": np.zeros((B, C), np.int64),
        "spike_counts": np.zeros((B, H), np.int64), "cycles": np.zeros(B, np.int64),
        "measured_cycles": np.zeros(B, np.int64), "sim_cycles": np.zeros(B, np.int64),
    }
    spikes = [np.zeros((B, n), np.uint8) for n in hidden]  # tap addresses

    def flat(l, row):
        """A convolution's or timed layer's tapped store bits in torch's flat order."""
        return tap_order(data, l, row)

    total = 0
    t0 = time.perf_counter()
    progress = int(os.environ.get("BITSNN_COSIM_PROGRESS", "0"))
    for b in range(B):
        results.words.clear()
        events.events.clear()
        since = 0 if driver.start(b) else None  # cycles since the last pixel went in
        n = 0
        # the image is done when all result words are in and the events tap has gone quiet
        # (the next image's pixels wait for the tap anyway: docs/accelerator-interface.md)
        while len(results.words) < n_words:
            await FallingEdge(dut.clk)
            n += 1
            assert n < WATCHDOG, f"image {b}: no result after {n} cycles"
            if since is not None:
                since += 1
            if driver.step():
                since = 0
            events.step()
            if results.step() and len(results.words) == 1:
                if since is None:
                    raise AssertionError(f"image {b}: result before the last pixel went in "
                                         f"(pixel {driver.pos} of {images.shape[1]}, cycle {n})")
                out["measured_cycles"][b] = since
        w = results.words
        out["classes"][b], out["cycles"][b] = w[0], w[1]
        out["spike_counts"][b] = w[2:2 + H]
        out["scores"][b] = [x - (1 << 32) if x & (1 << 31) else x for x in w[2 + H:]]
        # drain the tap: wait for pixels.ready (the next image may start)
        while not high(dut.pixels__ready):
            await FallingEdge(dut.clk)
            n += 1
            assert n < WATCHDOG, f"image {b}: pixels.ready stays low after the result"
            events.step()
        for layer, addr in events.events:
            spikes[layer][b, addr] = 1
        out["sim_cycles"][b] = n
        total += n
        checker.check(b, out["classes"][b], out["scores"][b], out["spike_counts"][b], out["cycles"][b],
                      [flat(l, s[b]) for l, s in enumerate(spikes)])
        if progress and (b + 1) % progress == 0:
            dt = time.perf_counter() - t0
            print(f"[cosim] {b + 1}/{B} images, {total / dt:,.0f} cycles/s, mismatches {checker.mismatches}",
                  flush=True)
    wall = time.perf_counter() - t0
    for l, s in enumerate(spikes):
        out[f"spikes{l}"] = np.stack([flat(l, row) for row in s]) if B else s
    out["wall_s"] = np.array(wall)
    np.savez(os.environ["BITSNN_COSIM_OUT"], **out)
    assert checker.mismatches == 0, f"{checker.mismatches} of {B} images differ from the golden model"
