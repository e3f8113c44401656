"""SpikeRouter and EventFIFO against NumPy references (Amaranth simulator, async testbenches)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bitsnn.hw.router import EventFIFO, SpikeRouter, beat_layout
from hw_helpers import simulate, sync_read_process

SETTINGS = settings(max_examples=20, deadline=None)


def chunks_of(bits, c):
    n = len(bits)
    pad = np.concatenate([bits, np.zeros((-n) % c, np.uint8)])
    return [int(sum(int(b) << i for i, b in enumerate(pad[j:j + c]))) for j in range(0, len(pad), c)]


def expected_beats(bits, c, k):
    out = []
    ch = chunks_of(bits, c)
    for j, w in enumerate(ch):
        idx = [j * c + i for i in range(c) if (w >> i) & 1]
        if not idx:
            out.append(())
        for s in range(0, len(idx), k):
            out.append(tuple(idx[s:s + k]))
    return out


@st.composite
def spike_vectors(draw):
    n = draw(st.integers(1, 80))
    kind = draw(st.sampled_from(["random", "empty", "full", "sparse"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "empty":
        bits = np.zeros(n, np.uint8)
    elif kind == "full":
        bits = np.ones(n, np.uint8)
    else:
        bits = (rng.random(n) < (0.5 if kind == "random" else 0.05)).astype(np.uint8)
    return bits, seed


@SETTINGS
@given(spike_vectors(), st.integers(1, 16), st.integers(1, 4), st.floats(0.2, 1.0))
def test_router_matches_reference(vec, chunk, k, p_ready):
    bits, seed = vec
    k = min(k, chunk)
    dut = SpikeRouter(len(bits), chunk=chunk, k=k)
    words = chunks_of(bits, chunk)
    want = expected_beats(bits, chunk, k)
    rng = np.random.default_rng(seed)
    got = []

    async def tb(ctx):
        for rep in range(2):  # twice: the router must be reusable
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            beats = []
            for _ in range(20 * (len(want) + 4)):
                rdy = int(rng.random() < p_ready)
                ctx.set(dut.beats.ready, rdy)
                _, _, valid, payload, busy = await ctx.tick().sample(dut.beats.valid, dut.beats.payload, dut.busy)
                if valid and rdy:
                    cnt = payload.count
                    beats.append((tuple(int(payload.addr[e]) for e in range(cnt)), payload.last))
                    if payload.last:
                        break
            got.append(beats)
            _, _, busy = await ctx.tick().sample(dut.busy)
            assert not busy

    simulate(dut, tb, processes=[sync_read_process(dut.rd.addr, dut.rd.data, words)])
    for beats in got:
        assert [b for b, _ in beats] == want
        assert [l for _, l in beats] == [0] * (len(want) - 1) + [1]


def test_router_gap_free_when_ready():
    """With ready held high the router emits one beat every cycle (the cycle model relies on it)."""
    bits = np.array([0] * 20 + [1, 1, 0, 1] + [0] * 9 + [1], np.uint8)
    dut = SpikeRouter(len(bits), chunk=4, k=2)
    want = expected_beats(bits, 4, 2)
    valid_cycles = []

    async def tb(ctx):
        ctx.set(dut.beats.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for t in range(40):
            _, _, valid = await ctx.tick().sample(dut.beats.valid)
            if valid:
                valid_cycles.append(t)

    simulate(dut, tb, processes=[sync_read_process(dut.rd.addr, dut.rd.data, chunks_of(bits, 4))])
    assert valid_cycles == list(range(2, 2 + len(want)))


@SETTINGS
@given(st.integers(1, 9), st.integers(0, 2**32 - 1), st.floats(0.1, 1.0), st.floats(0.1, 1.0))
def test_fifo_stream_matches_queue(depth, seed, p_valid, p_ready):
    layout = beat_layout(6, 2)
    dut = EventFIFO(layout, depth=depth)
    rng = np.random.default_rng(seed)
    items = [int(v) for v in rng.integers(0, 1 << layout.size, 60)]
    out = []

    async def tb(ctx):
        q = collections.deque(items)
        occupancy_max = 0
        held = 0
        for _ in range(2000):
            v = int(bool(q) and rng.random() < p_valid)
            r = int(rng.random() < p_ready)
            if v:
                ctx.set(dut.w.payload.as_value(), q[0])
            ctx.set(dut.w.valid, v)
            ctx.set(dut.r.ready, r)
            _, _, wr, rv, rd = await ctx.tick().sample(dut.w.ready, dut.r.valid, dut.r.payload)
            if v and wr:
                q.popleft()
                held += 1
            if rv and r:
                out.append(rd.as_value().value)
                held -= 1
            occupancy_max = max(occupancy_max, held)
            if len(out) == len(items):
                break
        assert occupancy_max <= depth

    simulate(dut, tb)
    assert out == items


def test_router_rejects_bad_args():
    with pytest.raises(TypeError, match=r"n_inputs must be an integer, not 'x'"):
        SpikeRouter("x")
    with pytest.raises(ValueError, match=r"chunk must be at least 1, not 0"):
        SpikeRouter(10, chunk=0)
    with pytest.raises(ValueError, match=r"k must not exceed the chunk width 4, not 5"):
        SpikeRouter(10, chunk=4, k=5)
    with pytest.raises(ValueError, match=r"depth must be at least 1, not 0"):
        EventFIFO(beat_layout(4), depth=0)
    with pytest.raises(ValueError, match=r"k must be at least 1, not 0"):
        beat_layout(4, 0)


@pytest.mark.parametrize("width", [1, 2, 3, 8, 13])
def test_at_least_two_set_exhaustive(width):
    """The carry-free tree equals v & (v - 1) != 0 for every value of small widths."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from bitsnn.hw.router import at_least_two_set

    m = Module()
    v = Signal(width)
    out = Signal()
    m.d.comb += out.eq(at_least_two_set(m, v))
    got = []

    async def bench(ctx):
        for x in range(1 << width):
            ctx.set(v, x)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [int(x & (x - 1) != 0) for x in range(1 << width)]
