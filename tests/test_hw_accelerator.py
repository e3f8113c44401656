"""The whole Accelerator against the golden model and the cycle model (sim/cycles.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bitsnn.hw import Accelerator
from bitsnn.hwmodel import pack_bits, random_model
from bitsnn.sim import golden
from bitsnn.sim.amaranth_run import run_accelerator
from bitsnn.sim.cycles import predict_cycles


def check_against_golden(model, images, build_model=None, **params):
    """``build_model``: the model the design is generated from, when it differs from the one it
    must compute (after run-time weight writes)."""
    g = golden.run(model, images)
    r = run_accelerator(build_model or model, images, **params)
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
    """The trained tiny model when the ML fixture exists, else a random stand-in of its shape."""
    try:
        return request.getfixturevalue("tiny_hwmodel")
    except pytest.FixtureLookupError:
        return random_model(np.random.default_rng(0), [576, 160, 10], input_shape=(24, 24),
                            input_crop=(28, 28, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("mode,lanes,word", [("event", None, 32), ("dense", 8, 32)])
def test_tiny_mnist_100_images(tiny, mnist, mode, lanes, word):
    """Event mode with the lanes board builds use (4 lane groups for the 160 hidden neurons)."""
    from bitsnn.sim.cycles import default_lanes

    lanes = lanes or default_lanes(tiny)
    images = mnist.test_images[:100]
    r, g = check_against_golden(tiny, images, mode=mode, lanes=lanes, word=word)
    if mode == "event":
        assert r.cycles.max() <= 1200, "over the 50 us budget at 24 MHz"


def test_tiny_verilog_converts(tiny):
    from amaranth.back import verilog

    dut = Accelerator(tiny)
    text = verilog.convert(dut, name="accelerator")
    assert "module accelerator" in text and "pixels__payload" in text and "result__payload" in text


def with_weights_of(model, donor):
    """``model``'s thresholds with ``donor``'s weights: what a design built for ``model`` computes
    after the host wrote ``donor``'s weights into it."""
    layers = [dataclasses.replace(l, weight_bits=d.weight_bits) for l, d in zip(model.layers, donor.layers)]
    return dataclasses.replace(model, layers=layers)


@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=3),
    enc=st.sampled_from(["spikes", "pixels"]),
    lanes=st.sampled_from([8, 16, 64]),
    split=st.sampled_from([None, 8, 16]),
    store=st.sampled_from(["ram", "spram"]),
    accumulators=st.sampled_from(["registers", "memory"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_run_time_weight_writes(sizes, enc, lanes, split, store, accumulators, seed):
    """Weights written through the ``weights`` port replace the initial ones (block RAM) or fill
    the empty SPRAM memories; every byte lands on the right lanes, groups and cores, with the
    compare -1 flips applied by the core. Results, spikes and cycles then equal the golden model
    of the design's thresholds with the written weights."""
    rng = np.random.default_rng(seed)
    sizes[0] = max(sizes[0], 2)
    thr = int(rng.integers(1, 256))
    model = random_model(rng, sizes, input_encoding=enc, input_threshold=thr)
    donor = random_model(rng, sizes, input_encoding=enc, input_threshold=thr)
    images = rng.integers(0, 256, size=(2, sizes[0]), dtype=np.uint8)
    kw = dict(writable=True) if store == "ram" else dict(spram_layers=range(len(sizes) - 1))
    check_against_golden(with_weights_of(model, donor), images, lanes=lanes, max_neurons_per_core=split,
                                accumulators=accumulators, load_weights=donor, build_model=model, mode="event", word=32,
                                **kw)


def test_spram_layers_start_empty():
    """A SPRAM layer is not initialised by the bitstream: without a weight load the design computes
    with all-zero stored bits, not the model's weights (so a forgotten load cannot pass a test).
    Stored bits are the weights XOR the neuron's flip (compare -1), so the effective weights of
    the blank memory are +1 for the compare -1 neurons and -1 for the others."""
    rng = np.random.default_rng(3)
    model = random_model(rng, [24, 16, 5])
    images = rng.integers(0, 256, size=(4, 24), dtype=np.uint8)
    r = run_accelerator(model, images, lanes=8, spram_layers=[0])
    l0 = model.layers[0]
    assert (l0.compare < 0).any() and (l0.compare > 0).any()
    eff = np.repeat((l0.compare < 0).astype(np.uint8)[:, None], l0.n_in, axis=1)
    blank = dataclasses.replace(model, layers=[dataclasses.replace(l0, weight_bits=pack_bits(eff)), model.layers[1]])
    assert np.array_equal(r.scores, golden.run(blank, images).scores)
    assert not np.array_equal(r.scores, golden.run(model, images).scores)


def test_weight_write_arguments_rejected():
    model = random_model(np.random.default_rng(0), [20, 24, 5])
    with pytest.raises(ValueError, match="need mode='event'"):
        Accelerator(model, mode="dense", writable=True)
    with pytest.raises(ValueError, match="multiple of 8"):
        Accelerator(model, writable=True, max_neurons_per_core=12)
    with pytest.raises(ValueError, match=r"spram_layers \[2\]"):
        Accelerator(model, spram_layers=[2])
    with pytest.raises(ValueError, match="lanes = 8 x a power of two"):
        Accelerator(model, writable=True, lanes=12)
    from amaranth.back import rtlil

    rtlil.convert(Accelerator(model, writable=True, lanes=24, max_neurons_per_core=24))  # one group per core
