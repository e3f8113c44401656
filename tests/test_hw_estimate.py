"""The tool-free resource estimator (hw/estimate.py): geometry, exact terms, calibration anchors."""

from __future__ import annotations


import numpy as np
import pytest

from bitsnn.hw.core import EventCore
from bitsnn.hw.estimate import bram_blocks_for, estimate_resources, store_blocks
from bitsnn.hwmodel import random_model


def test_bram_geometry():
    # tiny layer 1 at P = 32: 3,136 x 32 bits -> 256x16, 2 wide x 13 deep
    assert bram_blocks_for("ice40", 32, 784 * 4) == (26, 13)
    assert bram_blocks_for("ice40", 10, 128) == (1, 1)
    # large layer 1 at P = 32 on ECP5: 25,088 x 32 -> 512x36, 49 deep
    assert bram_blocks_for("ecp5", 32, 784 * 32) == (49, 49)
    assert bram_blocks_for("ecp5", 1, 16384) == (1, 1)


# (width, words) -> DP16KD blocks of a bit-enabled store, as synth_ecp5 (YoWASP Yosys 0.70) mapped
# standalone lib.memory stores with granularity=1: LUT RAM up to 64 words, then 4 bits per block
ECP5_STORES = {(32, 32): 0, (32, 56): 0, (32, 64): 0, (32, 112): 8, (32, 224): 8, (32, 448): 8, (32, 896): 16,
               (32, 1800): 32, (16, 224): 4, (64, 224): 16}


def test_conv_store_blocks():
    """A convolution's bit-enabled output store: as any memory on iCE40 (per-bit write mask), as
    Yosys maps it on ECP5 (the two ULX3S conv builds were 5 and 12 blocks short before)."""
    for (w, d), blocks in ECP5_STORES.items():
        assert store_blocks("ecp5", w, d) == blocks, (w, d)
    assert store_blocks("ice40", 32, 112) == bram_blocks_for("ice40", 32, 112)[0] == 2


def test_estimate_shape():
    """(How fast the estimate runs is benchmarks/bench_estimate.py's to say, not a timed test's.)"""
    m = random_model(np.random.default_rng(0), [784, 128, 10])
    r = estimate_resources(m, lanes=32, word=32)
    assert set(r) >= {"logic", "luts", "ffs", "bram_blocks", "bram_bits", "spram_blocks", "breakdown"}
    assert r["bram_blocks"] == 26 + 1 + 2 + 1 and r["spram_blocks"] == 1  # + the result bytes
    assert r["bram_bits"] == r["bram_blocks"] * 4096
    # the accumulators are counted exactly as the generator sizes them
    l0 = m.layers[0]
    core = EventCore(l0.weight_bit_matrix(), l0.thresholds, l0.compare, lanes=32)
    core._MustUse__silence = True  # built only for its sizing, never elaborated
    assert r["breakdown"]["layer0"]["packed"] == sum(w for _f, _i, w in core._neuron_plan())
    e = estimate_resources(m, family="ecp5")
    assert e["spram_blocks"] == 0 and e["bram_bits"] == e["bram_blocks"] * 18 * 1024
    assert estimate_resources(m, top=None)["logic"] < r["logic"]


def test_estimate_grows_with_the_model():
    small = estimate_resources(random_model(np.random.default_rng(0), [784, 64, 10]))
    big = estimate_resources(random_model(np.random.default_rng(0), [784, 256, 10]))
    assert big["logic"] > small["logic"] and big["ffs"] > small["ffs"]
    assert big["bram_blocks"] > small["bram_blocks"]


def test_estimate_rejects_bad_args():
    m = random_model(np.random.default_rng(0), [8, 4, 2])
    with pytest.raises(ValueError, match="only mode='event'"):
        estimate_resources(m, mode="dense")
    with pytest.raises(ValueError, match="family must be one of"):
        estimate_resources(m, family="xilinx")


def test_bram_columns_of_two_geometries():
    """A 40-bit weight memory takes two 16-bit columns and one 8-bit one, as Yosys maps it."""
    assert bram_blocks_for("ice40", 40, 2304) == (2 * 9 + 5, 9)
    assert bram_blocks_for("ice40", 32, 3136) == (26, 13)
    assert bram_blocks_for("ice40", 8, 100) == (1, 1)


def test_default_lanes_keep_four_groups_where_cheap():
    from bitsnn.sim.cycles import default_lanes

    def lanes(sizes, **kw):
        return default_lanes(random_model(np.random.default_rng(0), sizes), **kw)

    assert lanes([784, 128, 10]) == 32  # 4 groups already
    assert lanes([576, 160, 10]) == 40 and lanes([576, 160, 10], writable=True) == 32
    assert lanes([784, 256, 256, 10]) == 64 == lanes([784, 256, 10], writable=True)
    assert lanes([784, 1024, 10]) == 32 and lanes([20, 10]) == 32


@pytest.mark.parametrize("enc,convs,dense,lanes,engine,bram", [
    # the iCEBreaker builds of docs/hardware.md ("Convolutions: builds"): with event stages only,
    # 29 and 15 SB_RAM40_4K; with the second convolution a window stage, 16
    ("pixels", ((8, 3, 2), (16, 3, 2)), [10], 16, "event", 29),
    ("spikes", ((4, 3, 2), (8, 3, 2)), [16, 10], 32, "event", 15),
    ("spikes", ((16, 3, 2), (16, 3, 2)), [10], 32, "auto", 16),
])
def test_conv_block_rams_counted_from_the_geometry(enc, convs, dense, lanes, engine, bram):
    """Block RAMs of a conv design: accumulator rings, kernels, map stores, pixel memory, as built."""
    rng = np.random.default_rng(5 if enc == "pixels" else 7)
    m = random_model(rng, [784, *dense], input_encoding=enc, input_shape=(28, 28), convs=convs,
                     input_threshold=100, threshold_spread=0.5)
    e = estimate_resources(m, lanes=lanes, conv_engine=engine)
    assert e["bram_blocks"] == bram
    bigger = random_model(rng, [784, *dense], input_encoding=enc, input_shape=(28, 28),
                          convs=tuple((2 * c, k, p) for c, k, p in convs), input_threshold=100)
    assert estimate_resources(bigger, lanes=lanes, conv_engine=engine)["logic"] > e["logic"]


def test_window_stage_frees_the_accumulator_rings():
    """The earlier conv-tiny shape (784-c8-c16-10) on the iCE40: the window stage for its second
    convolution holds no accumulator ring and keeps its kernels in logic: 10 fewer block RAMs than
    the event stage here (the trained model of that shape built with 28 and with 19)."""
    m = random_model(np.random.default_rng(5), [784, 10], input_encoding="pixels", input_shape=(28, 28),
                     convs=((8, 3, 2), (16, 3, 2)), input_threshold=100, threshold_spread=0.5)
    ev = estimate_resources(m, lanes=32, conv_engine="event")
    win = estimate_resources(m, lanes=32)
    assert ev["bram_blocks"] - win["bram_blocks"] == 10
    assert win["breakdown"]["layer1"]["bram_blocks"] == 2  # its output store only


def test_a_timed_input_reads_one_weight_row_per_input():
    """A dense layer after a layer over T steps reads the same weight row for an input's event at
    every step (the design's weight memory has a row per input at one step): its block RAMs do not
    grow with T. The T = 4 `lif` conv-tiny built for the ULX3S used 29 EBR; estimated 41 while the
    estimate sized that memory by every step's inputs, 30 since."""
    def model(T):
        return random_model(np.random.default_rng(3), [784, 10], input_encoding="pixels", input_shape=(28, 28),
                            convs=((8, 3, 2), (32, 3, 2)), weight_bits={0: 4, 2: 4}, timesteps=T,
                            input_coding="direct", neurons={i: {"neuron": "lif", "leak": 8192} for i in (0, 1)})
    one, four = (estimate_resources(model(T), lanes=32, family="ecp5") for T in (1, 4))
    assert four["breakdown"]["layer2"]["bram_blocks"] == one["breakdown"]["layer2"]["bram_blocks"] > 0
