"""model/export.py: torch exact path vs sim/golden on all MNIST test images; the CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitsnn import BitsnnError  # noqa: E402
from bitsnn.hwmodel import HardwareModel  # noqa: E402
from bitsnn.model import export as export_mod  # noqa: E402
from bitsnn.model.export import compare_with_golden, export_checkpoint, to_hardware_model  # noqa: E402
from bitsnn.model.network import BitSNN  # noqa: E402
from bitsnn.model.train import load_checkpoint, resolve_config, save_checkpoint, train_model  # noqa: E402
from bitsnn.sim import golden  # noqa: E402

# One thread: `make test` runs two xdist workers on this 2-core machine; more threads thrash.
torch.set_num_threads(1)


def _assert_identical(model: BitSNN, hw: HardwareModel, images: np.ndarray) -> None:
    """The same spikes in every layer, the same scores and classes, image by image."""
    model.eval()
    for lo in range(0, len(images), 2000):
        x = images[lo : lo + 2000]
        g = golden.run(hw, x)
        with torch.no_grad():
            tr = model.run(torch.as_tensor(x))
        assert len(tr.spikes) == len(g.spikes)
        for s_t, s_g in zip(tr.spikes, g.spikes):
            np.testing.assert_array_equal(s_t.numpy().astype(np.uint8), s_g)
        np.testing.assert_array_equal(tr.scores.numpy().astype(np.int64), g.scores)
        np.testing.assert_array_equal(tr.classes.numpy(), g.classes)


@pytest.mark.slow
def test_tiny_model_torch_vs_golden_all_test_images(tiny_model_files, tiny_hwmodel, mnist):
    bsnn, ckpt = tiny_model_files
    model, config, metrics = load_checkpoint(ckpt)
    assert tiny_hwmodel.sizes == [576, 160, 10]
    assert tiny_hwmodel.input_encoding == "spikes" and tiny_hwmodel.input_threshold == 64
    # the central 24x24 window of the 28x28 images: both sides get whole images and crop them
    assert tiny_hwmodel.input_crop == (28, 28, 2, 2) and model.input_crop == (28, 28, 2, 2)
    _assert_identical(model, tiny_hwmodel, mnist.test_images)
    meta = tiny_hwmodel.meta
    assert meta["dataset"] == "mnist" and meta["test_images"] == 10000
    assert meta["test_accuracy"] >= 0.95
    assert meta["training"]["spec"] == "576-160-10" and "bitsnn_version" in meta
    # the weight bits are the signs torch uses
    np.testing.assert_array_equal(tiny_hwmodel.layers[0].weight_bit_matrix(), model.hidden[0].fc.weight_bits())
    g = golden.run(tiny_hwmodel, mnist.test_images)
    assert np.mean(g.classes == mnist.test_labels) == pytest.approx(meta["test_accuracy"])


@pytest.mark.slow
def test_pixel_input_model_export(mnist, tmp_path, mnist_dir):
    cfg = resolve_config("784-64-10", epochs=1, input_encoding="pixels", device="cpu", limit_train=20000)
    model, metrics = train_model(cfg, mnist, progress=False, log=lambda m: None)
    ckpt = save_checkpoint(tmp_path / "px.ckpt", model, cfg, metrics)
    lines = []
    hw = export_checkpoint(ckpt, tmp_path / "px.bsnn", mnist_dir, log=lines.append)
    assert "golden vs torch: 0 mismatches on 10000 images" in lines[0]
    assert hw.input_encoding == "pixels" and hw.layers[0].input_kind == "pixels"
    loaded = HardwareModel.load(tmp_path / "px.bsnn")
    assert loaded.content_hash == hw.content_hash
    model2, _, _ = load_checkpoint(ckpt)
    _assert_identical(model2, loaded, mnist.test_images)
    assert loaded.meta["test_accuracy"] > 0.85


def _stir(model: BitSNN, seed: int, images: np.ndarray) -> BitSNN:
    """BatchNorm statistics measured on real images, then random BN scales (some negative:
    compare -1) and shifts, so an untrained network's layers make real decisions (neither silent
    nor saturated)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.hidden:
            layer.bn.reset_running_stats()
            layer.bn.momentum = None  # a plain average over the batch below
        model.train()
        model.run(torch.as_tensor(images), "float")
        for layer in model.hidden:
            bn, n = layer.bn, layer.bn.num_features
            bn.weight.copy_(torch.randn(n, generator=gen))
            bn.weight[0], bn.weight[1] = -bn.weight[0].abs(), bn.weight[1].abs()  # both directions
            pooled = getattr(layer, "pool", 1) > 1
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.3 - (0.7 if pooled else 0.0))
            layer.act.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("spec,enc", [("784-c4-c8-16-10", "spikes"), ("784-c3k5-c6p1-10", "spikes"),
                                      ("784-c4-10", "pixels")])
def test_conv_model_exports_bit_exact_on_all_test_images(tmp_path, mnist_dir, mnist, spec, enc):
    """Conv layers (kernels 3 and 5, pool 2 and none, spike and pixel input) through export: torch
    exact path and golden agree on every spike of every layer, the scores and the class."""
    torch.manual_seed(1)
    cfg = resolve_config(spec, input_encoding=enc, input_threshold=100)
    model = _stir(BitSNN(cfg.arch([28, 28])), 3, mnist.train_images[:500])
    ckpt = save_checkpoint(tmp_path / "conv.ckpt", model, cfg)
    lines = []
    hw = export_checkpoint(ckpt, tmp_path / "conv.bsnn", mnist_dir, log=lines.append)
    assert "golden vs torch: 0 mismatches on 10000 images" in lines[0]
    assert hw.format_version == 3 and hw.layers[0].kind == "binary_conv2d"
    assert hw.layers[0].input_kind == enc
    loaded = HardwareModel.load(tmp_path / "conv.bsnn")
    model2, _, _ = load_checkpoint(ckpt)
    _assert_identical(model2, loaded, mnist.test_images[:3000])
    g = golden.run(loaded, mnist.test_images[:500])
    for s in g.spikes:  # every layer makes decisions
        assert 0.01 < s.mean() < 0.99
    for c in loaded.layers[:-1]:  # both compare directions and thresholds inside the range
        assert set(np.unique(c.compare)) == {-1, 1}


def test_export_refuses_an_unsupported_layer(tmp_path):
    model = BitSNN({"spec": "784-16-10", "input_shape": [28, 28]})
    model.hidden[0] = torch.nn.Identity()
    with pytest.raises(BitsnnError, match=r"layer 0 \(Identity\) is not supported; the hardware model holds "
                                          r"BinaryDense, BinaryConv2d hidden layers"):
        to_hardware_model(model)


def test_export_refuses_on_mismatch(tmp_path, mnist_dir, monkeypatch):
    torch.manual_seed(0)
    model = BitSNN({"spec": "784-16-10", "input_shape": [28, 28]})
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, resolve_config("784-16-10"))
    real = export_mod.to_hardware_model

    def corrupt(m, meta=None):
        hw = real(m, meta)
        layers = list(hw.layers)
        first = layers[0]
        th = first.thresholds.copy()
        th[:] = -first.a_max - 1  # every neuron always spikes: the golden model now differs
        layers[0] = type(first)(first.name, first.n_in, first.n_out, first.weight_bits, th, first.compare,
                                first.input_kind)
        return HardwareModel(hw.input_shape, hw.input_encoding, hw.input_threshold, tuple(layers), hw.meta)

    monkeypatch.setattr(export_mod, "to_hardware_model", corrupt)
    out = tmp_path / "m.bsnn"
    with pytest.raises(BitsnnError, match=r"golden vs torch: [1-9]\d* mismatches on 10000 images"):
        export_checkpoint(ckpt, out, mnist_dir, log=lambda m: None)
    assert not out.exists()


def test_compare_counts_float_path_disagreements(mnist):
    torch.manual_seed(0)
    model = BitSNN({"spec": "784-16-10", "input_shape": [28, 28]})
    model.eval()
    hw = to_hardware_model(model)
    res = compare_with_golden(model, hw, mnist.test_images[:500], mnist.test_labels[:500])
    assert res["mismatches"] == 0 and res["images"] == 500
    assert 0 <= res["float_path_disagreements"] <= 500


@pytest.mark.slow
def test_cli_train_and_export_end_to_end(tmp_path, mnist_dir, capsys):
    from bitsnn.cli import main

    ckpt, out = tmp_path / "t.ckpt", tmp_path / "t.bsnn"
    rc = main(["train", "--preset", "tiny", "--epochs", "1", "--limit-train", "1000", "--seed", "3",
               "--data-dir", str(mnist_dir), "-o", str(ckpt)])
    assert rc == 0 and ckpt.is_file()
    text = capsys.readouterr().out
    assert "epoch 1/1" in text and "test accuracy" in text and "firing rates" in text
    obj = torch.load(ckpt, weights_only=True)
    assert obj["config"]["seed"] == 3 and obj["config"]["limit_train"] == 1000
    assert "state_dict" in obj and "test_accuracy" in obj["metrics"]
    rc = main(["export", str(ckpt), "--data-dir", str(mnist_dir), "-o", str(out)])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "golden vs torch: 0 mismatches on 10000 images" in text
    back = HardwareModel.load(out)
    assert back.sizes == [576, 160, 10] and back.input_crop == (28, 28, 2, 2)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from bitsnn.cli import main

    rc = main(["export", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "x.bsnn")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    rc = main(["train", "--preset", "nonsense", "-o", str(tmp_path / "x.ckpt")])
    assert rc == 1 and "--preset" in capsys.readouterr().err
