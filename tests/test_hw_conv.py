"""hw/conv.py: the convolution stage against the golden model, spike for spike, and its cycle count
against bitsnn.hwplan.ConvPlan, on real MNIST digits and random maps."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from bitsnn.hwmodel import random_model
from bitsnn.hwplan import HardwarePlan
from bitsnn.hw.conv import ConvCore, WindowCore
from bitsnn.hw.router import EventFIFO, SpikeRouter
from bitsnn.sim import golden


class Harness(Elaboratable):
    """Input store -> SpikeRouter -> EventFIFO -> ConvCore -> output store (bit-enabled writes)."""

    def __init__(self, layer, plan, word):
        self.layer, self.plan, self.word = layer, plan, word
        self.core = ConvCore(layer, plan.conv, word=word)
        n = plan.conv.in_layout.size
        self.router = SpikeRouter(n, chunk=word, k=1)
        self.fifo = EventFIFO(self.router.layout, depth=4)
        self.inmem = memory.Memory(shape=word, depth=-(-n // word), init=[])
        self.pixmem = memory.Memory(shape=8, depth=n, init=[])
        self.outmem = memory.Memory(shape=word, depth=self.core.out_words, init=[])
        self.start = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.router, m.submodules.fifo = self.core, self.router, self.fifo
        m.submodules.inmem, m.submodules.pixmem, m.submodules.outmem = self.inmem, self.pixmem, self.outmem
        rp = self.inmem.read_port()
        m.d.comb += [rp.addr.eq(self.router.rd.addr), self.router.rd.data.eq(rp.data)]
        pp = self.pixmem.read_port()
        m.d.comb += [pp.addr.eq(self.core.values.addr), self.core.values.data.eq(pp.data)]
        wp = self.outmem.write_port(granularity=1)
        m.d.comb += [wp.addr.eq(self.core.out.addr), wp.data.eq(self.core.out.data), wp.en.eq(self.core.out.en)]
        m.d.comb += [self.router.start.eq(self.start), self.core.start.eq(self.start)]
        m.d.comb += [self.fifo.w.payload.eq(self.router.beats.payload), self.fifo.w.valid.eq(self.router.beats.valid),
                     self.router.beats.ready.eq(self.fifo.w.ready)]
        m.d.comb += [self.core.events.payload.eq(self.fifo.r.payload), self.core.events.valid.eq(self.fifo.r.valid),
                     self.fifo.r.ready.eq(self.core.events.ready)]
        return m


class WindowHarness(Elaboratable):
    """Input store -> WindowCore -> output store (bit-enabled writes)."""

    def __init__(self, layer, plan, word):
        self.core = WindowCore(layer, plan.conv, word=word)
        self.inmem = memory.Memory(shape=word, depth=self.core.in_words, init=[])
        self.outmem = memory.Memory(shape=word, depth=self.core.out_words, init=[])
        self.start = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.inmem, m.submodules.outmem = self.core, self.inmem, self.outmem
        rp = self.inmem.read_port()
        m.d.comb += [rp.addr.eq(self.core.src.addr), self.core.src.data.eq(rp.data), self.core.start.eq(self.start)]
        wp = self.outmem.write_port(granularity=1)
        m.d.comb += [wp.addr.eq(self.core.out.addr), wp.data.eq(self.core.out.data), wp.en.eq(self.core.out.en)]
        return m


def _words(bits: np.ndarray, word: int) -> list[int]:
    pad = (-len(bits)) % word
    b = np.concatenate([bits.astype(np.uint8), np.zeros(pad, np.uint8)]).reshape(-1, word)
    return [int(sum(int(v) << i for i, v in enumerate(row))) for row in b]


def run_conv(model, images, *, lanes, word=32, engine="event"):
    """Each image through the first layer's ConvCore (``engine`` "event") or WindowCore ("window"):
    (spike stores, cycles start -> next START, the plan; the WindowCore's ``seen`` counts)."""
    plan = HardwarePlan.of(model, lanes=lanes, word=word, conv_engine=engine)
    layer, lp = model.layers[0], plan.layers[0]
    x = golden.encode_input(model, images)
    store_in = lp.conv.in_layout.to_store(x)
    dut = Harness(layer, lp, word) if engine == "event" else WindowHarness(layer, lp, word)
    out_stores, cycles, seen = [], [], []

    async def bench(ctx):
        for b in range(len(images)):
            for a, w in enumerate(_words(store_in[b] != 0, word)):
                ctx.set(dut.inmem.data[a], w)
            if engine == "event":
                for a, v in enumerate(store_in[b]):
                    ctx.set(dut.pixmem.data[a], int(v))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 1
            while not ctx.get(dut.core.done):
                await ctx.tick()
                n += 1
            await ctx.tick()
            cycles.append(n + 1)  # START .. the cycle done is seen, and the next START
            if engine == "window":
                seen.append(ctx.get(dut.core.seen))
            words = [ctx.get(dut.outmem.data[a]) for a in range(dut.core.out_words)]
            bits = np.array([(w >> i) & 1 for w in words for i in range(word)], np.uint8)
            out_stores.append(bits[:lp.conv.out_layout.size])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    if engine == "window":
        return np.array(out_stores), np.array(cycles), plan, np.array(seen)
    return np.array(out_stores), np.array(cycles), plan


CASES = [
    # input shape, encoding, (channels, kernel, pool), lanes
    ((28, 28), "spikes", (8, 3, 2), 8),
    ((12, 10), "spikes", (6, 3, 2), 4),     # 6 channels padded to 8: two groups of 4 lanes
    ((9, 7), "spikes", (4, 5, 2), 4),       # odd maps: the pool drops the last row and column
    ((8, 8), "pixels", (4, 3, 1), 2),       # pixel input, no pool, two groups
    ((6, 5), "spikes", (3, 1, 2), 4),       # 1 x 1 kernel: back-to-back updates of one word
]


@pytest.mark.parametrize("shape,enc,conv,lanes", CASES, ids=lambda v: str(v))
def test_conv_core_matches_golden(shape, enc, conv, lanes, mnist):
    rng = np.random.default_rng(11)
    h, w = shape
    model = random_model(rng, [h * w, 3], input_encoding=enc, input_shape=shape, convs=(conv,),
                         input_threshold=100, threshold_spread=0.5)
    if shape == (28, 28):
        images = mnist.test_images[:6]
    else:
        images = rng.integers(0, 256, size=(6, h, w), dtype=np.uint8)
        images[0] = 0  # an empty input: every row flushed by the tail
    stores, cycles, plan = run_conv(model, images, lanes=lanes)
    g = golden.run(model, images)
    lp = plan.layers[0]
    want = lp.conv.out_layout.to_store(g.spikes[0])
    np.testing.assert_array_equal(stores, want)
    assert 0 < want.mean() < 0.9
    from bitsnn.sim.cycles import zero_chunks
    z = zero_chunks(lp.conv.in_layout.to_store(g.inputs), 32)
    np.testing.assert_array_equal(cycles, lp.conv.cycles(g.input_events[:, 0], z))


WINDOW_CASES = [
    # input shape, (channels, kernel, pool), lanes
    ((28, 28), (8, 3, 2), 8),       # one input channel: a bit a tap
    ((9, 7), (4, 5, 2), 4),         # odd maps: the pool drops the last row and column; 5 x 5 border taps
    ((6, 5), (6, 1, 1), 4),         # 1 x 1 kernel, no pool; 6 channels padded to 8: two groups of 4 lanes
]


@pytest.mark.parametrize("shape,conv,lanes", WINDOW_CASES, ids=lambda v: str(v))
def test_window_core_matches_golden(shape, conv, lanes, mnist):
    """The sliding-window stage: every spike against the golden model, its ``seen`` count against
    the input spikes, its cycles against ConvPlan.window_stage_cycles (the same for every input)."""
    rng = np.random.default_rng(12)
    h, w = shape
    model = random_model(rng, [h * w, 3], input_encoding="spikes", input_shape=shape, convs=(conv,),
                         input_threshold=100, threshold_spread=0.5)
    if shape == (28, 28):
        images = mnist.test_images[:4]
    else:
        images = rng.integers(0, 256, size=(4, h, w), dtype=np.uint8)
        images[0] = 0
    stores, cycles, plan, seen = run_conv(model, images, lanes=lanes, engine="window")
    g = golden.run(model, images)
    lp = plan.layers[0]
    assert lp.conv.engine == "window"
    np.testing.assert_array_equal(stores, lp.conv.out_layout.to_store(g.spikes[0]))
    assert 0 < stores.mean() < 0.9
    np.testing.assert_array_equal(seen, g.input_events[:, 0])
    np.testing.assert_array_equal(cycles, lp.conv.window_stage_cycles())
    assert lp.conv.window_stage_cycles() == h * w * lp.conv.groups * conv[1] ** 2 + 4


def test_window_stage_on_multichannel_maps_matches_the_event_stage(mnist):
    """Both stages on the same multi-channel spike maps (a trained-like conv -> conv pair, random
    weights): identical spikes in the whole Accelerator, each engine's cycles as its model says."""
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cycles import predict_cycles

    model = random_model(np.random.default_rng(8), [784, 10], input_encoding="spikes", input_shape=(28, 28),
                         convs=((8, 3, 2), (16, 3, 2)), input_threshold=100, threshold_spread=0.5)
    images = mnist.test_images[:2]
    g = golden.run(model, images)
    runs = {e: run_accelerator(model, images, lanes=16, conv_engine=e) for e in ("event", "window")}
    for e, r in runs.items():
        for a, b in zip(r.spikes, g.spikes):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(r.spike_counts, g.spike_counts)
        np.testing.assert_array_equal(r.cycles, predict_cycles(model, g, mode="event", lanes=16, word=32, conv_engine=e))
        np.testing.assert_array_equal(r.cycles, r.measured_cycles)
    plan = HardwarePlan.of(model, lanes=16)
    assert [lp.conv.engine for lp in plan.layers[:2]] == ["event", "window"]  # "auto"
    assert runs["window"].cycles[0] != runs["event"].cycles[0]


@pytest.mark.parametrize("enc,convs,dense,lanes,acc,engine", [
    ("spikes", ((4, 3, 2), (8, 3, 2)), [16, 10], 8, "registers", "auto"),   # conv -> conv (window) -> dense -> dense
    ("spikes", ((4, 3, 2), (8, 3, 2)), [16, 10], 8, "memory", "event"),     # the dense layers as on the ECP5
    ("pixels", ((4, 3, 2),), [10], 4, "registers", "auto"),                 # pixel input into a convolution
    ("spikes", ((6, 5, 1), (4, 3, 2)), [10], 4, "registers", "auto"),       # 5 x 5 kernel without pool, 6 channels in 8 lanes
    ("spikes", ((6, 5, 1), (4, 3, 2)), [10], 4, "registers", "window"),     # every convolution a window stage
])
def test_accelerator_with_convolutions_matches_golden(enc, convs, dense, lanes, acc, engine, mnist):
    """The whole Accelerator (input buffer in the map layout, routers over the conv stores, dense
    weights in store order, spike counts from the next router): every spike of every layer,
    spike counts, scores, class, and the cycle model exactly, on MNIST digits."""
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cycles import predict_cycles

    model = random_model(np.random.default_rng(5), [784, *dense], input_encoding=enc, input_shape=(28, 28),
                         convs=convs, input_threshold=100, threshold_spread=0.5)
    images = mnist.test_images[:3]
    r = run_accelerator(model, images, lanes=lanes, accumulators=acc, conv_engine=engine)
    g = golden.run(model, images)
    for a, b in zip(r.spikes, g.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.spike_counts, g.spike_counts)
    np.testing.assert_array_equal(r.scores, g.scores)
    np.testing.assert_array_equal(r.classes, g.classes)
    np.testing.assert_array_equal(r.cycles, predict_cycles(model, g, mode="event", lanes=lanes, word=32,
                                                           conv_engine=engine))
    np.testing.assert_array_equal(r.cycles, r.measured_cycles)


def test_convolutions_refuse_what_they_do_not_support():
    from bitsnn.hw import Accelerator
    from bitsnn.hwplan import UnsupportedLayerError

    model = random_model(np.random.default_rng(0), [64, 4], input_shape=(8, 8), convs=((2, 3, 2),))
    with pytest.raises(UnsupportedLayerError, match=r"conv1: convolutions run in mode='event' only"):
        Accelerator(model, mode="dense")
    with pytest.raises(ValueError, match=r"spram_layers \[0\]: layer 0 \(conv1\) is a convolution, whose kernels stay in its ROM"):
        Accelerator(model, spram_layers=[0], lanes=8)
    with pytest.raises(ValueError, match="needs a power-of-two word"):
        Accelerator(model, word=24)
    with pytest.raises(ValueError, match="conv_engine must be one of"):
        Accelerator(model, conv_engine="systolic")
    pix = random_model(np.random.default_rng(0), [64, 4], input_shape=(8, 8), convs=((2, 3, 2),), input_encoding="pixels")
    with pytest.raises(UnsupportedLayerError, match=r"conv1: a window stage takes spike maps .* not pixels of 1"):
        Accelerator(pix, conv_engine="window")
