"""ALBSNN's global sum pooling head (kind ``global_pool``, format version 6): the file, the golden
model, torch's exact path, the spec, NIR both ways, the hardware stage (plan, Amaranth, cycles,
estimate; co-simulation in tests/test_cosim.py), and what is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bitsnn import hwplan
from bitsnn.hwmodel import GapLayer, HardwareModel, HardwareModelError, random_model
from bitsnn.sim import golden


def gap_model(seed=0, T=1, convs=((4, 3, 2), (10, 3, 1)), shape=(8, 8), classes=0):
    """Random convolutions into a global sum pooling head (a class a channel of the last, or
    ``classes`` classes of its channels); over T steps with lif then if neurons."""
    neurons = {0: {"neuron": "lif", "leak": 8192, "shift": 1}, 1: {"neuron": "if"}} if T > 1 else None
    m = random_model(np.random.default_rng(seed), [0, 10], input_shape=shape, convs=convs, timesteps=T,
                     neurons=neurons, threshold_spread=0.5)
    gap = GapLayer("gap3", 0, classes, in_shape=m.layers[-2].out_shape)
    return dataclasses.replace(m, layers=(*m.layers[:-1], gap))


def test_the_file_holds_a_gap_head_in_version_6():
    m = gap_model()
    assert m.spec == "64-c4-c10p1-gap" and m.format_version == 6 and m.num_classes == 10
    assert m.weight_bits_total == sum(l.rows * l.fan_in for l in m.layers[:-1])  # the head holds no weights
    data = m.to_bytes()
    back = HardwareModel.from_bytes(data)
    assert back.to_bytes() == data and back.describe() == m.describe()
    assert back.layers[-1].kind == "global_sum_pool" and back.layers[-1].in_shape == (10, 4, 4)
    # the same layers with a dense head stay version 3
    assert random_model(np.random.default_rng(0), [0, 10], input_shape=(8, 8), convs=((4, 3, 2),)).format_version == 3


def test_a_head_of_channel_populations_round_trips():
    m = gap_model(convs=((4, 3, 2), (20, 3, 1)), classes=5)
    assert m.spec == "64-c4-c20p1-gap5" and m.num_classes == 5 and m.layers[-1].group == 4
    assert HardwareModel.from_bytes(m.to_bytes()).to_bytes() == m.to_bytes()
    with pytest.raises(HardwareModelError, match="20 channels do not split into 6 classes"):
        gap_model(convs=((4, 3, 2), (20, 3, 1)), classes=6)


@pytest.mark.parametrize("classes", [0, 5])
def test_the_golden_scores_are_each_channels_spikes_summed(classes):
    for T in (1, 3):
        m = gap_model(1, T, convs=((4, 3, 2), (10, 3, 1)), classes=classes)
        k = classes or 10
        x = np.random.default_rng(2).integers(0, 256, (40, 8, 8)).astype(np.uint8)
        g = golden.run(m, x)
        last = g.step_spikes[-1].astype(np.int64)  # (B, T, C*H*W), channel by channel
        want = last.reshape(40, T, k, -1).sum(axis=(1, 3))  # each class its consecutive channels
        assert np.array_equal(g.scores, want) and want.any()
        assert np.array_equal(g.classes, np.argmax(want, axis=1))
        assert np.array_equal(g.input_events[:, -1], last.sum(axis=(1, 2)))
        assert np.array_equal(g.synaptic_events[:, -1], g.input_events[:, -1])  # one counter update an event


@pytest.mark.parametrize("edit,needle", [
    (lambda m: dataclasses.replace(m, layers=(m.layers[0], GapLayer("g", in_shape=m.layers[0].out_shape), m.layers[-1])),
     "has no neurons: it is the output layer or none"),
    (lambda m: dataclasses.replace(m, layers=(m.layers[0], GapLayer("g", in_shape=(3, 4, 4)))),
     r"takes \[3, 4, 4\] maps but the previous stage gives \[4, 4, 4\]"),
])
def test_a_misplaced_gap_head_is_refused(edit, needle):
    with pytest.raises(HardwareModelError, match=needle):
        edit(gap_model())


def test_a_gap_head_after_a_dense_layer_is_refused():
    m = random_model(np.random.default_rng(0), [64, 16, 10])
    with pytest.raises(HardwareModelError, match="a global sum pool must follow the input image or a convolution"):
        dataclasses.replace(m, layers=(m.layers[0], GapLayer("g", in_shape=(16, 1, 1))))


def test_a_gap_head_in_a_version_5_file_is_refused():
    data = bytearray(gap_model().to_bytes())
    data[8:12] = (5).to_bytes(4, "little")
    import json
    import struct

    hlen = struct.unpack("<I", data[12:16])[0]
    header = json.loads(bytes(data[16:16 + hlen]))
    header["version"] = 5
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    data = bytes(data[:12]) + struct.pack("<I", len(blob)) + blob + bytes(data[16 + hlen:])
    with pytest.raises(HardwareModelError, match="a global_sum_pool layer in a version 5 file"):
        HardwareModel.from_bytes(data)


def test_its_plan_is_one_lane_group_of_class_counters():
    """The head's hardware plan: a core of one counter a class in one lane group, reading the last
    convolution's store (every step's maps), no weight reads."""
    m = gap_model(T=2, convs=((4, 3, 2), (20, 3, 1)), classes=5)
    lp = hwplan.HardwarePlan.of(m, lanes=8).layers[-1]
    assert [(c.n, c.lanes, c.groups) for c in lp.cores] == [(5, 5, 1)] and lp.groups == 1
    assert lp.input_layout == hwplan.MapLayout(20, 4, 4, 2) and lp.conv is None
    assert lp.weight_reads(np.array([7]), "event", 32)[0].tolist() == [0]


def gap_first(input_kind="spikes", **changes):
    """A head on the 8 x 8 input image alone: one class, no hidden layer."""
    return dataclasses.replace(gap_model(), layers=(GapLayer("gap1", 0, 1, in_shape=(1, 8, 8), input_kind=input_kind),),
                               **changes)


@pytest.mark.parametrize("params, needle", [
    ({"mode": "dense"}, "gap1: a global sum pool runs in mode='event' only"),
    ({"word": 24}, "a model with a global sum pool needs a power-of-two word, not 24"),
])
def test_what_its_plan_refuses(params, needle):
    with pytest.raises((hwplan.UnsupportedLayerError, ValueError), match=needle):
        hwplan.HardwarePlan.of(gap_first(), lanes=8, **params)


def test_a_gap_of_pixels_has_no_hardware():
    pix = gap_first("pixels", input_encoding="pixels", input_coding="direct")
    assert golden.run(pix, np.zeros((1, 8, 8), np.uint8)).scores.shape == (1, 1)
    with pytest.raises(hwplan.UnsupportedLayerError, match="a global sum pool of the image's pixels has no hardware"):
        hwplan.HardwarePlan.of(pix, lanes=8)


@pytest.mark.parametrize("args", [
    {},                                                      # a class a channel
    {"convs": ((4, 3, 2), (20, 3, 1)), "classes": 5},        # populations of 4 channels
    {"T": 2},                                                # every step's maps (timed convolutions)
    {"first": True},                                         # on the input spikes, no hidden layer
])
def test_the_gap_stage_is_bit_exact_and_cycle_exact(args):
    """The GapStage in Amaranth's simulator: every score, class and spike count as the golden
    model's, and the cycles the exact cycle model predicts (an event layer's with G = 1)."""
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cycles import predict_cycles

    m = gap_first() if args.pop("first", False) else gap_model(3, **args)
    rng = np.random.default_rng(1)  # sparse to dense images
    x = (rng.random((5, 8, 8)) < np.linspace(0.1, 0.9, 5)[:, None, None]).astype(np.uint8) * 255
    g = golden.run(m, x)
    r = run_accelerator(m, x, lanes=8)
    assert np.array_equal(r.scores, g.scores) and np.array_equal(r.classes, g.classes)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    assert len(np.unique(r.scores)) > 1 and len(np.unique(r.scores.sum(axis=1))) > 1  # the scores vary
    assert np.array_equal(r.cycles, r.measured_cycles)
    assert np.array_equal(r.cycles, predict_cycles(m, g, mode="event", lanes=8, word=32))


def test_the_estimate_counts_its_counters_and_no_memory():
    """The head adds its counters and router, and no block RAM, to the design's estimate."""
    from bitsnn.hw.estimate import estimate_resources

    m = gap_model()
    e = estimate_resources(m, lanes=8)
    head = e["breakdown"]["layer2"]
    assert head["bram_blocks"] == 0 and head["spram_blocks"] == 0
    A = hwplan.HardwarePlan.of(m, lanes=8).score_bits
    assert head["ffs"] >= 10 * A and 0 < head["luts"] < 400


def test_the_spec_takes_gap_last_after_a_convolution():
    from bitsnn.model.network import parse_spec, spec_classes

    assert parse_spec("784-c8-c10p1-gap")[-1] == ("gap", 10) and spec_classes("784-c8-c10p1-gap") == 10
    assert parse_spec("784-c8-c40p1-gap10")[-1] == ("gap", 10) and spec_classes("784-c8-c40p1-gap10") == 10
    for bad, needle in (("784-c8-gap-10", "ends the spec"), ("784-100-gap", "ends the spec"),
                        ("784-c8-c10-gapw4", "has no weights"), ("784-c8-c30p1-gap4", "do not split into 4")):
        with pytest.raises(ValueError, match=needle):
            parse_spec(bad)


@pytest.mark.parametrize("spec", ["784-c4w4-c8-c10p1-gap", "784-c4w4-c8-c20p1-gap10"])
def test_torch_exact_path_equals_golden_and_nir_round_trips(mnist, tmp_path, spec):
    """A trained-from-scratch (untrained) network with a gap head, exported: torch's exact path
    and the golden model agree on every spike and score of 300 digits; its NIR graph (SumPool2d
    over each whole map, Flatten; a Linear of 0/1 weights for a class of several channels) imports
    back to the same file's arithmetic."""
    torch = pytest.importorskip("torch")
    from bitsnn.model.export import compare_with_golden, to_hardware_model
    from bitsnn.model.network import build_model
    from bitsnn.nirgraph import read_nir, write_nir

    torch.manual_seed(0)
    model = build_model({"spec": spec, "input_shape": [28, 28], "input_encoding": "pixels",
                         "input_threshold": 128, "surrogate": "box"})
    for m in model.modules():  # spread the thresholds a little so that the head's channels differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    model.eval()
    hw = to_hardware_model(model)
    assert hw.spec == spec and hw.layers[-1].in_shape[1:] == (7, 7) and hw.num_classes == 10
    x = mnist.test_images[:300]
    res = compare_with_golden(model, hw, x)
    assert res["mismatches"] == 0
    g = golden.run(hw, x)
    assert len(set(g.classes.tolist())) > 1
    write_nir(hw, tmp_path / "g.nir")
    back = read_nir(tmp_path / "g.nir")
    assert back.spec == hw.spec
    gb = golden.run(back, x)
    assert np.array_equal(gb.scores, g.scores) and all(np.array_equal(a, b) for a, b in zip(gb.spikes, g.spikes))


def test_the_report_of_a_head_alone_has_no_weights():
    """A model of a global sum pool alone holds no weights: the report's weights section says so
    (it used to take the widest of no widths)."""
    from bitsnn.report.cli import _weight_lines
    from bitsnn.report.core import weights_section

    m = gap_first()
    full = gap_model()
    assert m.weight_layers == () and full.weight_layers == full.layers[:-1]
    w = weights_section(m)
    assert (w["layers"], w["weight_bits"], w["widest_bits"], w["saving"]) == ([], 0, 0, 0.0)
    assert _weight_lines(w) == ["weights: none"]
