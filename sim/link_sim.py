"""A host streaming INFER requests to the UART top level, in Amaranth's simulator: the transfer
that ``bitsnn report``'s end-to-end figure predicts, bit by bit on the real design.

The host sends a request frame whenever fewer than ``window`` of its requests are unanswered (with
no pause: the next frame's start bit follows the last stop bit), and decodes the design's replies
from its ``tx`` pin. Nothing else is modelled: no USB latency, no host turnaround.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitsnn import protocol as P

__all__ = ["StreamResult", "stream_requests", "receive_byte"]


@dataclass(frozen=True)
class StreamResult:
    responses: list  # protocol.Response, in arrival order
    reply_cycles: list  # the clock cycle at which each response's last stop bit ended
    cycles: int  # from the first start bit to the last response's end

    def images_per_s(self, clk_freq: float, skip: int = 0) -> float:
        """Replies per second at ``clk_freq`` between reply ``skip`` and the last one (``skip``
        drops the pipeline's filling)."""
        c = self.reply_cycles
        if len(c) - skip < 2:
            return clk_freq * len(c) / max(1, self.cycles)
        return clk_freq * (len(c) - 1 - skip) / (c[-1] - c[skip])


def _bits(byte: int):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


async def receive_byte(ctx, pin, bit: float, done):
    """Wait for a start bit on ``pin`` and decode one 8N1 byte, sampling each bit in its middle
    (``bit``: clock cycles per bit, any real number). Returns None when the signal ``done`` rises
    first, the byte's value when its stop bit is good, -1 for a glitch or a bad stop bit."""
    await ctx.tick().until((pin == 0) | done)
    if ctx.get(pin):
        return None
    await ctx.tick().repeat(max(1, round(bit / 2)))
    if ctx.get(pin):
        return -1
    v = 0
    for i in range(8):
        await ctx.tick().repeat(max(1, round(bit * (i + 1.5)) - round(bit * (i + 0.5))))
        v |= ctx.get(pin) << i
    await ctx.tick().repeat(max(1, round(bit * 9.5) - round(bit * 8.5)))
    return v if ctx.get(pin) else -1


def stream_requests(top, frames, *, window: int, max_cycles: int = 10_000_000) -> StreamResult:
    """Send the encoded request ``frames`` to ``top`` (a UARTTop) with at most ``window``
    unanswered, until every one is answered or ``max_cycles`` pass (then RuntimeError). With
    ``window`` 1, a request answered BUSY is sent again (as the host driver polls READ); the BUSY
    replies are kept in ``responses`` too."""
    from amaranth.hdl import Signal
    from amaranth.sim import Simulator

    div = top.divisor
    done = Signal()
    sim = Simulator(top)
    sim.add_clock(1e-6)
    state = {"cycle": 0, "answered": 0, "done": False}
    parser = P.ResponseParser()
    responses, reply_cycles = [], []

    async def clock(ctx):
        async for _ in ctx.tick():
            state["cycle"] += 1
            if state["done"]:
                return
            if state["cycle"] > max_cycles:
                raise RuntimeError(f"{state['answered']} of {len(frames)} requests answered after {max_cycles} cycles")

    async def host(ctx):
        sent = 0
        while state["answered"] < len(frames):
            if state.pop("again", False):
                sent -= 1
            if sent < len(frames) and sent - state["answered"] < window:
                for byte in frames[sent]:
                    for bit in _bits(byte):
                        ctx.set(top.rx, bit)
                        await ctx.tick().repeat(div)
                sent += 1
            else:
                await ctx.tick()
        state["done"] = True
        ctx.set(done, 1)

    async def device_tx(ctx):
        while True:
            v = await receive_byte(ctx, top.tx, div, done)
            if v is None:
                return
            if v < 0:
                continue
            got = parser.feed(bytes([v]))
            for r in got:
                responses.append(r)
                reply_cycles.append(state["cycle"] + div // 2)
                if window == 1 and r.status == P.Status.BUSY:
                    state["again"] = True
                else:
                    state["answered"] += 1

    sim.add_testbench(clock)
    sim.add_testbench(host)
    sim.add_testbench(device_tx)
    sim.run()
    return StreamResult(responses, reply_cycles, state["cycle"])
