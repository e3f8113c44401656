"""Amaranth-simulator helpers for the UART and the UART top level: drive the rx pin bit by bit
from bytes, decode the tx pin back into bytes."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator


async def ticks(ctx, n: int):
    """``n`` clock edges."""
    if n > 0:
        await ctx.tick().repeat(n)


def bits_of(byte: int) -> list[int]:
    """8N1 line levels of one byte: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


async def send_bytes(ctx, pin, data, divisor: int):
    for b in data:
        for bit in bits_of(b):
            ctx.set(pin, bit)
            await ticks(ctx, divisor)


async def receive_forever(ctx, pin, divisor: int, out: list, errors: list | None = None, done=None,
                          times: list | None = None, cycle=None):
    """Decode 8N1 bytes from ``pin`` into ``out`` until the signal ``done`` goes high while the
    line is idle. (A testbench left suspended when the simulation ends warns on garbage
    collection, and the test suite treats warnings as errors: so every bench ends.) With ``times``
    and ``cycle`` (a cycle-counter signal), the value of ``cycle`` at each byte's start bit goes
    into ``times``."""
    while True:
        if done is None:
            await ctx.tick().until(pin == 0)
        else:
            await ctx.tick().until((pin == 0) | done)
            if ctx.get(pin):
                return
        t0 = ctx.get(cycle) if cycle is not None else None
        await ticks(ctx, divisor // 2)
        if ctx.get(pin):
            continue  # glitch
        v = 0
        for i in range(8):
            await ticks(ctx, divisor)
            v |= ctx.get(pin) << i
        await ticks(ctx, divisor)
        if not ctx.get(pin) and errors is not None:
            errors.append(len(out))
        out.append(v)
        if times is not None:
            times.append(t0)


def run_top(top, chunks, *, tail_cycles: int | None = None, vcd: str | None = None,
            times: list | None = None, sent: list | None = None) -> bytes:
    """Simulate ``top`` (a UARTTop): send each ``(bytes, idle cycles after)`` chunk on rx, return
    every byte seen on tx. After the last chunk the simulation runs ``tail_cycles`` more cycles
    (default: long enough for the longest response and a parser timeout).

    Timing, in clock cycles from the start: with ``times``, the cycle at which each returned
    byte's start bit appeared on tx; with ``sent``, the cycle at which each chunk's last stop bit
    ended on rx (before its idle gap)."""
    div = top.divisor
    if tail_cycles is None:
        tail_cycles = top.timeout_cycles + 10 * div * (8 + 4 * top.n_words + len(top.info))
    cycle = None
    if times is not None or sent is not None:
        m = Module()
        m.submodules.top = top
        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)
        sim = Simulator(m)
    else:
        sim = Simulator(top)
    sim.add_clock(1e-6)
    got: list[int] = []
    done = Signal()

    async def driver(ctx):
        for data, gap in chunks:
            await send_bytes(ctx, top.rx, data, div)
            if sent is not None:
                sent.append(ctx.get(cycle))
            await ticks(ctx, max(1, gap))
        await ticks(ctx, tail_cycles)
        ctx.set(done, 1)

    async def monitor(ctx):
        await receive_forever(ctx, top.tx, div, got, done=done, times=times, cycle=cycle)

    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return bytes(got)
