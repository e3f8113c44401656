"""The whole Accelerator against the golden model and the cycle model (sim/cycles.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bitsnn.hw import Accelerator
from bitsnn.hwmodel import random_model
from bitsnn.sim import golden
from bitsnn.sim.amaranth_run import run_accelerator
from bitsnn.sim.cycles import predict_cycles


def check_against_golden(model, images, **params):
    g = golden.run(model, images)
    r = run_accelerator(model, images, **params)
    assert np.array_equal(r.classes, g.classes)
    assert np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    for got, want in zip(r.spikes, g.spikes, strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(r.cycles, r.measured_cycles)
    keys = ("mode", "lanes", "word", "k", "max_neurons_per_core")
    pred = predict_cycles(model, g, **{k: v for k, v in params.items() if k in keys})
    assert np.array_equal(r.cycles, pred)
    return r, g


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 16), min_size=2, max_size=4),
    enc=st.sampled_from(["spikes", "pixels"]),
    mode=st.sampled_from(["event", "dense"]),
    lanes=st.integers(1, 7),
    word=st.integers(1, 9),
    k=st.integers(1, 3),
    split=st.sampled_from([None, 1, 3, 5]),
    fifo_depth=st.integers(3, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_models(sizes, enc, mode, lanes, word, k, split, fifo_depth, seed):
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=int(rng.integers(1, 256)))
    images = rng.integers(0, 256, size=(3, sizes[0]), dtype=np.uint8)
    images[1] = 0    # empty input
    images[2] = 255  # all ones
    check_against_golden(model, images, mode=mode, lanes=lanes, word=word, k=min(k, word),
                         max_neurons_per_core=split, fifo_depth=fifo_depth)


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=3),
    enc=st.sampled_from(["spikes", "pixels"]),
    lanes=st.integers(1, 5),
    word=st.integers(1, 6),
    split=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_memory_accumulators(sizes, enc, lanes, word, split, seed):
    """accumulators="memory" (the ECP5 choice) gives the same results and cycles."""
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=int(rng.integers(1, 256)))
    images = rng.integers(0, 256, size=(2, sizes[0]), dtype=np.uint8)
    images[1] = 255
    check_against_golden(model, images, mode="event", lanes=lanes, word=word, max_neurons_per_core=split,
                         accumulators="memory")


@pytest.mark.parametrize("mode", ["event", "dense"])
def test_result_backpressure(mode):
    rng = np.random.default_rng(5)
    model = random_model(rng, [30, 17, 6])
    images = rng.integers(0, 256, size=(3, 30), dtype=np.uint8)
    check_against_golden(model, images, mode=mode, lanes=4, word=8, result_ready=0.4)


def test_vcd(tmp_path):
    model = random_model(np.random.default_rng(1), [12, 5, 3])
    images = np.random.default_rng(2).integers(0, 256, size=(2, 12), dtype=np.uint8)
    run_accelerator(model, images, lanes=2, word=4, vcd_path=tmp_path / "one.vcd")
    assert (tmp_path / "one.vcd").stat().st_size > 1000


def test_accelerator_rejects_bad_args():
    model = random_model(np.random.default_rng(0), [8, 4, 2])
    with pytest.raises(TypeError, match=r"hwmodel must be a bitsnn.hwmodel.HardwareModel, not 3"):
        Accelerator(3)
    with pytest.raises(ValueError, match=r"mode must be one of \('event', 'dense'\), not 'sparse'"):
        Accelerator(model, mode="sparse")
    with pytest.raises(ValueError, match=r"lanes must be at least 1, not 0"):
        Accelerator(model, lanes=0)
    with pytest.raises(TypeError, match=r"word must be an integer, not 2.5"):
        Accelerator(model, word=2.5)
    with pytest.raises(ValueError, match=r"k must not exceed the word width 4, not 5"):
        Accelerator(model, word=4, k=5)
    with pytest.raises(ValueError, match=r"max_neurons_per_core must be at least 1, not 0"):
        Accelerator(model, max_neurons_per_core=0)
    with pytest.raises(ValueError, match=r"fifo_depth must be at least 3, not 2"):
        Accelerator(model, fifo_depth=2)
    with pytest.raises(ValueError, match=r"accumulators must be 'auto', 'registers' or 'memory', not 'rom'"):
        Accelerator(model, accumulators="rom")


# ---- the tiny MNIST model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(request):
    """The trained tiny model when the ML fixture exists, else a random 784-128-10 stand-in."""
    try:
        return request.getfixturevalue("tiny_hwmodel")
    except pytest.FixtureLookupError:
        return random_model(np.random.default_rng(0), [784, 128, 10])


@pytest.mark.slow
@pytest.mark.parametrize("mode,lanes,word", [("event", 32, 32), ("dense", 8, 32)])
def test_tiny_mnist_100_images(tiny, mnist, mode, lanes, word):
    images = mnist.test_images[:100]
    r, g = check_against_golden(tiny, images, mode=mode, lanes=lanes, word=word)
    if mode == "event":
        assert r.cycles.max() <= 1200, "over the 50 us budget at 24 MHz"


def test_tiny_verilog_converts(tiny):
    from amaranth.back import verilog

    dut = Accelerator(tiny)
    text = verilog.convert(dut, name="accelerator")
    assert "module accelerator" in text and "pixels__payload" in text and "result__payload" in text
