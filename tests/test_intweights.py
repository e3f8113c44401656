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
    IntConvLayer,
    IntDenseLayer,
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
                      layers=(IntDenseLayer("fc", 12, 10, bits=4, weights=o.weights.astype(np.int16)),))


def test_int_conv_layer_is_a_convolution():
    layer = _int_model().layers[0]
    assert isinstance(layer, IntConvLayer) and layer.kernels_int().shape == (4, 1, 3, 3)
    assert layer.header_fields() == {"in_shape": [1, 14, 14], "channels": 4, "kernel": 3, "pool": 2, "bits": 4}


def test_stages_without_multibit_hardware_refuse_by_name():
    with pytest.raises(hwplan.UnsupportedLayerError,
                       match=r"layer 0 \(conv1\) is an int_conv2d layer, which has no hardware stage yet"):
        hwplan.check_supported(_int_model())
    only_out = random_model(np.random.default_rng(0), [16, 8, 3], weight_bits={1: 2})
    with pytest.raises(hwplan.UnsupportedLayerError, match=r"layer 1 \(fc2\) is an int_dense layer"):
        hwplan.check_supported(only_out)


@pytest.mark.parametrize("command", [
    ["sim", "--simulator", "amaranth", "--images", "2"],
    ["build", "--board", "icebreaker", "-o", "{tmp}/build"],
    ["report", "-o", "{tmp}/build"],
    ["run", "--port", "/dev/null", "--images", "1"],
])
def test_cli_refuses_multibit_models_in_one_line(tmp_path, capsys, command):
    from test_bad_input import assert_one_line_error, run_main

    path = _int_model(bits={3: 4}).save(tmp_path / "w.bsnn")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    argv[1:1] = ["--model", str(path)]
    r = run_main(capsys, *argv)
    assert_one_line_error(r, command[0], "is an int_dense layer, which has no hardware stage yet")
    assert not (tmp_path / "build").exists()


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


def test_flow_trains_and_exports_multibit_weights_and_refuses_hardware_steps(tmp_path, custom_arrays, write_set):
    """``bitsnn flow`` with a multi-bit spec: the hardware steps are refused before any work; train
    and export run (export's golden-vs-torch check on the whole test set passes)."""
    import dataclasses
    from pathlib import Path

    from bitsnn import BitsnnError
    from bitsnn.flow import FlowConfig, run_flow

    write_set(tmp_path / "data", custom_arrays)
    cfg = FlowConfig(run_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"))
    cfg.train = dataclasses.replace(cfg.train, preset="35-8w3-4w4", epochs=1)
    with pytest.raises(BitsnnError, match=r"spec 35-8w3-4w4 has multi-bit weights, which have no hardware stage yet.*"
                                          r"steps cosim, build, report need"):
        run_flow(cfg, log=lambda m="": None)
    assert not Path(cfg.run_dir).exists()
    assert list(run_flow(cfg, stop="export", log=lambda m="": None)) == ["train", "export"]
    hw = HardwareModel.load(Path(cfg.run_dir) / "export" / "model.bsnn")
    assert [l.kind for l in hw.layers] == ["int_dense", "int_dense"] and hw.spec == "35-8w3-4w4"
    assert hw.meta["test_images"] > 0 and hw.format_version == 4
