"""Convolutional layers (format version 3): the file, the golden model against a plain reference,
and the geometry rules."""

from __future__ import annotations

import numpy as np
import pytest

from bitsnn.hwmodel import ConvLayer, HardwareModel, HardwareModelError, Layer, pack_bits, random_model
from bitsnn.sim import golden


def _reference(model: HardwareModel, images: np.ndarray):
    """Loops straight from the arithmetic in docs/hardware-model.md: spikes of every layer, scores."""
    x = golden.encode_input(model, images).astype(np.int64)
    spikes = []
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            c_in, h, w = layer.in_shape
            k, p = layer.kernel, layer.kernel // 2
            wk = layer.kernels_int().astype(np.int64)
            maps = x.reshape(-1, c_in, h, w)
            a = np.zeros((len(x), layer.channels, h, w), np.int64)
            for y in range(h):
                for xx in range(w):
                    for ky in range(k):
                        for kx in range(k):
                            yy, xs = y + ky - p, xx + kx - p
                            if 0 <= yy < h and 0 <= xs < w:
                                a[:, :, y, xx] += maps[:, :, yy, xs] @ wk[:, :, ky, kx].T
            th = layer.thresholds[None, :, None, None]
            up = layer.compare[None, :, None, None] > 0
            s = np.where(up, a >= th, a <= th)
            q = layer.pool
            if q > 1:
                s = s[:, :, : h // q * q, : w // q * q].reshape(len(x), layer.channels, h // q, q, w // q, q)
                s = s.any(axis=(3, 5))
            x = s.reshape(len(x), -1).astype(np.int64)
            spikes.append(x)
        else:
            a = x @ layer.weights_int().astype(np.int64).T
            if layer.is_output:
                return spikes, a
            s = np.where(layer.compare > 0, a >= layer.thresholds, a <= layer.thresholds)
            x = s.astype(np.int64)
            spikes.append(x)
    raise AssertionError("no output layer")


CASES = [
    # (input shape, encoding, convs (channels, kernel, pool), dense sizes after the maps)
    ((8, 8), "spikes", ((4, 3, 2),), [10]),
    ((9, 7), "spikes", ((3, 3, 2), (5, 3, 1)), [6, 4]),
    ((8, 8), "pixels", ((4, 5, 2),), [3]),
    ((6, 6), "spikes", ((2, 1, 1), (3, 5, 2)), [5]),
]


@pytest.mark.parametrize("shape,enc,convs,dense", CASES, ids=lambda v: str(v))
def test_golden_conv_matches_reference(shape, enc, convs, dense):
    rng = np.random.default_rng(7)
    model = random_model(rng, [shape[0] * shape[1], *dense], input_encoding=enc, input_shape=shape, convs=convs,
                         threshold_spread=0.5)
    images = rng.integers(0, 256, size=(23, *shape), dtype=np.uint8)
    g = golden.run(model, images)
    want_spikes, want_scores = _reference(model, images)
    assert len(g.spikes) == len(want_spikes)
    for got, want in zip(g.spikes, want_spikes):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(g.scores, want_scores)
    # spikes are not all-zero or all-one everywhere: the test sees real decisions
    assert 0 < np.mean(g.spikes[0]) < 1


def test_conv_synaptic_events_count_every_accumulator_update():
    rng = np.random.default_rng(1)
    model = random_model(rng, [25, 4], input_shape=(5, 5), convs=((3, 3, 1),))
    images = rng.integers(0, 256, size=(5, 5, 5), dtype=np.uint8)
    g = golden.run(model, images)
    s = golden.encode_input(model, images).reshape(-1, 5, 5)
    want = np.zeros(5, np.int64)
    for b in range(5):
        for y in range(5):
            for x in range(5):  # output position (y, x): its 3x3 window's nonzero inputs, x C_out
                want[b] += s[b, max(0, y - 1):y + 2, max(0, x - 1):x + 2].sum() * 3
    np.testing.assert_array_equal(g.synaptic_events[:, 0], want)
    np.testing.assert_array_equal(g.input_events[:, 0], s.reshape(5, -1).sum(axis=1))


def test_conv_model_round_trips_as_version_3(tmp_path):
    rng = np.random.default_rng(2)
    model = random_model(rng, [64, 8, 3], input_shape=(8, 8), convs=((4, 3, 2), (6, 3, 2)))
    path = model.save(tmp_path / "conv.bsnn")
    data = path.read_bytes()
    assert data[8:12] == (3).to_bytes(4, "little")
    back = HardwareModel.load(path)
    assert [l.kind for l in back.layers] == ["binary_conv2d", "binary_conv2d", "binary_dense", "binary_dense"]
    assert back.layers[1].in_shape == (4, 4, 4) and back.layers[1].out_shape == (6, 2, 2)
    assert back.to_bytes() == data
    images = rng.integers(0, 256, size=(9, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(golden.run(back, images).scores, golden.run(model, images).scores)


def test_dense_models_stay_version_2():
    model = random_model(np.random.default_rng(0), [16, 4, 2])
    assert model.format_version == 2 and model.to_bytes()[8:12] == (2).to_bytes(4, "little")


def _conv(**kw):
    base = dict(weight_bits=pack_bits(np.ones((2, 9), np.uint8)), thresholds=np.zeros(2, np.int64),
                compare=np.ones(2, np.int8), in_shape=(1, 4, 4), channels=2, kernel=3, pool=2)
    base.update(kw)
    return ConvLayer("conv1", **base)


def _with(first, input_shape=(4, 4)):
    """``first`` then a dense output layer of 2 classes."""
    o = random_model(np.random.default_rng(0), [first.n_out, 2]).layers[-1]
    return HardwareModel(input_shape=input_shape, input_encoding="spikes", input_threshold=1,
                         layers=(first, Layer("fc", first.n_out, 2, o.weight_bits, None, None, "spikes")))


@pytest.mark.parametrize("kw,msg", [
    (dict(kernel=2, weight_bits=pack_bits(np.ones((2, 4), np.uint8))), r"kernel 2: must be odd"),
    (dict(pool=3), r"pool 3: must be one of \(1, 2\)"),
    (dict(in_shape=(2, 4, 4)), r"takes \[2, 4, 4\] maps but the previous stage gives \[1, 4, 4\]"),
    (dict(thresholds=np.array([11, 0])), r"threshold 11 of neuron 0 outside the reachable range \[-10, 10\]"),
    (dict(weight_bits=np.ones((2, 1), np.uint8)), r"weight bits must be uint8 of shape \(2, 2\)"),
])
def test_conv_geometry_refused(kw, msg):
    with pytest.raises(HardwareModelError, match=msg):
        _with(_conv(**kw))


def test_conv_must_not_follow_a_dense_layer_or_end_the_model():
    conv = _conv()
    good = _with(conv)  # valid: conv -> dense
    fc = random_model(np.random.default_rng(0), [16, 16, 2]).layers[0]  # 16 -> 16 dense
    with pytest.raises(HardwareModelError, match="must follow the input image or another convolution"):
        HardwareModel(input_shape=(4, 4), input_encoding="spikes", input_threshold=1,
                      layers=(fc, conv, good.layers[1]))
    with pytest.raises(HardwareModelError, match="the output layer must be a binary_dense layer"):
        HardwareModel(input_shape=(4, 4), input_encoding="spikes", input_threshold=1,
                      layers=(_conv(thresholds=None, compare=None),))


def test_conv_layer_in_an_older_file_is_refused():
    import json
    import struct

    from bitsnn.hwmodel import _content_hash

    model = random_model(np.random.default_rng(3), [16, 2], input_shape=(4, 4), convs=((2, 3, 2),))
    data = model.to_bytes()
    (hlen,) = struct.unpack("<I", data[12:16])
    header = json.loads(data[16:16 + hlen])
    payload = data[16 + hlen:]
    header["version"] = 2
    header["content_hash"] = _content_hash(header, payload)
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    bad = data[:8] + struct.pack("<II", 2, len(blob)) + blob + payload
    with pytest.raises(HardwareModelError, match=r"a binary_conv2d layer in a version 2 file"):
        HardwareModel.from_bytes(bad)


@pytest.mark.parametrize("command,needle", [
    (["sim", "--simulator", "amaranth", "--images", "2", "--mode", "dense"], "conv1: convolutions run in mode='event' only"),
    (["build", "--board", "icebreaker", "--spram-layers", "0", "-o", "{tmp}/build"],
     "--spram-layers 0: layer 0 (conv1) is a convolution, whose kernels stay in its ROM"),
])
def test_what_convolutions_do_not_support_is_refused_in_one_line(tmp_path, capsys, command, needle):
    """A dense-mode simulation or SPRAM kernels for a convolution: one line, nothing written."""
    from test_bad_input import assert_one_line_error, run_main

    model = random_model(np.random.default_rng(0), [16, 2], input_shape=(4, 4), convs=((2, 3, 2),))
    path = model.save(tmp_path / "conv.bsnn")
    args = [a.format(tmp=tmp_path) for a in command]
    r = run_main(capsys, args[0], "--model", path, *args[1:])
    assert_one_line_error(r, args[0], needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.bsnn"]


def _shapes_set(n_train=400, n_test=100, seed=0) -> dict:
    """A 28x28 set of four drawn shapes (horizontal bar, vertical bar, box, cross) at random places,
    with noise: not MNIST, made here."""
    rng = np.random.default_rng(seed)

    def draw(label):
        img = (rng.random((28, 28)) * 40).astype(np.uint8)
        y, x = rng.integers(6, 22, size=2)
        if label == 0:
            img[y - 1:y + 2, x - 6:x + 6] = 230
        elif label == 1:
            img[y - 6:y + 6, x - 1:x + 2] = 230
        elif label == 2:
            img[y - 5:y + 5, x - 5:x + 5] = 230
            img[y - 3:y + 3, x - 3:x + 3] = 20
        else:
            img[y - 1:y + 2, x - 6:x + 6] = 230
            img[y - 6:y + 6, x - 1:x + 2] = 230
        return img

    def split(n):
        labels = np.arange(n) % 4
        rng.shuffle(labels)
        return np.stack([draw(int(l)) for l in labels]), labels.astype(np.uint8)

    tr_x, tr_y = split(n_train)
    te_x, te_y = split(n_test)
    return {"train-images-idx3-ubyte": tr_x, "train-labels-idx1-ubyte": tr_y,
            "t10k-images-idx3-ubyte": te_x, "t10k-labels-idx1-ubyte": te_y}


@pytest.mark.slow
def test_conv_tiny_preset_on_a_custom_28x28_set(tmp_path, capsys, write_set):
    """The conv-tiny preset end to end on a data set other than MNIST: train, export (golden vs
    torch on its whole test set), and the Accelerator in Amaranth's simulator (0 mismatches)."""
    pytest.importorskip("torch")
    from test_bad_input import run_main

    data = tmp_path / "shapes"
    write_set(data, _shapes_set(n_train=2000))
    ckpt, bsnn = tmp_path / "c.ckpt", tmp_path / "c.bsnn"
    r = run_main(capsys, "train", "--preset", "conv-tiny", "--epochs", "6", "--data-dir", data, "-o", ckpt)
    assert r.returncode == 0, r.stderr
    r = run_main(capsys, "export", ckpt, "--data-dir", data, "-o", bsnn)
    assert r.returncode == 0, r.stderr
    assert "golden vs torch: 0 mismatches on 100 images" in r.stdout + r.stderr
    model = HardwareModel.load(bsnn)
    assert model.spec == "784-c8w4-c32-10w4" and model.meta["dataset"] == "custom"
    assert model.meta["test_accuracy"] > 0.6  # four shapes, six epochs: well above chance (0.25)
    r = run_main(capsys, "sim", "--model", bsnn, "--simulator", "amaranth", "--images", "4", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "mismatches: 0" in r.stdout


def test_feature_maps_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from bitsnn import BitsnnError
    from bitsnn.report import plot_feature_maps

    rng = np.random.default_rng(3)
    model = random_model(rng, [64, 8, 3], input_shape=(8, 8), convs=((4, 3, 2), (6, 3, 1)), threshold_spread=0.5)
    g = golden.run(model, rng.integers(0, 256, size=(2, 8, 8), dtype=np.uint8))
    out = plot_feature_maps(g, model, tmp_path / "maps.png", index=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    with pytest.raises(BitsnnError, match="image index 2 outside 0..1"):
        plot_feature_maps(g, model, tmp_path / "x.png", index=2)
    dense = random_model(rng, [64, 8, 3])
    with pytest.raises(BitsnnError, match="no convolution"):
        plot_feature_maps(golden.run(dense, np.zeros((1, 64), np.uint8)), dense, tmp_path / "y.png")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()
