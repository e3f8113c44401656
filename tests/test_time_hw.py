"""The hardware over time: convolutions with if/lif neurons over T steps (hw/neuron.py, the timed
ConvCore and WindowCore), against the golden model on every spike of every step, the summed
scores, the class, the spike counts and the exact cycle count; in the Amaranth simulator and as
Verilog on Icarus and Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from bitsnn import hwplan
from bitsnn.hwmodel import random_model
from bitsnn.sim import golden
from bitsnn.sim.cosim.cli import compare
from bitsnn.sim.cycles import predict_cycles


def timed_model(seed, T, reset, *, encoding="spikes", convs=((4, 3, 2), (8, 3, 1)), leak=6554, shape=(8, 8),
                weight_bits=None, threshold_spread=0.3):
    """Convolutions over T steps, alternately lif (leak m, input shift 1) and if, into a dense
    output layer."""
    neurons = {i: ({"neuron": "lif", "leak": leak, "reset": reset, "shift": 1} if i % 2 == 0
                   else {"neuron": "if", "reset": reset}) for i in range(len(convs))}
    return random_model(np.random.default_rng(seed), [0, 10], input_shape=shape, convs=convs, input_encoding=encoding,
                        neurons=neurons, timesteps=T, input_coding="direct" if encoding == "pixels" else "threshold",
                        weight_bits=weight_bits, threshold_spread=threshold_spread)


CASES = [
    # (model, accelerator parameters)
    (dict(seed=0, T=3, reset="subtract"), dict(lanes=4)),
    (dict(seed=2, T=4, reset="zero", encoding="pixels"), dict(lanes=4)),
    (dict(seed=2, T=2, reset="subtract-next", leak=8192), dict(lanes=4)),
    (dict(seed=3, T=1, reset="subtract"), dict(lanes=4)),  # membranes at one step
    (dict(seed=4, T=3, reset="subtract", encoding="pixels", weight_bits={0: 4, 2: 4}), dict(lanes=2)),
    (dict(seed=5, T=4, reset="subtract-next"), dict(lanes=8, conv_engine="window")),
    (dict(seed=6, T=3, reset="zero", convs=((4, 3, 2), (8, 3, 2), (4, 3, 1))), dict(lanes=2, k=2)),
    # event stages of T input maps (a bank of accumulators per step)
    (dict(seed=0, T=3, reset="subtract"), dict(lanes=4, conv_engine="event")),
    (dict(seed=5, T=4, reset="subtract-next"), dict(lanes=8, conv_engine="event")),
    (dict(seed=6, T=3, reset="zero", convs=((4, 3, 2), (8, 3, 2), (4, 3, 1))), dict(lanes=2, k=2, conv_engine="event")),
]


def timed_dense_model(seed, sizes, T, *, coding="threshold", encoding="spikes", convs=()):
    """Dense (and convolution) layers over T steps, alternately lif (leak m = 6554, a
    multiplier; reset by subtraction, input shift 1) and if (reset at the next step)."""
    neurons = {i: ({"neuron": "lif", "leak": 6554, "reset": "subtract", "shift": 1} if i % 2 == 0
                   else {"neuron": "if", "reset": "subtract-next"}) for i in range(len(sizes) - 2 + len(convs))}
    return random_model(np.random.default_rng(seed), sizes, input_shape=(8, 8), convs=convs, input_encoding=encoding,
                        neurons=neurons, timesteps=T, input_coding=coding)


DENSE_CASES = [
    # hidden dense layers over time: static input (one bank), then T banks
    (dict(seed=3, sizes=[64, 16, 12, 10], T=3), dict(lanes=4)),
    # pixel input into cores of 8, 8 and 4 neurons
    (dict(seed=3, sizes=[64, 20, 10], T=4, coding="direct", encoding="pixels"), dict(lanes=8, max_neurons_per_core=8)),
    # a timed convolution's maps into a timed dense layer, k = 2 events a beat
    (dict(seed=3, sizes=[0, 12, 10], T=3, convs=((4, 3, 2),)), dict(lanes=4, k=2)),
]


@pytest.mark.parametrize("margs,hargs", DENSE_CASES)
def test_dense_layers_over_time(margs, hargs):
    """Hidden dense layers over time (a bank of accumulators per input step, read out group by
    group and step by step through the membrane lanes): 0 differences from the golden model in
    the Amaranth simulator, and the cycle model exact."""
    from bitsnn.sim.amaranth_run import run_accelerator

    m = timed_dense_model(**margs)
    imgs = np.random.default_rng(5).integers(0, 256, (4, 8, 8)).astype(np.uint8)
    g = golden.run(m, imgs)
    assert all(0 < s.mean() < 1 for s in g.tap_spikes)
    r = run_accelerator(m, imgs, mode="event", word=32, **hargs)
    assert compare(g, predict_cycles(m, g, mode="event", word=32, **hargs), r) == []


@pytest.mark.parametrize("margs,hargs", CASES)
def test_amaranth_matches_golden_on_every_step(margs, hargs):
    """Lane groups (lanes 2, 4), every reset, a leak by shift and one by multiplier, 4-bit kernels
    times pixels, k = 2 events a beat, the window stage for a first convolution, three
    convolutions, event stages with a bank per input step: 0 differences, and the cycle model
    exact."""
    from bitsnn.sim.amaranth_run import run_accelerator

    m = timed_model(**margs)
    imgs = np.random.default_rng(5).integers(0, 256, (5, 8, 8)).astype(np.uint8)
    g = golden.run(m, imgs)
    assert all(0 < s.mean() < 1 for s in g.tap_spikes)  # the test says something
    r = run_accelerator(m, imgs, mode="event", word=32, **hargs)
    assert [s.shape for s in r.spikes] == [s.shape for s in g.tap_spikes]
    cyc = predict_cycles(m, g, mode="event", word=32, **hargs)
    assert compare(g, cyc, r) == []


def test_the_plan_over_time():
    """A timed convolution's stores hold T maps (a step field between position and channel), the
    first one's input one map; its cycles grow with T only where each output position's T steps
    are run (the flush, the window); an event stage of T maps keeps a bank per step."""
    one = timed_model(0, 1, "subtract")
    four = timed_model(0, 4, "subtract")
    p1, p4 = hwplan.HardwarePlan.of(one, lanes=4), hwplan.HardwarePlan.of(four, lanes=4)
    c1, c4 = p4.layers[0].conv, p4.layers[1].conv
    assert c1.timed and c1.in_layout.steps == 1 and c1.out_layout.steps == 4 and c4.in_layout.steps == 4
    assert c4.out_layout.size == 4 * p1.layers[1].conv.out_layout.size
    assert c1.out_layout.address(3, 2, 1, 2) == (((2 << 2 | 1) << 2 | 2) << 2) | 3
    assert p4.layers[2].weight_columns == p1.layers[2].weight_columns == c4.out_layout.step_layout.size
    assert c1.event_stage_cycles(10, 3) - p1.layers[0].conv.event_stage_cycles(10, 3) == 3 * 8 * 8 * c1.groups
    assert c4.window_stage_cycles() - hwplan.WINDOW_LATENCY == 4 * (p1.layers[1].conv.window_stage_cycles()
                                                                    - hwplan.WINDOW_LATENCY)
    assert c1.membrane_bits == hwplan.membrane_bits(four.layers[0], 4)
    # an event stage of T input maps: a bank of accumulators per step, cycles as at one map
    e4 = hwplan.HardwarePlan.of(four, lanes=4, conv_engine="event").layers[1].conv
    assert (e4.engine, e4.banks, c1.banks) == ("event", 4, 1)
    assert e4.acc_words == 4 * hwplan.HardwarePlan.of(one, lanes=4, conv_engine="event").layers[1].conv.acc_words
    assert e4.event_stage_cycles(10, 3) == hwplan.EVENT_LEAD + 3 + 10 * 9 * e4.groups + 4 * 4 * e4.groups * 4


def _mnist_model():
    return timed_model(7, 3, "subtract", convs=((4, 3, 2), (8, 3, 2)), shape=(28, 28), threshold_spread=0.5)


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
@pytest.mark.parametrize("sim,n,engine", [("icarus", 20, "auto"), ("verilator", 300, "auto"), ("verilator", 300, "event")])
def test_timed_convolutions_on_mnist_images(sim, n, engine, mnist):
    """Two timed convolutions (lif, then if) over 3 steps of MNIST digits as Verilog: every spike
    of every step through the events tap, the scores, class, spike counts and cycles; the second
    convolution as a window stage (auto) or as an event stage with a bank per step."""
    from conftest import REPO

    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing

    if why := simulator_missing(sim):
        pytest.skip(why)
    hm = _mnist_model()
    imgs = mnist.test_images[:n]
    g = golden.run(hm, imgs)
    assert all(0.01 < s.mean() < 0.9 for s in g.tap_spikes)
    expected = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                    **{f"spikes{i}": s for i, s in enumerate(g.tap_spikes)})
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=REPO / ".cache" / "cosim", expected=expected,
                              accel_params={"lanes": 8, "conv_engine": engine})
    cyc = predict_cycles(hm, g, mode="event", lanes=8, word=32, conv_engine=engine)
    assert compare(g, cyc, r) == []


def test_the_uart_top_runs_a_timed_model():
    """INFER over the UART top (Amaranth's simulator, 4 requests in flight) with a timed model:
    every reply (class, cycles, spike counts over all steps, summed scores) equals the golden
    and cycle models. Direct coding sends each image once, as at one step."""
    from bitsnn import protocol as P
    from bitsnn.hw.top import UARTTop
    from bitsnn.sim.link_sim import stream_requests

    hm = timed_model(2, 3, "subtract", encoding="pixels")
    imgs = np.random.default_rng(8).integers(0, 256, (5, 64)).astype(np.uint8)
    imgs[1, ::2] = 0
    top = UARTTop(hm, clk_freq=4_000_000, baud=1_000_000, timeout_cycles=300, lanes=4)
    frames = [P.encode_request(P.Cmd.INFER, P.infer_payload(k, im, pixels=True)) for k, im in enumerate(imgs)]
    r = stream_requests(top, frames, window=P.INFER_SLOTS)
    g = golden.run(hm, imgs.reshape(-1, 8, 8))
    cyc = predict_cycles(hm, g, mode="event", lanes=4, word=32)
    want = [(P.Result(int(g.classes[k]), int(cyc[k]), tuple(int(c) for c in g.spike_counts[k]),
                      tuple(int(x) for x in g.scores[k])), k) for k in range(len(imgs))]
    assert [P.infer_reply(x.payload, len(hm.hidden_layers), hm.num_classes) for x in r.responses] == want


@pytest.mark.slow
@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
@pytest.mark.parametrize("sim,n", [("verilator", 10000), ("icarus", 20)])
def test_lif_tiny_on_mnist(sim, n, request, mnist):
    """The cached trained model over time (``lif_tiny_hwmodel``) as Verilog with the lanes
    ``bitsnn sim`` uses: every spike of every step of both convolutions, the summed scores, the
    class, the spike counts and the cycles, on all 10,000 test images on Verilator (the first
    20 on Icarus, which takes about 2 s an image here)."""
    from conftest import REPO

    from bitsnn.hwplan import default_lanes
    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing

    if why := simulator_missing(sim):
        pytest.skip(why)
    hm = request.getfixturevalue("lif_tiny_hwmodel")
    assert hm.timesteps == 3 and all(layer.neuron == "lif" for layer in hm.hidden_layers)
    imgs = mnist.test_images[:n]
    lanes = default_lanes(hm)
    g = golden.run(hm, imgs)
    expected = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                    **{f"spikes{i}": s for i, s in enumerate(g.tap_spikes)})
    r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=REPO / ".cache" / "cosim", expected=expected,
                              accel_params={"lanes": lanes, "word": 32})
    assert compare(g, predict_cycles(hm, g, mode="event", lanes=lanes, word=32), r) == []
    assert np.mean(g.classes == mnist.test_labels[:n]) > 0.9


@pytest.mark.parametrize("sim,n", [("amaranth", 4), pytest.param("verilator", 1000, marks=[pytest.mark.cosim,
                                                                                     pytest.mark.xdist_group("cosim")])])
def test_a_norse_graph_over_8_steps_runs_on_the_hardware_as_in_norse(sim, n):
    """A Norse network (Linear, ``IAFCell``, Linear: the exact form), imported from NIR over 8
    steps: the generated design's hidden spikes at every step and its summed scores equal Norse's
    own run, and its class and cycles the golden and cycle models'."""
    pytest.importorskip("norse")
    from conftest import REPO

    from bitsnn.model.nirlibs import norse_if_reference
    from bitsnn.nirgraph import from_nir

    _net, graph, run = norse_if_reference()
    hm = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=8)
    x = (np.random.default_rng(0).random((n, 100)) < 0.15).astype(np.float32)
    spikes, total = run(x, 8)
    imgs = (x * 255).astype(np.uint8)
    g = golden.run(hm, imgs)
    if sim == "amaranth":
        from bitsnn.sim.amaranth_run import run_accelerator

        r = run_accelerator(hm, imgs, mode="event", lanes=16, word=32)
    else:
        from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing

        if why := simulator_missing(sim):
            pytest.skip(why)
        r = run_accelerator_cosim(hm, imgs, simulator=sim, build_root=REPO / ".cache" / "cosim",
                                  accel_params={"lanes": 16, "word": 32})
    assert 0.1 < spikes.mean() < 0.9
    np.testing.assert_array_equal(r.spikes[0], spikes.reshape(n, -1))  # every spike of every step
    np.testing.assert_array_equal(r.scores, total)
    assert compare(g, predict_cycles(hm, g, mode="event", lanes=16, word=32), r) == []


def test_an_snntorch_leaky_graph_over_25_steps_runs_on_the_hardware(mnist):
    """snnTorch's ``Leaky`` (784-64-10, beta 0.9: a leak by multiplier, m = 6554; reset at the
    next step; thresholds of 4,096 units, far beyond one step's sums), imported over 25 steps: the
    design equals the golden model on every spike of every step of MNIST digits."""
    pytest.importorskip("snntorch")
    from bitsnn.model.nirlibs import snntorch_leaky_reference
    from bitsnn.nirgraph import from_nir
    from bitsnn.sim.amaranth_run import run_accelerator

    _net, graph, _run = snntorch_leaky_reference(mnist.train_images[:3000], mnist.train_labels[:3000])
    hm = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=25, reset="subtract-next")
    assert hm.hidden_layers[0].leak == 6554 and hm.hidden_layers[0].thresholds.min() > hm.hidden_layers[0].a_max
    imgs = mnist.test_images[:3]
    g = golden.run(hm, imgs)
    assert g.spike_counts.sum() > 0
    r = run_accelerator(hm, imgs, mode="event", lanes=32, word=32)
    assert compare(g, predict_cycles(hm, g, mode="event", lanes=32, word=32), r) == []
