"""The hardware-model file: round trip, validation, and fuzzing of the loader."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsnn.hwmodel import (
    FORMAT_VERSION,
    MAGIC,
    HardwareModel,
    HardwareModelError,
    Layer,
    pack_bits,
    random_model,
    unpack_bits,
)


def _model(sizes=(20, 9, 3), **kw):
    return random_model(np.random.default_rng(1), list(sizes), **kw)


def _rewrite_header(data: bytes, edit) -> bytes:
    """Decode the JSON header, apply ``edit``, re-encode, and recompute the content hash."""
    from bitsnn.hwmodel import _content_hash

    (hlen,) = struct.unpack("<I", data[12:16])
    header = json.loads(data[16 : 16 + hlen])
    payload = data[16 + hlen :]
    edit(header)
    header["content_hash"] = _content_hash(header, payload)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:12] + struct.pack("<I", len(h)) + h + payload


def test_round_trip(tmp_path):
    m = _model((784, 100, 13, 10))
    path = m.save(tmp_path / "m.bsnn")
    m2 = HardwareModel.load(path)
    assert m2.sizes == [784, 100, 13, 10]
    assert m2.content_hash == m.content_hash
    for a, b in zip(m.layers, m2.layers):
        assert np.array_equal(a.weight_bits, b.weight_bits)
        if not a.is_output:
            assert np.array_equal(a.thresholds, b.thresholds)
            assert np.array_equal(a.compare, b.compare)
    assert m2.to_bytes() == m.to_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_pixel_input_round_trip():
    m = _model((33, 7, 2), input_encoding="pixels")
    m2 = HardwareModel.from_bytes(m.to_bytes())
    assert m2.input_encoding == "pixels" and m2.layers[0].a_max == 255 * 33


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 784])
def test_pack_unpack(n):
    bits = np.random.default_rng(n).integers(0, 2, size=(3, n), dtype=np.uint8)
    packed = pack_bits(bits)
    assert packed.shape == (3, (n + 7) // 8)
    assert np.array_equal(unpack_bits(packed, n), bits)
    # Little-endian bit order: input i is bit i % 8 of byte i // 8.
    one = np.zeros((1, n), np.uint8)
    one[0, n - 1] = 1
    assert pack_bits(one)[0, (n - 1) // 8] == 1 << ((n - 1) % 8)


def test_wrong_version(tmp_path):
    data = bytearray(_model().to_bytes())
    data[8:12] = struct.pack("<I", FORMAT_VERSION + 1)
    with pytest.raises(HardwareModelError, match=r"format version 3; this bitsnn reads versions 1, 2"):
        HardwareModel.from_bytes(bytes(data))


def test_input_crop_round_trip_and_prepare_images():
    hm = _model((12, 7, 3), input_shape=(3, 4), input_crop=(5, 6, 1, 2))
    back = HardwareModel.from_bytes(hm.to_bytes())
    assert back.input_crop == (5, 6, 1, 2) and back.image_shape == (5, 6) and back.n_image_values == 30
    assert back.content_hash == hm.content_hash
    images = np.arange(2 * 30, dtype=np.uint8).reshape(2, 5, 6)
    x = back.prepare_images(images)
    assert x.shape == (2, 12)
    assert np.array_equal(x, images[:, 1:4, 2:6].reshape(2, 12))
    assert np.array_equal(back.prepare_images(x), x)  # already cropped: unchanged
    assert np.array_equal(back.prepare_images(images.reshape(2, 30)), x)
    with pytest.raises(ValueError, match=r"images have 20 values each, the model takes 5x6 images"):
        back.prepare_images(np.zeros((1, 20), np.uint8))
    with pytest.raises(TypeError):
        back.prepare_images(images.astype(np.int64))
    assert "3x4 window at (1, 2) of 5x6 images" in back.describe()


@pytest.mark.parametrize("crop", [(5, 6, 3, 2), (5, 6, 0, 3), (3, 4, 0, 0), (5, 6, -1, 0)])
def test_bad_input_crop(crop):
    with pytest.raises(HardwareModelError, match="input crop"):
        _model((12, 7, 3), input_shape=(3, 4), input_crop=crop)
    with pytest.raises(HardwareModelError, match="2-D input shape"):
        _model((12, 7, 3), input_crop=(5, 6, 0, 0))


def test_reads_version_1_and_refuses_a_crop_in_it():
    """A version 1 file (no input crop) still loads; version 1 with a crop is refused."""
    hm = _model()

    def v1(header):
        header["version"] = 1

    data = bytearray(_rewrite_header(hm.to_bytes(), v1))
    data[8:12] = struct.pack("<I", 1)
    back = HardwareModel.from_bytes(bytes(data))
    assert back.input_crop is None and back.sizes == hm.sizes
    cropped = _model((12, 7, 3), input_shape=(3, 4), input_crop=(5, 6, 1, 2))
    data = bytearray(_rewrite_header(cropped.to_bytes(), v1))
    data[8:12] = struct.pack("<I", 1)
    with pytest.raises(HardwareModelError, match="input crop in a version 1 file"):
        HardwareModel.from_bytes(bytes(data))


def test_not_a_model(tmp_path):
    p = tmp_path / "x.bsnn"
    p.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(HardwareModelError, match="not a bitsnn hardware-model file"):
        HardwareModel.load(p)
    with pytest.raises(HardwareModelError, match="cannot read hardware model"):
        HardwareModel.load(tmp_path / "missing.bsnn")


def test_truncated():
    data = _model().to_bytes()
    with pytest.raises(HardwareModelError, match="truncated"):
        HardwareModel.from_bytes(data[:-5])
    with pytest.raises(HardwareModelError, match="truncated header"):
        HardwareModel.from_bytes(data[:40])


def test_edited_payload_fails_hash():
    data = bytearray(_model().to_bytes())
    data[-1] ^= 0x01
    with pytest.raises(HardwareModelError, match="content hash mismatch"):
        HardwareModel.from_bytes(bytes(data))


def test_mismatched_shapes():
    def edit(h):
        h["layers"][1]["n_in"] = 10

    with pytest.raises(HardwareModelError, match=r"layer 1 \(fc2\): takes 10 inputs but the previous stage gives 9"):
        HardwareModel.from_bytes(_rewrite_header(_model().to_bytes(), edit))


def test_out_of_range_threshold():
    m = _model()
    th = m.layers[0].thresholds.copy()
    th[3] = 22  # R = 20 inputs -> allowed [-21, 21]
    bad = Layer("fc1", 20, 9, m.layers[0].weight_bits, th, m.layers[0].compare)
    with pytest.raises(HardwareModelError, match=r"threshold 22 of neuron 3 outside the reachable range \[-21, 21\]"):
        HardwareModel(m.input_shape, "spikes", 128, (bad, m.layers[1]))


def test_bad_compare_and_padding():
    m = _model()
    l0 = m.layers[0]
    cmp_ = l0.compare.copy()
    cmp_[0] = 0
    with pytest.raises(HardwareModelError, match="compare directions"):
        HardwareModel(m.input_shape, "spikes", 128, (Layer("fc1", 20, 9, l0.weight_bits, l0.thresholds, cmp_), m.layers[1]))
    wb = l0.weight_bits.copy()
    wb[0, -1] |= 0x80  # input 23 of a 20-input row
    with pytest.raises(HardwareModelError, match="padding bits"):
        HardwareModel(m.input_shape, "spikes", 128, (Layer("fc1", 20, 9, wb, l0.thresholds, l0.compare), m.layers[1]))


def test_nan_and_float_thresholds_rejected():
    """Thresholds must be integers: a float (e.g. NaN) array is refused, in memory or in a file."""
    m = _model()
    l0 = m.layers[0]
    th = l0.thresholds.astype(np.float64)
    th[0] = np.nan
    with pytest.raises(HardwareModelError, match="must be integers"):
        HardwareModel(m.input_shape, "spikes", 128, (Layer("fc1", 20, 9, l0.weight_bits, th, l0.compare), m.layers[1]))

    def edit(h):
        h["arrays"]["layers.0.thresholds"]["dtype"] = "f8"

    with pytest.raises(HardwareModelError, match="bad dtype"):
        HardwareModel.from_bytes(_rewrite_header(m.to_bytes(), edit))

    def edit_nan(h):
        h["input"]["threshold"] = float("nan")

    with pytest.raises(HardwareModelError, match="malformed header|threshold"):
        HardwareModel.from_bytes(_rewrite_header(m.to_bytes(), edit_nan))


def test_unknown_layer_kind_and_encoding():
    def kind(h):
        h["layers"][0]["kind"] = "conv2d"

    with pytest.raises(HardwareModelError, match="unsupported layer kind 'conv2d'"):
        HardwareModel.from_bytes(_rewrite_header(_model().to_bytes(), kind))

    def enc(h):
        h["input"]["encoding"] = "rate"

    with pytest.raises(HardwareModelError, match="unknown input encoding 'rate'"):
        HardwareModel.from_bytes(_rewrite_header(_model().to_bytes(), enc))


def test_save_is_atomic(tmp_path):
    path = tmp_path / "m.bsnn"
    _model().save(path)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    from bitsnn import fileio

    with pytest.raises(Boom):
        with fileio.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise Boom
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bsnn"]


_GOOD = _model((30, 11, 4)).to_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(_GOOD)),
    flips=st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), max_size=4),
    garbage=st.binary(max_size=64),
)
def test_fuzz_loader(cut, flips, garbage):
    """Corrupted files: the only failure allowed is HardwareModelError."""
    data = bytearray(_GOOD)
    for pos, val in flips:
        data[pos] = val
    data = bytes(data[:cut]) + (garbage if cut % 3 == 0 else b"")
    try:
        m = HardwareModel.from_bytes(data)
    except HardwareModelError as e:
        assert "\n" not in str(e)
    else:
        m.validate()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_header_json(blob):
    """Arbitrary bytes as the header: still only HardwareModelError."""
    data = MAGIC + struct.pack("<II", FORMAT_VERSION, len(blob)) + blob
    with pytest.raises(HardwareModelError):
        HardwareModel.from_bytes(data)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12),
       st.sampled_from(["input", "layers", "arrays", "meta", "format", "version"]))
def test_fuzz_header_structure(value, key):
    """A well-formed JSON header with one field replaced by arbitrary JSON."""

    def edit(h):
        h[key] = value

    try:
        HardwareModel.from_bytes(_rewrite_header(_GOOD, edit))
    except HardwareModelError:
        pass
