"""A simulated bitsnn device behind a pseudo-terminal: :class:`~bitsnn.hw.top.UARTTop` runs in
Amaranth's simulator in a background thread, and a pty carries the host's bytes to its ``rx`` pin
(bit by bit, 8N1, ``divisor`` clocks per bit) and its ``tx`` pin's bytes back. The host side is an
ordinary serial port (``bridge.port``, e.g. ``/dev/pts/7``) that pyserial, the :class:`Device`
driver and ``bitsnn run --port`` open like a board's.

Simulated time advances only while the simulator runs: the bridge ticks idle cycles in chunks of
one byte time while the host is silent, so the design's inter-byte timeout still fires. Fault
hooks for tests: :meth:`drop_input` (lose the next bytes from the host) and
:meth:`corrupt_input` (flip bits of a coming host byte). Linux/macOS only (``os.openpty``).

The line runs at the host's rate: the bridge reads the bit rate the host set on its end of the
pty (a standard termios rate; an unknown one counts as the design's) and times the host's bits,
and samples the design's, at that rate. A host at the wrong rate therefore gets what a board
would give it: garbled bytes both ways.
"""

from __future__ import annotations

import os
import termios
import threading
import tty

__all__ = ["SimulatedDevice"]


class SimulatedDevice:
    """``SimulatedDevice(hwmodel, divisor=8, timeout_cycles=4000, **accel)`` -- use as a context
    manager, or call :meth:`start` and :meth:`stop`. ``accel``: Accelerator parameters."""

    def __init__(self, hwmodel, *, divisor: int = 8, timeout_cycles: int = 4000, vcd=None, **accel):
        from bitsnn.hw.top import UARTTop

        self.baud = 1_000_000
        self.clk_freq = divisor * self.baud
        self.top = UARTTop(hwmodel, clk_freq=self.clk_freq, baud=self.baud, timeout_cycles=timeout_cycles, **accel)
        self.divisor = self.top.divisor
        self.vcd = vcd
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: a clean 8-bit line
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._drop = 0
        self._corrupt: list[tuple[int, int]] = []  # (bytes still to pass, xor mask)
        self.cycles = 0  # simulated clock cycles so far
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bitsnn-uart-sim", daemon=True)

    # ---- fault injection -------------------------------------------------------------------
    def drop_input(self, n: int) -> None:
        """Lose the next ``n`` bytes the host sends (they never reach ``rx``)."""
        with self._lock:
            self._drop += n

    def corrupt_input(self, after: int, mask: int = 0x01) -> None:
        """XOR ``mask`` into the host byte that comes ``after`` bytes from now (0: the next one)."""
        with self._lock:
            self._corrupt.append((after, mask))

    def _filter(self, data: bytes) -> bytes:
        with self._lock:
            out = bytearray()
            for b in data:
                if self._drop:
                    self._drop -= 1
                    continue
                keep = []
                for after, mask in self._corrupt:
                    if after == 0:
                        b ^= mask
                    else:
                        keep.append((after - 1, mask))
                self._corrupt = keep
                out.append(b)
            return bytes(out)

    def host_rate(self) -> int:
        """The bit rate the host set on the pty (the design's when it is not a standard rate)."""
        try:
            speed = termios.tcgetattr(self.master)[5]
        except (termios.error, OSError):
            return self.baud
        return _RATES.get(speed, self.baud)

    def _bit_cycles(self) -> float:
        """Clock cycles per bit of the host's line."""
        return self.clk_freq / self.host_rate()

    # ---- the simulation --------------------------------------------------------------------
    def _run(self):
        from amaranth.hdl import Signal
        from amaranth.sim import Simulator

        top, div = self.top, self.divisor
        sim = Simulator(top)
        sim.add_clock(1e-6)
        done = Signal()

        async def driver(ctx):
            while not self._stop.is_set():
                try:
                    data = os.read(self.master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError:
                    break
                data = self._filter(data)
                if not data:
                    await ctx.tick().repeat(10 * div)
                    self.cycles += 10 * div
                    continue
                self.bytes_in += len(data)
                bit = self._bit_cycles()
                t = 0.0
                for byte in data:
                    for k, level in enumerate([0] + [(byte >> i) & 1 for i in range(8)] + [1]):
                        ctx.set(top.rx, level)
                        n = round(t + bit) - round(t)
                        t += bit
                        await ctx.tick().repeat(max(1, n))
                        self.cycles += max(1, n)
            ctx.set(done, 1)

        async def monitor(ctx):
            from .link_sim import receive_byte

            while True:
                # the design's bits, sampled at the host's rate
                v = await receive_byte(ctx, top.tx, self._bit_cycles(), done)
                if v is None:
                    return
                if v >= 0:  # a good stop bit
                    os.write(self.master, bytes([v]))
                    self.bytes_out += 1

        sim.add_testbench(driver)
        sim.add_testbench(monitor)
        try:
            if self.vcd:
                with sim.write_vcd(str(self.vcd)):
                    sim.run()
            else:
                sim.run()
        except BaseException as e:  # reported by stop()
            self.error = e

    def start(self) -> "SimulatedDevice":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.error is not None:
            raise RuntimeError(f"the simulated device failed: {self.error!r}") from self.error

    def __enter__(self) -> "SimulatedDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


#: termios speed codes -> bits/s
_RATES = {getattr(termios, k): int(k[1:]) for k in dir(termios) if k.startswith("B") and k[1:].isdigit() and int(k[1:])}
