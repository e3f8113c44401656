"""Shared helpers of the hardware tests: a simulator runner for one component."""

from __future__ import annotations

from amaranth.sim import Simulator


def simulate(dut, *benches, processes=()):
    """Run async testbenches (critical) and processes (background) on ``dut`` with a 1 MHz clock."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for p in processes:
        sim.add_process(p)
    for tb in benches:
        sim.add_testbench(tb)
    sim.run()


def sync_read_process(dut_addr, dut_data, words):
    """A background process acting as a synchronous read port: data(t+1) = words[addr(t)]."""
    async def proc(ctx):
        async for _clk, _rst, addr in ctx.tick().sample(dut_addr):
            ctx.set(dut_data, int(words[addr]) if addr < len(words) else 0)
    return proc
