"""Fast-SNN's signed integrate-and-fire neurons (``signed_if``): the integer rule of the file and
the golden model, the quantised ANN torch trains and its conversion over T = 2^b - 1 steps, the
exact path against the golden model on every spike of both signs, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitsnn import hwplan
from bitsnn.hwmodel import HardwareModel, HardwareModelError, Layer, random_model
from bitsnn.model.export import compare_with_golden, to_hardware_model
from bitsnn.model.network import build_model
from bitsnn.sim import golden
from bitsnn.sim.golden import SignedIFNeurons


def _layer(theta, bias=0, shift=0, compare=1):
    n = len(theta)
    return Layer("fc1", 4, n, input_kind="spikes", weight_bits=np.zeros((n, 1), np.uint8),
                 thresholds=np.asarray(theta, np.int64), compare=np.full(n, compare, np.int8),
                 bias=np.full(n, bias, np.int64), neuron="signed_if", shift=shift)


def _run(neurons, charges):
    neurons.start()
    return [neurons.fire(np.array([[a]], np.int64))[0, 0] for a in charges]


def test_the_signed_rule_by_hand():
    """V starts at theta/2; +1 at V >= theta (V -= theta); -1 only at V < 0 after more +1 than -1
    spikes (V += theta); a membrane below 0 with no +1 to take back stays silent."""
    n = SignedIFNeurons(_layer([4]))
    # V: 2 -> 7 (+1, 3) -> -4 (-1, 0) -> 0 -> -3 (count 0: silent) -> 9 (+1, 5) -> 10 (+1, 6)
    assert _run(n, [5, -7, 0, -3, 12, 5]) == [1, -1, 0, 0, 1, 1]
    # the input scaled by c * 2^shift, the bias added every step: V 2 -> 2 - 8 + 1 = -5, silent
    assert _run(SignedIFNeurons(_layer([4], bias=1, shift=2, compare=-1)), [2, -2]) == [0, 1]


def test_a_constant_input_spikes_its_rounded_level():
    """Fast-SNN's equivalence: over T steps of the same charge x, a neuron spikes
    clip(floor(T x / theta + 1/2), 0, T) times net, the quantised ANN's level."""
    rng = np.random.default_rng(0)
    theta = rng.integers(1, 40, 64) * 2
    x = rng.integers(-60, 90, 64)
    for T in (1, 3, 7, 15):
        n = SignedIFNeurons(_layer(theta))
        n.start()
        total = sum(n.fire(x[None]) for _ in range(T))[0].astype(np.int64)
        want = np.clip(np.floor(T * x / theta + 0.5), 0, T)
        assert np.array_equal(total, want), T


@pytest.mark.parametrize("spec,encoding", [("64-32-16-10", "pixels"), ("64-c4-c8p1-10", "pixels"),
                                           ("64-c4w3-12-10w4", "spikes")])
def test_the_exact_path_equals_golden_on_both_signs(spec, encoding):
    """The converted network (torch's integer path over T = 3 steps) against the golden model: 0
    differences on every spike of every step, -1 spikes among them; a pooling convolution sums
    its windows before its neurons."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.integers(0, 256, (256, 8, 8), dtype=np.uint8))
    y = torch.as_tensor(rng.integers(0, 10, 256))
    torch.manual_seed(0)
    model = build_model({"spec": spec, "input_shape": [8, 8], "input_encoding": encoding, "input_threshold": 64,
                         "timesteps": 3, "neuron": "signed_if"})
    assert model.one_pass
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    hw = to_hardware_model(model)
    assert {l.neuron for l in hw.hidden_layers} == {"signed_if"}
    assert all(np.all(l.thresholds % 2 == 0) and l.thresholds.min() >= 2 for l in hw.hidden_layers)
    assert compare_with_golden(model, hw, x.numpy())["mismatches"] == 0
    g = golden.run(hw, x.numpy())
    assert (g.step_spikes[-1] < 0).any() and (g.step_spikes[-1] > 0).any()
    assert np.array_equal(g.spikes[-1], np.abs(g.step_spikes[-1]).sum(axis=1))


def test_the_file_holds_signed_if_and_refuses_what_it_is_not():
    m = random_model(np.random.default_rng(0), [64, 16, 12, 10], input_shape=(8, 8), timesteps=3,
                     neurons={0: {"neuron": "signed_if", "shift": 1}, 1: {"neuron": "signed_if"}})
    assert "3 steps of threshold input, signed_if neurons" in m.describe()
    again = HardwareModel.from_bytes(m.to_bytes())
    assert again.content_hash == m.content_hash and again.layers[0].neuron == "signed_if"
    layer = m.layers[0]
    import dataclasses

    for change, msg in [({"thresholds": layer.thresholds + 1}, "signed_if thresholds must be even"),
                        ({"reset": "zero"}, "signed_if neurons have their own reset rule, not reset 'zero'")]:
        with pytest.raises(HardwareModelError, match=msg):
            dataclasses.replace(m, layers=(dataclasses.replace(layer, **change), *m.layers[1:]))
    hwplan.check_supported(m)  # dense layers of them run in the hardware
    conv = random_model(np.random.default_rng(0), [0, 10], input_shape=(8, 8), convs=((4, 3, 2),), timesteps=3,
                        neurons={0: {"neuron": "signed_if"}})
    with pytest.raises(hwplan.UnsupportedLayerError, match="conv1: a convolution of signed_if neurons"):
        hwplan.HardwarePlan.of(conv, lanes=4)


def test_act_bits_sets_the_steps_and_refuses_what_does_not_go_with_them():
    from bitsnn import BitsnnError
    from bitsnn.model.train import resolve_config

    cfg = resolve_config("fast-tiny")
    assert (cfg.neuron, cfg.timesteps, cfg.act_bits) == ("signed_if", 3, 2)
    assert resolve_config("tiny", act_bits=3).timesteps == 7
    for kw, msg in [({"act_bits": 2, "timesteps": 4}, r"--act-bits 2 runs T = 2\^2 - 1 = 3 steps, not --steps 4"),
                    ({"act_bits": 2, "neuron": "lif"}, "--act-bits converts to signed_if neurons, not --neuron lif"),
                    ({"act_bits": 5}, r"--act-bits must be 1\.\.4, got 5"),
                    ({"finetune_epochs": 2}, "--finetune-epochs fine-tunes a converted quantised ANN: give --act-bits"),
                    ({"act_bits": 1, "coding": "rate", "rate_seed": 3},
                     "signed_if neurons train as a quantised ANN of one input: direct or threshold coding")]:
        with pytest.raises(BitsnnError, match=msg):
            resolve_config("tiny", **kw)


def test_training_converts_with_the_levels_it_learned(mnist):
    """One epoch of the quantised ANN on 2,000 MNIST digits, converted: the first layer's net spike
    counts equal the ANN's levels for almost every neuron (its input is the same at every step),
    and the converted network classifies as well as the ANN within a few points."""
    from bitsnn.data import Dataset
    from bitsnn.model.train import conversion_check, resolve_config, train_model

    cfg = resolve_config("784-c8-c16-10", act_bits=2, epochs=1, limit_train=2000, input_encoding="pixels",
                         input_threshold=64, lr=5e-3, finetune_epochs=1)
    ds = Dataset("custom", mnist.source, mnist.train_images[:2000], mnist.train_labels[:2000],
                 mnist.test_images[:1000], mnist.test_labels[:1000])
    model, metrics = train_model(cfg, ds, progress=False, log=lambda m: None)
    c = metrics["conversion"]
    assert c == conversion_check(model, ds.test_images, ds.test_labels)
    assert c["level_agreement"][0] > 0.99 and c["qann_accuracy"] > 0.5
    assert abs(c["snn_accuracy"] - c["qann_accuracy"]) < 0.05
    assert metrics["test_accuracy"] == c["snn_accuracy"]
    # b = 1: one step, where a signed neuron is a step neuron at theta/2 and the levels agree exactly
    one = conversion_check(_one_step_copy(model), ds.test_images[:200], ds.test_labels[:200])
    assert len(one["level_agreement"]) == 2
    # the layer-wise fine-tuning: the second layer, one epoch, kept only if it helped
    (ft,) = metrics["finetune"]
    assert (ft["layer"], ft["epoch"]) == (1, 1) and ft["mse"] > 0 and isinstance(ft["kept"], bool)
    hw = to_hardware_model(model)
    assert compare_with_golden(model, hw, ds.test_images[:200])["mismatches"] == 0


def test_a_signed_lane_in_amaranth_steps_as_the_golden_model():
    """hw/neuron.py's signed_if lane (the membrane update the hardware will run): over 40
    inferences of 7 steps of random sums, its +1 and -1 spikes equal the golden model's."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator

    from bitsnn.hw.neuron import signed_update

    T, R = 7, 60
    layer = _layer([10], bias=-3, shift=1)
    width = hwplan.signed_bits(T * (R * 2 + 3) + 10)
    m = Module()
    a, first, en = Signal(signed(8)), Signal(), Signal()
    v, count = Signal(signed(width)), Signal(range(T + 1))
    up, down, after, count_after = signed_update(m, v, count, a, theta=10, bias=-3, first=first, shift=1,
                                                 width=width)
    with m.If(en):
        m.d.sync += [v.eq(after[:width]), count.eq(count_after)]
    rng = np.random.default_rng(4)
    charges = rng.integers(-R, R + 1, (40, T))
    got = []

    async def bench(ctx):
        for row in charges:
            for t, q in enumerate(row):
                ctx.set(a, int(q))
                ctx.set(first, t == 0)
                ctx.set(en, 1)
                got.append(int(ctx.get(up)) - int(ctx.get(down)))
                await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [s for row in charges for s in _run(SignedIFNeurons(layer), row)]
    assert got == want and want.count(-1) > 10 and want.count(1) > 10


@pytest.mark.slow
def test_fast_tiny_preset_on_a_custom_28x28_set(tmp_path, capsys, write_set):
    """The fast-tiny preset end to end on a data set other than MNIST (the shapes test_conv.py
    draws): train the quantised ANN, convert, fine-tune, export with golden = torch on every spike
    of its whole test set; the hardware steps refuse it in one line, before any work."""
    from test_bad_input import run_main
    from test_conv import _shapes_set

    data = tmp_path / "shapes"
    write_set(data, _shapes_set(n_train=2000))
    ckpt, bsnn = tmp_path / "f.ckpt", tmp_path / "f.bsnn"
    r = run_main(capsys, "train", "--preset", "fast-tiny", "--epochs", "4", "--data-dir", data, "-o", ckpt)
    assert r.returncode == 0, r.stderr
    assert "fine-tune layer 1, epoch 1/1" in r.stdout and "conversion: quantised ANN test accuracy" in r.stdout
    r = run_main(capsys, "export", ckpt, "--data-dir", data, "-o", bsnn)
    assert r.returncode == 0, r.stderr
    assert "golden vs torch: 0 mismatches on 100 images" in r.stdout + r.stderr
    model = HardwareModel.load(bsnn)
    assert model.spec == "784-c8w4-c32-10w4" and model.timesteps == 3 and model.meta["test_accuracy"] > 0.6
    r = run_main(capsys, "sim", "--model", bsnn, "--simulator", "amaranth", "--images", "4", "--data-dir", data)
    assert r.returncode == 1 and "conv1: a convolution of signed_if neurons (its pool sums its windows before them) " \
        "has no hardware stage yet" in r.stderr


def _signed_model(seed, sizes, T, coding="threshold", **kw):
    neurons = {i: {"neuron": "signed_if", "shift": i % 2} for i in range(len(sizes) - 2)}
    return random_model(np.random.default_rng(seed), sizes, input_shape=(8, 8), neurons=neurons, timesteps=T,
                        input_coding=coding, **kw)


HW_CASES = [
    # (model, accelerator parameters)
    (dict(seed=0, sizes=[64, 16, 10], T=3), dict(lanes=4)),
    (dict(seed=1, sizes=[64, 16, 12, 10], T=3), dict(lanes=4, k=2)),  # signed spikes into signed neurons
    (dict(seed=2, sizes=[64, 20, 10], T=7, weight_bits={0: 4, 1: 3}), dict(lanes=8, max_neurons_per_core=8)),
    # given input: membranes that fall after a +1 spike, so -1 spikes in both layers
    (dict(seed=9, sizes=[64, 16, 12, 10], T=5, coding="given", threshold_spread=0.6), dict(lanes=4)),
    (dict(seed=9, sizes=[64, 16, 12, 10], T=5, coding="given", threshold_spread=0.6, weight_bits={1: 3, 2: 4}),
     dict(lanes=4, accumulators="memory")),  # the output layer's accumulators in memory (the ECP5's)
]


@pytest.mark.parametrize("margs,hargs", HW_CASES)
def test_signed_dense_layers_in_amaranth_match_the_golden_model(margs, hargs):
    """Dense layers of signed_if neurons in the generated design (membrane lanes with their
    counts; a -1 spike a store bit of its own that the next layer's events subtract): 0
    differences from the golden model on every spike of both signs of every step, the summed
    scores, the class, the spike counts and the cycles."""
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cosim.cli import compare
    from bitsnn.sim.cycles import predict_cycles

    m = _signed_model(**margs)
    rng = np.random.default_rng(5)
    x = ((rng.random((5, m.timesteps, 8, 8)) < 0.4).astype(np.uint8) if m.input_coding == "given"
         else rng.integers(0, 256, (5, 8, 8)).astype(np.uint8))
    g = golden.run(m, x)
    assert all(0 < np.abs(s).mean() < 1 for s in g.tap_spikes)
    if margs.get("coding") == "given":
        assert all((s < 0).any() for s in g.tap_spikes)  # the -1 spikes are tested too
    r = run_accelerator(m, x, mode="event", word=32, **hargs)
    plan = {k: v for k, v in hargs.items() if k != "accumulators"}  # the same cycles either way
    assert compare(g, predict_cycles(m, g, mode="event", word=32, **plan), r) == []


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
@pytest.mark.parametrize("sim,n", [("icarus", 4), ("verilator", 300)])
def test_signed_dense_layers_on_mnist_digits_as_verilog(sim, n, mnist):
    """Two dense layers of signed_if neurons over 4 steps of MNIST digits given as events
    (pixel > 255 (t+1)/5 at step t), as Verilog: every spike of both signs of every step through
    the events tap, the scores, class, spike counts and cycles."""
    from conftest import REPO
    from test_input_coding_hw import _digit_events

    from bitsnn.sim.cosim.cli import compare
    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing
    from bitsnn.sim.cycles import predict_cycles

    if why := simulator_missing(sim):
        pytest.skip(why)
    hm = random_model(np.random.default_rng(7), [784, 48, 24, 10], input_shape=(28, 28), timesteps=4,
                      input_coding="given", threshold_spread=0.8,
                      neurons={0: {"neuron": "signed_if", "shift": 1}, 1: {"neuron": "signed_if"}})
    x = _digit_events(mnist.test_images[:n], 4)
    g = golden.run(hm, x)
    assert all((s < 0).any() and 0.01 < np.abs(s).mean() < 0.9 for s in g.tap_spikes)
    expected = dict(classes=g.classes, scores=g.scores, spike_counts=g.spike_counts,
                    **{f"spikes{i}": s for i, s in enumerate(g.tap_spikes)})
    r = run_accelerator_cosim(hm, x, simulator=sim, build_root=REPO / ".cache" / "cosim", expected=expected,
                              accel_params={"lanes": 8})
    assert compare(g, predict_cycles(hm, g, mode="event", lanes=8, word=32), r) == []


def test_at_one_step_a_signed_neuron_is_a_step_neuron_at_half_its_threshold():
    """b = 1, T = 1: V starts at theta/2, so the neuron fires +1 exactly when its charge
    c*a*2^s + b >= theta/2, and never -1 (no +1 to take back): a step neuron."""
    rng = np.random.default_rng(3)
    theta = rng.integers(1, 30, 200) * 2
    layer = _layer(theta, bias=-1, shift=1, compare=-1)
    a = rng.integers(-40, 40, (50, 200))
    n = SignedIFNeurons(layer)
    n.start()
    s = n.fire(a)
    assert set(np.unique(s)) <= {0, 1}
    assert np.array_equal(s, (-a * 2 - 1 >= theta // 2).astype(np.int8))


def _one_step_copy(model):
    """``model`` rebuilt at one step (b = 1), its parameters kept."""
    import copy

    arch = dict(model.arch, timesteps=1)
    one = build_model(arch)
    one.load_state_dict(copy.deepcopy(model.state_dict()))
    return one.eval()
