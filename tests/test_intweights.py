"""Multi-bit weights (format version 4, ``int_dense`` and ``int_conv2d``): the file, the golden
model against a plain reference, torch's exact path against the golden model, and the refusal of
the stages that have no multi-bit hardware yet."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from bitsnn import hwplan
from bitsnn.hwmodel import (
    HardwareModel,
    HardwareModelError,
    ConvLayer,
    Layer,
    _content_hash,
    random_model,
    weight_limit,
)
from bitsnn.sim import golden
from test_conv import _reference


def _int_model(seed=0, enc="pixels", bits=None):
    """Pixels into a 4-bit convolution, a binary one, a 3-bit hidden layer and a 4-bit output."""
    return random_model(np.random.default_rng(seed), [196, 12, 10], input_encoding=enc, input_shape=(14, 14),
                        convs=((4, 3, 2), (6, 3, 1)), weight_bits=bits or {0: 4, 2: 3, 3: 4}, threshold_spread=0.5)


def _header(data: bytes):
    (hlen,) = struct.unpack("<I", data[12:16])
    return json.loads(data[16:16 + hlen]), data[16 + hlen:]


def _rewrite(data: bytes, edit, version=None) -> bytes:
    header, payload = _header(data)
    edit(header)
    if version is not None:
        header["version"] = version
    header["content_hash"] = _content_hash(header, payload)
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + struct.pack("<II", header["version"], len(blob)) + blob + payload


def test_weight_limits():
    assert [weight_limit(b) for b in (1, 2, 3, 4, 8)] == [1, 1, 3, 7, 127]


def test_int_model_round_trips_as_version_4(tmp_path):
    model = _int_model()
    assert [l.kind for l in model.layers] == ["int_conv2d", "binary_conv2d", "int_dense", "int_dense"]
    assert model.spec == "196-c4w4-c6p1-12w3-10w4"
    assert model.weight_bits_total == 4 * 9 * 4 + 6 * 36 + 294 * 12 * 3 + 12 * 10 * 4
    data = model.save(tmp_path / "w.bsnn").read_bytes()
    assert data[8:12] == (4).to_bytes(4, "little")
    header, _ = _header(data)
    assert header["layers"][0]["bits"] == 4 and "bits" not in header["layers"][1]
    assert header["arrays"]["layers.0.weights"]["dtype"] == "i1"
    assert header["arrays"]["layers.0.weights"]["shape"] == [4, 9]
    assert "layers.0.weight_bits" not in header["arrays"] and "layers.1.weight_bits" in header["arrays"]
    back = HardwareModel.load(tmp_path / "w.bsnn")
    assert back.to_bytes() == data
    for a, b in zip(model.layers, back.layers):
        assert type(a) is type(b) and a.bits == b.bits
        np.testing.assert_array_equal(a.weights_int(), b.weights_int())
    # R grows with the largest weight: 255 * 9 * 7 for the 4-bit pixel convolution
    assert back.layers[0].a_max == 255 * 9 * 7 and back.layers[2].a_max == 294 * 3


@pytest.mark.parametrize("enc", ["pixels", "spikes"])
def test_golden_matches_the_plain_reference(enc):
    model = _int_model(seed=5, enc=enc)
    images = np.random.default_rng(1).integers(0, 256, size=(17, 14, 14), dtype=np.uint8)
    g = golden.run(model, images)
    want_spikes, want_scores = _reference(model, images)
    for got, want in zip(g.spikes, want_spikes):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(g.scores, want_scores)
    assert all(0 < s.mean() < 1 for s in g.spikes)  # real decisions in every layer
    # the weights take more than +-1: the multi-bit arithmetic is exercised
    assert np.abs(model.layers[0].weights_int()).max() > 1


def test_int_weights_are_not_pm1_bits():
    layer = _int_model().layers[0]
    with pytest.raises(TypeError, match="4-bit weights are not"):
        layer.weights_pm1()


@pytest.mark.parametrize("edit,version,match", [
    (lambda h: None, 3, r"layer 0 \(conv1\): a int_conv2d layer in a version 3 file"),
    (lambda h: h["layers"][0].update(bits=9), None, r"layer 0 \(conv1\): weight bits 9 \(expected 2..8\)"),
    (lambda h: h["layers"][0].update(bits=True), None, r"layers\[0\].bits must be an integer, got boolean true"),
    (lambda h: h["layers"][0].pop("bits"), None, r"layers\[0\]: missing key 'bits'"),
    (lambda h: h["layers"][1].update(bits=4), None, r"layers\[1\]: unknown key 'bits'"),
])
def test_bad_int_layers_refused(edit, version, match):
    data = _int_model().to_bytes()
    with pytest.raises(HardwareModelError, match=match):
        HardwareModel.from_bytes(_rewrite(data, edit, version))


def test_weights_outside_the_bits_range_refused():
    model = _int_model()
    data = bytearray(model.to_bytes())
    header, payload = _header(bytes(data))
    off = len(data) - len(payload) + header["arrays"]["layers.3.weights"]["offset"]
    data[off] = 8  # 8 > 7, the 4-bit range
    good_hash = _content_hash(header, bytes(data[len(data) - len(payload):]))
    fixed = _rewrite(bytes(data), lambda h: h.update(content_hash=good_hash))
    with pytest.raises(HardwareModelError, match=r"layer 3 \(fc2\): a weight of row 0 is outside the 4-bit range \[-7, 7\]"):
        HardwareModel.from_bytes(fixed)
    o = model.layers[3]
    with pytest.raises(HardwareModelError, match=r"weights must be int8 of shape \(10, 12\)"):
        HardwareModel(input_shape=(12,), input_encoding="spikes", input_threshold=1,
                      layers=(Layer("fc", 12, 10, bits=4, weights=o.weights.astype(np.int16)),))


def test_int_conv_layer_is_a_convolution():
    layer = _int_model().layers[0]
    assert isinstance(layer, ConvLayer) and layer.bits == 4 and layer.kernels_int().shape == (4, 1, 3, 3)
    assert layer.header_fields() == {"in_shape": [1, 14, 14], "channels": 4, "kernel": 3, "pool": 2, "bits": 4}


def test_what_multibit_weights_do_not_support_is_refused_in_one_line(tmp_path, capsys):
    """Dense mode and the window stage (AND-popcounts) take +-1 weights, run-time writes whole
    weights a byte: each is refused naming the layer, before any work."""
    from test_bad_input import assert_one_line_error, run_main

    from bitsnn.hw import Accelerator

    model = _int_model()
    with pytest.raises(hwplan.UnsupportedLayerError, match=r"conv1: convolutions run in mode='event' only"):
        hwplan.HardwarePlan.of(model, mode="dense")
    dense = random_model(np.random.default_rng(0), [16, 8, 3], weight_bits={1: 2})
    with pytest.raises(hwplan.UnsupportedLayerError, match=r"fc2: multi-bit weights run in mode='event' only"):
        hwplan.HardwarePlan.of(dense, mode="dense")
    spikes = _int_model(enc="spikes", bits={1: 3})  # a 3-bit convolution of spike maps
    with pytest.raises(hwplan.UnsupportedLayerError, match=r"conv2: a window stage takes \+-1 kernels; 3-bit kernels"):
        hwplan.HardwarePlan.of(spikes, conv_engine="window")
    assert hwplan.HardwarePlan.of(spikes).layers[1].conv.engine == "event"  # auto: the event stage
    odd = random_model(np.random.default_rng(0), [16, 8, 3], weight_bits={1: 3})
    with pytest.raises(ValueError, match=r"run-time weight writes: layer \d \(fc2\) has 3-bit weights; run-time writes take 1, 2, 4 or 8-bit weights"):
        Accelerator(odd, writable=True, lanes=8)
    ok = Accelerator(dense, writable=True, lanes=8)  # 2-bit weights: four a byte
    ok._MustUse__silence = True  # built, not elaborated
    assert ok.writable
    path = model.save(tmp_path / "w.bsnn")
    r = run_main(capsys, "sim", "--model", path, "--simulator", "amaranth", "--images", "1", "--conv-engine", "window")
    assert_one_line_error(r, "sim", "conv1: a window stage takes +-1 kernels")


@pytest.mark.parametrize("enc,convs,dense,bits,acc", [
    ("pixels", ((4, 3, 2), (8, 3, 2)), [16, 10], {0: 4, 3: 4}, "registers"),  # conv-tiny's shape: 4-bit pixel conv, 4-bit output
    ("spikes", ((4, 3, 2),), [16, 10], {0: 3, 1: 2, 2: 5}, "memory"),        # spike maps, ternary hidden, memory accumulators
    ("pixels", (), [16, 10], {0: 4, 1: 3}, "registers"),                       # pixels into a 4-bit dense layer
])
def test_accelerator_with_multibit_weights_matches_golden(enc, convs, dense, bits, acc, mnist):
    """The Amaranth design (event cores and event convolution stages adding b-bit weights, pixel
    x weight products) against the golden model on MNIST digits: every spike, spike counts,
    scores, class, and the cycle model exactly."""
    from bitsnn.sim.amaranth_run import run_accelerator
    from bitsnn.sim.cycles import predict_cycles

    model = random_model(np.random.default_rng(5), [784, *dense], input_encoding=enc, input_shape=(28, 28),
                         convs=convs, input_threshold=100, threshold_spread=0.5, weight_bits=bits)
    images = mnist.test_images[:2]
    r = run_accelerator(model, images, lanes=8, accumulators=acc)
    g = golden.run(model, images)
    assert all(0 < s.mean() < 1 for s in g.spikes)
    for a, b in zip(r.spikes, g.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.spike_counts, g.spike_counts)
    np.testing.assert_array_equal(r.scores, g.scores)
    np.testing.assert_array_equal(r.classes, g.classes)
    np.testing.assert_array_equal(r.cycles, predict_cycles(model, g, mode="event", lanes=8, word=32))
    np.testing.assert_array_equal(r.cycles, r.measured_cycles)


@pytest.mark.cosim
@pytest.mark.xdist_group("cosim")
@pytest.mark.parametrize("sim,n", [("icarus", 20), ("verilator", 200)])
def test_multibit_conv_model_cosim(sim, n, mnist):
    """The generated Verilog of a 4-bit pixel convolution, a window stage, a 3-bit hidden layer and
    a 4-bit output layer on Icarus and Verilator: every spike of every layer, scores, class, cycles."""
    from conftest import REPO
    from test_cosim import expected_of

    from bitsnn.sim.cosim.runner import run_accelerator_cosim, simulator_missing
    from bitsnn.sim.cycles import predict_cycles

    if (why := simulator_missing(sim)):
        pytest.skip(why)
    model = random_model(np.random.default_rng(5), [784, 16, 10], input_encoding="pixels", input_shape=(28, 28),
                         convs=((4, 3, 2), (8, 3, 2)), input_threshold=100, threshold_spread=0.5,
                         weight_bits={0: 4, 2: 3, 3: 4})
    images = mnist.test_images[:n]
    g = golden.run(model, images)
    r = run_accelerator_cosim(model, images, simulator=sim, build_root=REPO / ".cache" / "cosim",
                              expected=expected_of(g), accel_params={"lanes": 8})
    for a, b in zip(r.spikes, g.spikes):
        assert np.array_equal(a, b)
    assert np.array_equal(r.classes, g.classes) and np.array_equal(r.scores, g.scores)
    assert np.array_equal(r.spike_counts, g.spike_counts)
    assert np.array_equal(r.cycles, r.measured_cycles)
    assert np.array_equal(r.cycles, predict_cycles(model, g, mode="event", lanes=8, word=32))


def test_write_column_bytes_lay_out_the_weight_memory_columns():
    """WRITE_WEIGHTS data: a dense layer after a convolution has a column per map-store address
    (padding columns zero); b-bit weights are two's-complement fields, 8/b a byte, the lowest
    neuron lowest; a convolution has none; 3-bit weights are refused."""
    from bitsnn import protocol as P
    from bitsnn.hwplan import MapLayout, write_columns

    model = random_model(np.random.default_rng(2), [196, 7, 10], input_encoding="pixels", input_shape=(14, 14),
                         convs=((3, 3, 2),), weight_bits={0: 4, 1: 4, 2: 2})
    lay = MapLayout(3, 7, 7)  # 3 channels padded to 4, 7 columns to 8, 7 rows: 224 addresses
    assert write_columns(model) == [(0, 0), (lay.size, 4), (7, 3)] and lay.size == 224
    conv, fc1, fc2 = P.write_column_bytes(model)
    assert conv is None and fc1.shape == (224, 4) and fc2.shape == (7, 3)
    idx = lay.store_index()
    pad = np.setdiff1d(np.arange(224), idx)
    assert pad.size == 224 - 147 and not fc1[pad].any()
    w = model.layers[1].weights_int()  # (7, 147)
    for j in range(7):  # neuron j: field j % 2 of byte j // 2, sign-extended
        field = (fc1[idx, j // 2].astype(np.int64) >> (4 * (j % 2))) & 0xF
        np.testing.assert_array_equal(np.where(field > 7, field - 16, field), w[j])
    w2 = model.layers[2].weights_int()  # ternary: 4 fields a byte
    for j in range(10):
        field = (fc2[:, j // 4].astype(np.int64) >> (2 * (j % 4))) & 0x3
        np.testing.assert_array_equal(np.where(field > 1, field - 4, field), w2[j])
    assert len(P.weight_write_payloads(model)) == 224 + 7
    odd = random_model(np.random.default_rng(2), [16, 4, 3], weight_bits={0: 3})
    with pytest.raises(ValueError, match=r"layer \d \(fc\d\) has 3-bit weights; run-time writes take 1, 2, 4 or 8-bit weights"):
        P.write_column_bytes(odd)


@pytest.mark.parametrize("bits,lanes", [({0: 4, 2: 4, 3: 4}, 8), ({0: 4, 2: 4, 3: 4}, 4), ({0: 4}, 8)])
def test_spram_weights_of_a_conv_model_loaded_over_the_weights_port(bits, lanes, mnist):
    """The dense layers after the convolutions in SPRAM (iCE40) / a writable memory (simulation),
    empty at power-up: written through the Accelerator's weights port (4-bit or +-1 columns in
    the map store's order), the design computes the golden model of the written weights, not of
    the ones it was built with (whose thresholds it keeps). 4 lanes of 4-bit weights: a lane
    group's word is 2 bytes."""
    import dataclasses

    from bitsnn.sim.amaranth_run import run_accelerator

    def model(seed):
        return random_model(np.random.default_rng(seed), [784, 16, 10], input_encoding="pixels", input_shape=(28, 28),
                            convs=((4, 3, 2), (8, 3, 2)), input_threshold=100, threshold_spread=0.5, weight_bits=bits)

    built, other = model(5), model(9)
    swap = {"weights": "weights"} if 2 in bits else {"weight_bits": "weight_bits"}
    written = dataclasses.replace(built, layers=built.layers[:2] + tuple(
        dataclasses.replace(b, **{k: getattr(o, v) for k, v in swap.items()}) for b, o in zip(built.layers[2:], other.layers[2:])))
    images = mnist.test_images[:2]
    r = run_accelerator(built, images, lanes=lanes, spram_layers=[2, 3], load_weights=written)
    g = golden.run(written, images)
    for a, b in zip(r.spikes, g.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.scores, g.scores)
    assert not np.array_equal(golden.run(built, images).scores, g.scores)


# ---- torch -------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def test_spec_weight_bits():
    from bitsnn.model.network import parse_spec, spec_weight_bits

    assert parse_spec("784-c8w4-c32-10w4") == [784, ("conv", 8, 3, 2), ("conv", 32, 3, 2), 10]
    assert spec_weight_bits("784-c8w4-c32-10w4") == [4, 1, 4]
    assert spec_weight_bits("784-128w2-10") == [2, 1]
    for bad, msg in [("784w4-10", "the input size takes no weight bits"), ("784-c8w1-10", "w1: weight bits"),
                     ("784-c8w9-10", "w9: weight bits must be 2..8"), ("784-c8w-10", "is not a size")]:
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)


def test_quantize_levels_and_gradient():
    from bitsnn.model.layers import quantize, standardise

    w = torch.randn(6, 50, requires_grad=True)
    g = torch.randn(6, 50)
    q = quantize(w, 4)
    assert set(q.detach().unique().tolist()) <= set(range(-7, 8)) and q.detach().abs().max() == 7
    (q * g).sum().backward()  # straight through the rounding: the standardisation's gradient
    want = torch.autograd.grad((standardise(w) * g).sum(), w)[0]
    torch.testing.assert_close(w.grad, want)
    t = quantize(w.detach(), 2)
    assert set(t.unique().tolist()) == {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("spec,enc", [("196-c4w4-c6p1-12w3-10w4", "pixels"), ("196-24w5-10w2", "spikes")])
def test_export_multibit_layers_bit_exact(spec, enc):
    """A multi-bit net (BN statistics from a few batches) folds into int kinds, and the golden model
    agrees with torch's exact path on every layer's spikes and the scores."""
    from bitsnn.model.export import compare_with_golden, to_hardware_model
    from bitsnn.model.network import BitSNN, spec_weight_bits

    torch.manual_seed(0)
    net = BitSNN({"spec": spec, "input_shape": [14, 14], "input_encoding": enc, "input_threshold": 100})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 14, 14), dtype=np.uint8)
    images[:, :3] = 0  # some structure: blank rows, as in MNIST
    net.train()
    with torch.no_grad():
        for lo in range(0, 300, 100):
            net.run(torch.as_tensor(images[lo:lo + 100]), "float")
    net.eval()
    hw = to_hardware_model(net)
    want_bits = spec_weight_bits(spec)
    assert [l.bits for l in hw.layers] == want_bits
    assert [l.kind.startswith("int_") for l in hw.layers] == [b > 1 for b in want_bits]
    assert hw.spec == spec
    for layer, module in zip(hw.layers, [*net.hidden, net.output]):
        if layer.bits > 1:
            w = module.weight_ints() if hasattr(module, "weight_ints") else module.fc.weight_ints()
            np.testing.assert_array_equal(layer.weights_int(), w)
            assert np.abs(w).max() <= weight_limit(layer.bits) and len(np.unique(w)) > 2  # more than +-1
    res = compare_with_golden(net, hw, images)
    assert res["mismatches"] == 0
    g = golden.run(hw, images)
    assert all(0 < s.mean() < 1 for s in g.spikes)
    assert len(np.unique(g.classes)) > 1


def test_flow_trains_exports_and_cosimulates_multibit_weights(tmp_path, custom_arrays, write_set):
    """``bitsnn flow`` with a multi-bit spec on a small data set: train, export (golden vs torch on
    the whole test set) and the co-simulation against the golden model."""
    import dataclasses
    from pathlib import Path

    from bitsnn.flow import FlowConfig, run_flow

    pytest.importorskip("amaranth")
    write_set(tmp_path / "data", custom_arrays)
    cfg = FlowConfig(run_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"))
    cfg.train = dataclasses.replace(cfg.train, preset="35-8w3-4w4", epochs=1)
    cfg.cosim = dataclasses.replace(cfg.cosim, simulator="amaranth", images=3)
    assert list(run_flow(cfg, stop="cosim", log=lambda m="": None)) == ["train", "export", "cosim"]
    hw = HardwareModel.load(Path(cfg.run_dir) / "export" / "model.bsnn")
    assert [l.kind for l in hw.layers] == ["int_dense", "int_dense"] and hw.spec == "35-8w3-4w4"
    assert hw.meta["test_images"] > 0 and hw.format_version == 4
