"""Generated Verilog of the Accelerator on Icarus (and Verilator) via cocotb, against the golden
model: every hidden layer's spikes (events tap), scores, class and cycle count.

Three benches: the harness (the per-image work inside the simulation) under cocotb, the same
harness under its C++ driver (Verilator; what ``bitsnn sim`` runs there), and the cycle bench
(Python on every clock edge; waveforms). Simulator builds are shared by the tests
through ``cosim_build_root`` (keyed by the design's hash)."""

from __future__ import annotations

import numpy as np
import pytest

from bitsnn.hwmodel import random_model
from bitsnn.sim import golden
from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing

pytestmark = [pytest.mark.cosim, pytest.mark.xdist_group("cosim")]


def expected_of(g):
    return dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                **{f"spikes{i}": s for i, s in enumerate(g.spikes)})


def check(hm, imgs, r, lanes=32):
    g = golden.run(hm, imgs)
    assert np.array_equal(r.classes, g.classes)
    assert np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    for a, b in zip(r.spikes, g.spikes):
        assert np.array_equal(a, b)
    assert np.array_equal(r.cycles, r.measured_cycles)
    try:
        from bitsnn.sim.cycles import predict_cycles
    except ImportError:
        return
    assert np.array_equal(r.cycles, np.asarray(predict_cycles(hm, g, mode="event", lanes=lanes, word=32)))


@pytest.fixture(scope="session")
def cosim_build_root():
    from conftest import REPO

    return REPO / ".cache" / "cosim"


@pytest.mark.parametrize("sim,bench", [("icarus", "harness"), ("icarus", "cycle"), ("verilator", "native"),
                                       ("verilator", "harness"), ("verilator", "cycle")])
def test_random_model_small(sim, bench, cosim_build_root):
    """20 images in batches of 8 (the harness's last batch is partial)."""
    why = simulator_missing(sim)
    if why:
        pytest.skip(why)
    hm = random_model(np.random.default_rng(0), [16, 8, 4])
    imgs = np.random.default_rng(1).integers(0, 256, (20, 16), dtype=np.uint8)
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=cosim_build_root, bench=bench, batch=8,
                              expected=expected_of(golden.run(hm, imgs)))
    check(hm, imgs, r)
    assert (r.sim_cycles > r.cycles).all()


def test_benches_agree(mnist, cosim_build_root):
    """The harness's in-simulation observation (under cocotb and under its C++ driver) equals
    Python's edge-by-edge one, field by field."""
    why = simulator_missing("verilator")
    if why:
        pytest.skip(why)
    hm = _conv_model("spikes")
    imgs = mnist.test_images[:12]
    ref, *others = (run_accelerator_cosim(hm, imgs, simulator="verilator", build_root=cosim_build_root, bench=bench,
                                          batch=5, accel_params={"lanes": 8}) for bench in ("cycle", "harness", "native"))
    for a in others:
        for f in ("classes", "scores", "spike_counts", "cycles", "measured_cycles"):
            assert np.array_equal(getattr(a, f), getattr(ref, f)), f
        for x, y in zip(a.spikes, ref.spikes):
            assert np.array_equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("model,sim,n", [("tiny", "icarus", 1000), ("tiny", "verilator", 10000),
                                         ("conv-tiny", "verilator", 10000)])
def test_mnist_images(model, sim, n, request, mnist, cosim_build_root):
    """The cached test models (``tiny_hwmodel``, ``conv_tiny_hwmodel``) on real test images: all
    10,000 on Verilator, the first 1,000 on Icarus; every spike of every layer, the scores, class
    and cycle count, with the lanes ``bitsnn sim`` and ``bitsnn build`` use."""
    why = simulator_missing(sim)
    if why:
        pytest.skip(why)
    from bitsnn.hwplan import default_lanes
    from bitsnn.sim.cycles import predict_cycles

    hm = request.getfixturevalue(f"{model.replace('-', '_')}_hwmodel")
    imgs = mnist.test_images[:n]
    assert len(imgs) == n
    lanes = default_lanes(hm)
    g = golden.run(hm, imgs)
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=cosim_build_root, expected=expected_of(g),
                              accel_params={"lanes": lanes, "word": 32})
    for a, b in zip(r.spikes, g.spikes):
        assert np.array_equal(a, b)
    assert np.array_equal(r.classes, g.classes) and np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    assert np.array_equal(r.cycles, r.measured_cycles)
    assert np.array_equal(r.cycles, predict_cycles(hm, g, mode="event", lanes=lanes, word=32))


def _conv_model(enc):
    """A convolutional model whose layers all make real decisions on MNIST digits."""
    return random_model(np.random.default_rng(5), [784, 16, 10], input_encoding=enc, input_shape=(28, 28),
                        convs=((4, 3, 2), (8, 3, 2)), input_threshold=100, threshold_spread=0.5)


@pytest.mark.parametrize("sim,enc,engine", [("icarus", "spikes", "auto"), ("verilator", "spikes", "auto"),
                                            ("verilator", "pixels", "auto"), ("verilator", "spikes", "event")])
def test_conv_model_200_mnist_images(sim, enc, engine, mnist, cosim_build_root):
    """Two convolutions (OR pools, lanes over channels; the first an event stage with its ring of
    accumulator rows, the second a window stage, or with ``engine="event"`` an event stage too)
    and two dense layers: every spike of every layer (the conv maps through the tap), scores,
    class, cycles."""
    why = simulator_missing(sim)
    if why:
        pytest.skip(why)
    from bitsnn.sim.cycles import predict_cycles

    hm = _conv_model(enc)
    imgs = mnist.test_images[:200]
    g = golden.run(hm, imgs)
    assert all(0.01 < s.mean() < 0.9 for s in g.spikes)
    params = {"lanes": 8} if engine == "auto" else {"lanes": 8, "conv_engine": engine}
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=cosim_build_root, expected=expected_of(g),
                              accel_params=params)
    for a, b in zip(r.spikes, g.spikes):
        assert np.array_equal(a, b)
    assert np.array_equal(r.classes, g.classes) and np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    assert np.array_equal(r.cycles, r.measured_cycles)
    assert np.array_equal(r.cycles, predict_cycles(hm, g, mode="event", lanes=8, word=32, conv_engine=engine))


@pytest.mark.parametrize("sim,n", [("icarus", 20), ("verilator", 200)])
def test_gap_head_mnist_images(sim, n, mnist, cosim_build_root):
    """ALBSNN's global sum pooling head after two convolutions (populations of 2 channels a class):
    every spike of both convolutions, the scores its counters add up, class, cycles."""
    why = simulator_missing(sim)
    if why:
        pytest.skip(why)
    import dataclasses

    from bitsnn.hwmodel import GapLayer

    base = random_model(np.random.default_rng(5), [784, 10], input_shape=(28, 28), convs=((4, 3, 2), (20, 3, 2)),
                        input_threshold=100, threshold_spread=0.5)
    hm = dataclasses.replace(base, layers=(*base.layers[:-1], GapLayer("gap3", 0, 10, in_shape=base.layers[1].out_shape)))
    imgs = mnist.test_images[:n]
    g = golden.run(hm, imgs)
    assert all(0.01 < s.mean() < 0.9 for s in g.spikes)
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=cosim_build_root, expected=expected_of(g),
                              accel_params={"lanes": 8})
    check(hm, imgs, r, lanes=8)
