"""A stand-in for bitsnn.hw.Accelerator with the same ports (docs/accelerator-interface.md), for
testing the UART top level without the real network: it sums the pixels and answers with words
that a one-line Python model predicts."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitsnn import protocol as P


class FakeAccelerator(wiring.Component):
    """Consumes ``n_inputs`` pixels, waits ``delay`` cycles, emits ``2 + hidden + classes`` words:
    word i = (sum of pixels + 7 * i) mod 2**32 (see :func:`fake_words`)."""

    def __init__(self, hwmodel, delay: int = 20):
        self.n_inputs = hwmodel.n_inputs
        self.n_words = P.result_words(len(hwmodel.layers) - 1, hwmodel.num_classes)
        self.delay = delay
        super().__init__({
            "pixels": In(stream.Signature(unsigned(8))),
            "result": Out(stream.Signature(unsigned(32))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Signal(32)
        cnt = Signal(range(max(self.n_inputs, self.delay, self.n_words) + 1))
        with m.FSM():
            with m.State("IN"):
                m.d.comb += self.pixels.ready.eq(1)
                with m.If(self.pixels.valid):
                    m.d.sync += [acc.eq(acc + self.pixels.payload), cnt.eq(cnt + 1), self.busy.eq(1)]
                    with m.If(cnt == self.n_inputs - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == self.delay - 1):
                    m.d.sync += cnt.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.result.valid.eq(1), self.result.payload.eq(acc + 7 * cnt)]
                with m.If(self.result.ready):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == self.n_words - 1):
                        m.d.sync += [cnt.eq(0), acc.eq(0), self.busy.eq(0)]
                        m.next = "IN"
        return m


def fake_words(pixels, n_words: int) -> list[int]:
    s = int(np.frombuffer(bytes(pixels), np.uint8).sum(dtype=np.int64))
    return [(s + 7 * i) & 0xFFFFFFFF for i in range(n_words)]
