"""DenseCore and EventCore against the golden model, one layer at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bitsnn.hw.core import DenseCore, EventCore
from bitsnn.hwmodel import random_model
from bitsnn.sim.golden import fire, layer_preactivation
from hw_helpers import simulate, sync_read_process
from test_hw_router import expected_beats

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def layer_cases(draw):
    n_in = draw(st.integers(1, 40))
    n_out = draw(st.integers(1, 12))
    kind = draw(st.sampled_from(["spikes", "pixels"]))
    hidden = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    model = random_model(rng, [n_in, n_out, 2] if hidden else [n_in, n_out], input_encoding=kind)
    layer = model.layers[0]
    fill = draw(st.sampled_from(["random", "empty", "full"]))
    hi = 256 if kind == "pixels" else 2
    x = {"random": rng.integers(0, hi, n_in), "empty": np.zeros(n_in, int), "full": np.full(n_in, hi - 1)}[fill]
    return layer, x.astype(np.uint8), rng


def _collect(dut, groups, out):
    async def proc(ctx):
        async for _c, _r, v, g, sp, sc, done in ctx.tick().sample(
                dut.out_valid, dut.out_group, dut.out_spikes, dut.out_scores, dut.done):
            if v:
                out.append((g, sp, [int(sc[j]) for j in range(dut.lanes)], done))
    return proc


def _check(layer, x, dut, out):
    a = layer_preactivation(layer, x[None, :])[0]
    P = dut.lanes
    assert [o[0] for o in out] == list(range(dut.groups))
    assert [o[3] for o in out] == [0] * (dut.groups - 1) + [1]
    got_a = np.concatenate([o[2] for o in out])[:layer.n_out]
    assert np.array_equal(got_a, a)
    if not layer.is_output:
        s = fire(layer, a[None, :])[0]
        got_s = np.array([(o[1] >> j) & 1 for o in out for j in range(P)])[:layer.n_out]
        assert np.array_equal(got_s, s)
        assert all((o[1] >> j) & 1 == 0 for o in out for j in range(P) if o[0] * P + j >= layer.n_out)


@SETTINGS
@given(layer_cases(), st.integers(1, 9), st.integers(1, 9))
def test_dense_core_matches_golden(case, lanes, word):
    layer, x, _ = case
    dut = DenseCore(layer.weight_bit_matrix(), layer.thresholds, layer.compare, lanes=lanes, word=word,
                    input_kind=layer.input_kind)
    vw = 8 if layer.input_kind == "pixels" else 1
    xs = np.concatenate([x, np.zeros((-len(x)) % word, np.uint8)]).astype(int)
    words = [sum(int(v) << (vw * i) for i, v in enumerate(xs[j:j + word])) for j in range(0, len(xs), word)]
    out = []

    async def tb(ctx):
        for rep in range(2):
            out.clear()
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().repeat(dut.groups * dut.n_words + 3)
            assert out and out[-1][3] == 1  # done exactly at start + G*Wn + 3
            _check(layer, x, dut, out)

    simulate(dut, tb, processes=[sync_read_process(dut.inp.addr, dut.inp.data, words), _collect(dut, None, out)])


@SETTINGS
@given(layer_cases(), st.integers(1, 9), st.integers(1, 3), st.integers(1, 8), st.floats(0.3, 1.0))
def test_event_core_matches_golden(case, lanes, k, chunk, p_valid):
    layer, x, rng = case
    k = min(k, chunk)
    dut = EventCore(layer.weight_bit_matrix(), layer.thresholds, layer.compare, lanes=lanes, k=k,
                    input_kind=layer.input_kind)
    beats = expected_beats((x != 0).astype(np.uint8), chunk, k)
    out = []

    async def tb(ctx):
        for rep in range(2):  # accumulators must be cleared for the next run
            out.clear()
            for bi, b in enumerate(beats):
                while rng.random() > p_valid:
                    ctx.set(dut.events.valid, 0)
                    await ctx.tick()
                ctx.set(dut.events.valid, 1)
                for e, adr in enumerate(b):
                    ctx.set(dut.events.payload.addr[e], adr)
                ctx.set(dut.events.payload.count, len(b))
                ctx.set(dut.events.payload.last, int(bi == len(beats) - 1))
                while True:
                    _, _, rdy = await ctx.tick().sample(dut.events.ready)
                    if rdy:
                        break
            ctx.set(dut.events.valid, 0)
            for _ in range(dut.groups * (k + 2) + 10):
                await ctx.tick()
                if out and out[-1][3]:
                    break
            await ctx.tick()
            _check(layer, x, dut, out)
            if not layer.is_output:  # the accumulators' sign bits hold the spikes until the next vector
                s = fire(layer, layer_preactivation(layer, x[None, :]))[0]
                got = ctx.get(dut.spikes)
                assert [(got >> n) & 1 for n in range(layer.n_out)] == [int(v) for v in s]

    simulate(dut, tb, processes=[sync_read_process(dut.values.addr, dut.values.data, x), _collect(dut, None, out)])


def test_core_rejects_bad_args():
    w = np.ones((3, 5), np.uint8)
    with pytest.raises(TypeError, match=r"weights must be a non-empty 2-D array"):
        DenseCore([[1, 0]])
    with pytest.raises(ValueError, match=r"weights must hold only 0 and 1"):
        EventCore(w * 2)
    with pytest.raises(ValueError, match=r"lanes must be at least 1, not 0"):
        DenseCore(w, lanes=0)
    with pytest.raises(ValueError, match=r"word must be at least 1, not 0"):
        DenseCore(w, word=0)
    with pytest.raises(ValueError, match=r"k must be at least 1, not 0"):
        EventCore(w, k=0)
    with pytest.raises(ValueError, match=r"input_kind must be 'spikes' or 'pixels', not 'bits'"):
        EventCore(w, input_kind="bits")
    with pytest.raises(TypeError, match=r"thresholds and compare must be given together"):
        EventCore(w, np.zeros(3, int))
    with pytest.raises(ValueError, match=r"thresholds must lie in \[-6, 6\]"):
        DenseCore(w, np.full(3, 7), np.ones(3, int))


def test_adder_trees_are_exact_and_shallow():
    """``popcount``/``tree_sum`` (bitsnn.hw.arith): exact sums at every width (no bit lost at the
    largest sum), log-depth expressions (1,000 terms simulate without a RecursionError)."""
    from amaranth.hdl import Module, Signal, signed, unsigned
    from amaranth.sim import Simulator

    from bitsnn.hw.arith import popcount, tree_sum

    bits = Signal(1000)
    bytes_ = [Signal(8, name=f"b{i}") for i in range(300)]
    smalls = [Signal(signed(5), name=f"s{i}") for i in range(7)]
    pc, ts, ss = popcount(bits), tree_sum(bytes_), tree_sum(smalls)
    assert pc.shape() == unsigned(11)  # 10 levels of adds over 1-bit terms
    assert ts.shape() == unsigned(8 + 9)
    assert ss.shape() == signed(5 + 3)
    assert popcount(Signal(1)).shape() == unsigned(1) and tree_sum([]).value == 0

    def depth(v):  # operators (the adds) on the longest path to a leaf
        ops = getattr(v, "operands", None)
        return 1 + max(map(depth, ops)) if ops else 0

    assert depth(pc) == 10 and depth(ts) == 9

    m = Module()
    outs = [Signal.like(pc, name="pc"), Signal.like(ts, name="ts"), Signal.like(ss, name="ss")]
    m.d.comb += [o.eq(v) for o, v in zip(outs, (pc, ts, ss))]
    rng = np.random.default_rng(0)

    async def bench(ctx):
        for trial in range(4):
            if trial == 0:  # every term at its maximum (the most negative, for signed)
                b, xs, ys = (1 << 1000) - 1, [255] * 300, [-16] * 7
            else:
                b = int(rng.integers(0, 2, 1000) @ (1 << np.arange(1000, dtype=object)))
                xs, ys = [int(v) for v in rng.integers(0, 256, 300)], [int(v) for v in rng.integers(-16, 16, 7)]
            ctx.set(bits, b)
            for s, v in zip(bytes_, xs):
                ctx.set(s, v)
            for s, v in zip(smalls, ys):
                ctx.set(s, v)
            assert [ctx.get(o) for o in outs] == [b.bit_count(), sum(xs), sum(ys)]

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
