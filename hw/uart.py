"""8N1 UART receiver and transmitter.

Both take the clock frequency and the baud rate and derive the divisor (clock cycles per bit,
``round(clk_freq / baud)``, at least ``MIN_DIVISOR``; :mod:`bitsnn.link` holds the rate facts).
A frame is one start bit (0), eight data bits LSB first, one stop bit (1); the line idles high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from bitsnn.link import MIN_DIVISOR, baud_divisor

__all__ = ["MIN_DIVISOR", "baud_divisor", "UARTRx", "UARTTx"]


class UARTRx(wiring.Component):
    """8N1 receiver.

    Parameters: ``clk_freq`` (Hz), ``baud`` (bit/s); ``divisor`` = clock cycles per bit.

    Ports:
    - ``rx``: In(1), the serial line (synchronised internally by two flip-flops).
    - ``data``: Out(stream of unsigned(8), always_ready): one beat per byte whose stop bit is 1,
      valid for one cycle, the cycle after the middle of the stop bit is sampled (about
      ``3 + 9.5 * divisor`` cycles after the start edge, so half a bit before the line may carry
      the next start bit).
    - ``frame_error``: Out(1), a one-cycle pulse instead of ``data.valid`` when the stop bit is 0;
      the byte is dropped.

    The start edge is checked again in the middle of the start bit (glitch rejection); every
    data bit is sampled once, in its middle.
    """

    def __init__(self, clk_freq: float, baud: float):
        self.clk_freq, self.baud = clk_freq, baud
        self.divisor = baud_divisor(clk_freq, baud)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(unsigned(8), always_ready=True)),
            "frame_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(div))
        bits = Signal(4)
        shreg = Signal(8)

        m.d.sync += [self.data.valid.eq(0), self.frame_error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):  # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(div - 1),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters: ``clk_freq`` (Hz), ``baud`` (bit/s); ``divisor`` = clock cycles per bit.

    Ports:
    - ``data``: In(stream of unsigned(8)): a byte is accepted (``ready`` high) only while the
      transmitter is idle; its start bit goes out on the next cycle. One byte takes
      ``10 * divisor`` cycles, and the next can be accepted in the cycle the stop bit ends.
    - ``tx``: Out(1), the serial line, high when idle.
    - ``busy``: Out(1), high while a frame is on the line.
    """

    def __init__(self, clk_freq: float, baud: float):
        self.clk_freq, self.baud = clk_freq, baud
        self.divisor = baud_divisor(clk_freq, baud)
        super().__init__({
            "data": In(stream.Signature(unsigned(8))),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)  # stop, data[7:0], start -- shifted out LSB first
        left = Signal(range(11))

        m.d.comb += [self.data.ready.eq(left == 0), self.busy.eq(left != 0), self.tx.eq(shreg[0])]
        with m.If(left == 0):
            with m.If(self.data.valid):
                m.d.sync += [shreg.eq((1 << 9) | (self.data.payload << 1)), left.eq(10), timer.eq(div - 1)]
        with m.Else():
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [shreg.eq((1 << 9) | (shreg >> 1)), left.eq(left - 1), timer.eq(div - 1)]
        return m
