"""The hardware-model file: round trip, validation, and fuzzing of the loader."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsnn.hwmodel import (
    FORMAT_VERSION,
    MAGIC,
    _header_of,
    HardwareModel,
    HardwareModelError,
    Layer,
    pack_bits,
    random_model,
    unpack_bits,
)


def _model(sizes=(20, 9, 3), **kw):
    return random_model(np.random.default_rng(1), list(sizes), **kw)


def _split(data: bytes) -> tuple[dict, bytes]:
    """A file's parsed JSON header and its payload."""
    (hlen,) = struct.unpack("<I", data[12:16])
    return json.loads(data[16 : 16 + hlen]), data[16 + hlen :]


def _writer_hash(header: dict, payload: bytes) -> str:
    """content_hash exactly as the writer computes it (docs/hardware-model.md): SHA-256 of the
    canonical header without that field (sorted keys, no spaces) followed by the payload."""
    h = {k: v for k, v in header.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(h, sort_keys=True, separators=(",", ":")).encode() + payload).hexdigest()


def _rewrite_header(data: bytes, edit, edit_payload=None) -> bytes:
    """Decode the JSON header, apply ``edit`` to it (and ``edit_payload(header, payload) -> payload``
    to the payload, if given), recompute the content hash as the writer does, and re-encode: the
    hash check alone cannot catch the edit. The file version in the container is kept."""
    header, payload = _split(data)
    edit(header)
    if edit_payload is not None:
        payload = edit_payload(header, payload)
    header["content_hash"] = _writer_hash(header, payload)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:12] + struct.pack("<I", len(h)) + h + payload


def _blobs(header: dict, payload: bytes) -> dict[str, bytes]:
    """Each array's bytes, by name, in the writer's (payload) order."""
    sizes = {"u1": 1, "i1": 1, "i4": 4, "i8": 8}
    out = {}
    for name, spec in sorted(header["arrays"].items(), key=lambda kv: kv[1]["offset"]):
        n = int(np.prod(spec["shape"])) * sizes[spec["dtype"]]
        out[name] = payload[spec["offset"] : spec["offset"] + n]
    return out


def _lay_out(header: dict, blobs: dict[str, bytes]) -> bytes:
    """Lay ``blobs`` out contiguously in their order, as the writer does; set the offsets."""
    payload, off = b"", 0
    for name, blob in blobs.items():
        header["arrays"][name]["offset"] = off
        payload += blob
        off += len(blob)
    return payload


def _v1(data: bytes) -> bytes:
    """The same model as a version 1 file (what the version 1 writer emitted: no input crop)."""

    def edit(h):
        h["version"] = 1

    out = bytearray(_rewrite_header(data, edit))
    out[8:12] = struct.pack("<I", 1)
    return bytes(out)


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
    with pytest.raises(HardwareModelError, match=r"format version 7; this bitsnn reads versions 1, 2, 3, 4, 5, 6$"):
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


def _json_nest_wide(c):
    """A list or an object of ``c`` (named: hypothesis checks by its source that it uses ``c``)."""
    return st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5), _json_nest_wide, max_leaves=12),
       st.sampled_from(["input", "layers", "arrays", "meta", "format", "version"]))
def test_fuzz_header_structure(value, key):
    """A well-formed JSON header with one field replaced by arbitrary JSON: a one-line
    HardwareModelError naming the file, or (``meta`` takes any object) a model that validates and
    writes the same file again."""

    def edit(h):
        h[key] = value

    try:
        m = HardwareModel.from_bytes(_rewrite_header(_GOOD, edit), _SRC)
    except HardwareModelError as e:
        assert str(e).startswith(f"{_SRC}: ") and "\n" not in str(e)
    else:
        assert key == "meta" and isinstance(value, dict), (key, value)
        m.validate()
        assert HardwareModel.from_bytes(m.to_bytes()).to_bytes() == m.to_bytes()


# ---- strict loading: each file below is edited and its content hash RECOMPUTED ------------------
# so the hash check alone cannot catch the edit; the loader must refuse it by the format's rules.

_SRC = "edited.bsnn"


def _refused(match: str, data: bytes, edit, edit_payload=None) -> str:
    """Load the edited file; it must be refused with one line naming the source and ``match``."""
    with pytest.raises(HardwareModelError, match=match) as e:
        HardwareModel.from_bytes(_rewrite_header(data, edit, edit_payload), _SRC)
    msg = str(e.value)
    assert msg.startswith(f"{_SRC}: ") and "\n" not in msg
    return msg


def test_edit_helper_keeps_a_valid_file_valid():
    """The helper itself: a no-op edit (hash recomputed) and a full re-layout still load."""
    data = _model().to_bytes()
    assert _rewrite_header(data, lambda h: None) == data
    relaid = _rewrite_header(data, lambda h: None, lambda h, p: _lay_out(h, _blobs(h, p)))
    assert relaid == data
    assert HardwareModel.from_bytes(_v1(data)).to_bytes() == data


@pytest.mark.parametrize("array, offset, cut, match", [
    # the output layer's weights start at 0, sharing bytes with layer 0's weights (payload cut
    # to the new end, so only the overlap is wrong)
    ("layers.1.weight_bits", 0, 6,
     r"arrays layers\.1\.weight_bits \(bytes 0\.\.6\) and layers\.0\.weight_bits \(bytes 0\.\.27\) overlap"),
    # layer 0's weights start at 1 instead of 0: their last byte is the thresholds' first
    ("layers.0.weight_bits", 1, 0,
     r"arrays layers\.0\.weight_bits \(bytes 1\.\.28\) and layers\.0\.thresholds \(bytes 27\.\.99\) overlap"),
])
def test_overlapping_arrays_refused(array, offset, cut, match):
    def edit(h):
        h["arrays"][array]["offset"] = offset

    _refused(match, _model().to_bytes(), edit, lambda h, p: p[: len(p) - cut])


@pytest.mark.parametrize("array, dtype", [
    ("layers.0.thresholds", "i4"), ("layers.0.compare", "i8"), ("layers.0.weight_bits", "i1"),
    ("layers.1.weight_bits", "i8"),
])
def test_array_dtype_must_be_the_formats(array, dtype):
    """An array re-encoded consistently in another integer dtype (e.g. i4 thresholds) is refused:
    thresholds are i8, compare i1, weight_bits u1, exactly what the writer produces."""
    want = {"weight_bits": "u1", "thresholds": "i8", "compare": "i1"}[array.rsplit(".", 1)[1]]

    def relayout(h, p):
        blobs = _blobs(h, p)
        blobs[array] = np.frombuffer(blobs[array], "<" + want).astype("<" + dtype).tobytes()
        h["arrays"][array]["dtype"] = dtype
        return _lay_out(h, blobs)

    _refused(rf"array {array}: bad dtype '{dtype}' \(the format stores it as '{want}'\)",
             _model().to_bytes(), lambda h: None, relayout)


@pytest.mark.parametrize("value, got", [
    (64.9, "number 64.9"), ("64", "string '64'"), (True, "boolean true"), (64.0, "number 64.0"),
    (None, "null"), ([64], "list"),
])
def test_input_threshold_must_be_an_integer(value, got):
    """No silent int() coercion: 64.9, "64" and true were all read as integers."""

    def edit(h):
        h["input"]["threshold"] = value

    _refused(r"input\.threshold must be an integer, got " + re.escape(got), _model().to_bytes(), edit)


@pytest.mark.parametrize("name, got", [(7, "integer 7"), (None, "null"), (["fc1"], "list"), (True, "boolean true")])
def test_layer_name_must_be_a_string(name, got):
    def edit(h):
        h["layers"][0]["name"] = name

    _refused(r"layers\[0\]\.name must be a string, got " + re.escape(got), _model().to_bytes(), edit)


def _cropped():
    return _model((12, 7, 3), input_shape=(3, 4), input_crop=(5, 6, 1, 2)).to_bytes()


@pytest.mark.parametrize("what, data, edit, match", [
    ("crop offset", _cropped, lambda h: h["input"]["crop"]["offset"].__setitem__(0, True),
     r"input\.crop\.offset\[0\] must be an integer, got boolean true"),
    ("crop image shape", _cropped, lambda h: h["input"]["crop"]["image_shape"].__setitem__(1, 6.0),
     r"input\.crop\.image_shape\[1\] must be an integer, got number 6\.0"),
    ("header version", lambda: _v1(_model().to_bytes()), lambda h: h.__setitem__("version", True),
     r"version must be an integer, got boolean true"),
    ("array offset", lambda: _model().to_bytes(),
     lambda h: h["arrays"]["layers.0.weight_bits"].__setitem__("offset", False),
     r"arrays\['layers\.0\.weight_bits'\]\.offset must be an integer, got boolean false"),
    ("array shape", lambda: _model((20, 8, 3)).to_bytes(),  # layer 1 rows are 1 byte: [3, true] == [3, 1]
     lambda h: h["arrays"]["layers.1.weight_bits"]["shape"].__setitem__(1, True),
     r"arrays\['layers\.1\.weight_bits'\]\.shape\[1\] must be an integer, got boolean true"),
    ("input shape", lambda: _model((1, 4)).to_bytes(), lambda h: h["input"].__setitem__("shape", [True]),
     r"input\.shape\[0\] must be an integer, got boolean true"),
])
def test_bool_is_not_an_integer(what, data, edit, match):
    """JSON true/false where an integer is required (Python's bool is an int subclass)."""
    _refused(match, data(), edit)


@pytest.mark.parametrize("where", ["between", "start"])
def test_gap_between_arrays_refused(where):
    def gap(h, p):
        blobs = _blobs(h, p)
        if where == "start":
            p = b"\0" + p
            for spec in h["arrays"].values():
                spec["offset"] += 1
            return p
        p = _lay_out(h, blobs)
        h["arrays"]["layers.1.weight_bits"]["offset"] += 1
        return p[:108] + b"\0" + p[108:]

    _refused(r"1 unused byte \(a gap\) at payload offset (0|108), before array layers\.\d\.weight_bits",
             _model().to_bytes(), lambda h: None, gap)


@pytest.mark.parametrize("array", ["layers.0.compare", "layers.0.thresholds", "layers.1.weight_bits"])
def test_missing_array_refused(array):
    def drop(h, p):
        blobs = _blobs(h, p)
        del blobs[array], h["arrays"][array]
        return _lay_out(h, blobs)

    _refused(rf"missing array {array}\b", _model().to_bytes(), lambda h: None, drop)


@pytest.mark.parametrize("array, spec", [
    ("layers.1.thresholds", {"dtype": "i8", "shape": [3]}),  # the output layer has no thresholds
    ("layers.2.weight_bits", {"dtype": "u1", "shape": [1, 1]}),  # a layer that does not exist
    ("layers.0.bias", {"dtype": "i8", "shape": [9]}),
    ("notes", {"dtype": "u1", "shape": [4]}),
])
def test_extra_array_refused(array, spec):
    size = {"u1": 1, "i8": 8}[spec["dtype"]] * int(np.prod(spec["shape"]))

    def add(h, p):
        h["arrays"][array] = {**spec, "offset": len(p)}
        return p + bytes(size)

    _refused(rf"unexpected array '{array}'", _model().to_bytes(), lambda h: None, add)


@pytest.mark.parametrize("array, shape, want", [
    ("layers.0.weight_bits", [3, 9], r"\[9, 3\]"),  # same byte count, transposed
    ("layers.0.weight_bits", [27], r"\[9, 3\]"),
    ("layers.0.thresholds", [9, 1], r"\[9\]"),
    ("layers.0.compare", [3, 3], r"\[9\]"),
    ("layers.1.weight_bits", [2, 3], r"\[3, 2\]"),
])
def test_array_shape_must_match_the_layer(array, shape, want):
    def edit(h):
        h["arrays"][array]["shape"] = shape

    _refused(rf"array {re.escape(array)}: shape {re.escape(json.dumps(shape))}, but layer {array[7]} "
             rf"\(n_in \d+, n_out \d+\) implies {want}", _model().to_bytes(), edit)


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["layers"][0].__setitem__("activation", "relu"), r"layers\[0\]: unknown key 'activation'"),
    (lambda h: h["input"].__setitem__("scale", 2), r"input: unknown key 'scale'"),
    (lambda h: h.__setitem__("quantisation", "int4"), r"header: unknown key 'quantisation'"),
    (lambda h: h["arrays"]["layers.0.compare"].__setitem__("order", "C"),
     r"arrays\['layers\.0\.compare'\]: unknown key 'order'"),
    (lambda h: h["layers"][1].__setitem__("output", "probabilities"), r"layers\[1\]\.output 'probabilities'"),
    (lambda h: h["layers"][0].__setitem__("output", "logits"), r"layers\[0\]\.output 'logits'"),
    (lambda h: h["layers"][1].__setitem__("input", "rates"), r"layers\[1\]\.input 'rates'"),
    (lambda h: h["layers"][0].pop("n_out"), r"layers\[0\]: missing key 'n_out'"),
    (lambda h: h.pop("meta"), r"header: missing key 'meta'"),
    (lambda h: h.__setitem__("meta", ["x"]), r"meta must be an object, got list"),
    (lambda h: h.__setitem__("layers", {"0": {}}), r"layers must be a list, got object"),
    (lambda h: h.__setitem__("layers", []), r"the model has no layers"),
    (lambda h: h["input"].__setitem__("shape", [1024] * 3), r"bad input shape \[1024, 1024, 1024\] \(1\.\.1048576 inputs\)"),
    (lambda h: h["layers"][0].__setitem__("n_out", 0), r"layer 0 \(fc1\): bad n_out 0"),
])
def test_unknown_and_missing_fields_refused(edit, match):
    """A field from a newer writer is refused, not half-understood; every needed field is required."""
    _refused(match, _model().to_bytes(), edit)


def test_unknown_key_in_crop_refused():
    _refused(r"input\.crop: unknown key 'scale'", _cropped(), lambda h: h["input"]["crop"].__setitem__("scale", 2))


def test_meta_stays_free_form():
    meta = {"anything": [1, {"x": None, "y": 2.5}], "nested": {"deep": [True, "s"]}}

    def edit(h):
        h["meta"] = meta

    m = HardwareModel.from_bytes(_rewrite_header(_model().to_bytes(), edit))
    assert m.meta == meta


def test_duplicate_header_keys_refused():
    """Duplicate JSON keys would leave the file ambiguous (the parsed header, and so the hash,
    sees only the last one)."""
    data = _model().to_bytes()
    header, payload = _split(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":"))
    text = text.replace('"meta":{', '"meta":{"x":1},"meta":{', 1).encode()
    dup = data[:12] + struct.pack("<I", len(text)) + text + payload
    with pytest.raises(HardwareModelError, match=r"<bytes>: corrupt header \(duplicate key 'meta'\)"):
        HardwareModel.from_bytes(dup)


def test_error_messages_are_one_line():
    """Names from the file are untrusted: a newline in one does not break the one-line error."""

    def edit(h):
        h["layers"][1]["name"] = "fc\n2"
        h["layers"][1]["n_in"] = 10

    msg = _refused(r"layer 1 \(fc\\n2\): takes 10 inputs", _model().to_bytes(), edit)
    assert "\r" not in msg


def test_huge_integer_in_header_refused():
    data = _model().to_bytes()
    header, payload = _split(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).replace('"threshold":128', '"threshold":' + "9" * 5000)
    blob = text.encode()
    with pytest.raises(HardwareModelError, match="corrupt header"):
        HardwareModel.from_bytes(data[:12] + struct.pack("<I", len(blob)) + blob + payload)


# ---- fuzzing the header's structure (hash recomputed) --------------------------------------------

def _gap_model():
    import dataclasses

    from bitsnn.hwmodel import GapLayer

    m = _model((0, 3), input_shape=(4, 4), convs=((2, 3, 2), (4, 3, 1)))
    return dataclasses.replace(m, layers=(*m.layers[:-1], GapLayer("gap3", 0, 2, in_shape=m.layers[-2].out_shape)))


_FUZZ_BASES = [
    _GOOD,
    _model((33, 7, 2), input_encoding="pixels").to_bytes(),
    _model((12, 7, 3), input_shape=(3, 4), input_crop=(5, 6, 1, 2)).to_bytes(),
    _model((9, 4)).to_bytes(),  # a single (output) layer
    _v1(_model((20, 9, 3)).to_bytes()),
    # version 4: a 3-bit convolution and a 4-bit output layer
    _model((16, 3), input_shape=(4, 4), input_encoding="pixels", convs=((2, 3, 2),), weight_bits={0: 3, 1: 4}).to_bytes(),
    # version 6: a global sum pooling head of 2 classes of 2 channels each
    _gap_model().to_bytes(),
]
_JSON_LEAF = (st.none() | st.booleans() | st.integers(-(2**64), 2**64)
              | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
def _json_nest(c):
    """A list or an object of ``c`` (a named function: hypothesis checks that it uses ``c`` by its source)."""
    return st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3)


_JSON = st.recursive(_JSON_LEAF, _json_nest, max_leaves=5)
_SPECIAL = [0, 1, -1, 2, 3, 7, 8, 9, 255, 256, 2**20, 2**20 + 1, 2**63, True, False, None, 1.0, 0.5, "", "1",
            [], {}, "u1", "i1", "i4", "i8", "f8", "spikes", "pixels", "scores", "binary_dense", "int_dense",
            "int_conv2d", "binary_conv2d"]
_KEYS = ["name", "kind", "n_in", "n_out", "input", "output", "shape", "encoding", "threshold", "crop",
         "image_shape", "offset", "dtype", "arrays", "layers", "meta", "format", "version",
         "layers.0.weight_bits", "layers.1.thresholds", "layers.5.compare", "bits", "layers.0.weights",
         "layers.1.weights", "x"]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix or k != "content_hash":
                yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _at(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _mutate(header: dict, draw) -> None:
    path = draw(st.sampled_from(list(_paths(header))))
    target = _at(header, path)
    parent = _at(header, path[:-1]) if path else None
    op = draw(st.sampled_from(["replace", "special", "delete", "add", "bump", "list"]))
    if op in ("replace", "special") and path:
        parent[path[-1]] = copy.deepcopy(draw(_JSON if op == "replace" else st.sampled_from(_SPECIAL)))
    elif op == "delete" and path:
        del parent[path[-1]]
    elif op == "add" and isinstance(target, dict):
        target[draw(st.sampled_from(_KEYS) | st.text(max_size=4))] = draw(_JSON | st.sampled_from(_SPECIAL))
    elif op == "add" and isinstance(target, list):
        target.insert(draw(st.integers(0, len(target))), draw(_JSON | st.sampled_from(_SPECIAL)))
    elif op == "bump" and type(target) is int and path:
        parent[path[-1]] = target + draw(st.sampled_from([-8, -1, 1, 8]))
    elif op == "list" and isinstance(target, list) and target:
        if draw(st.booleans()):
            target.pop(draw(st.integers(0, len(target) - 1)))
        else:
            target.append(copy.deepcopy(target[-1]))


def _relayout_loosely(header, payload: bytes) -> bytes:
    """Re-lay the payload to fit the (mutated) array table where that table is still readable,
    so that dtype/shape edits reach the checks behind the tiling check; else leave it alone."""
    try:
        sizes = {"u1": 1, "i1": 1, "i4": 4, "i8": 8}
        blobs = {}
        for name, spec in sorted(header["arrays"].items(), key=lambda kv: kv[1]["offset"]):
            n = sizes[spec["dtype"]] * int(np.prod(spec["shape"]))
            if not 0 <= n <= 1 << 16:
                return payload
            blob = payload[spec["offset"] : spec["offset"] + n]
            blobs[name] = blob + bytes(n - len(blob))
        return _lay_out(header, blobs)
    except Exception:  # noqa: BLE001 - a table this broken is left for the loader to refuse
        return payload


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_header_mutations(data):
    """Valid models' headers mutated (values of other JSON types, keys dropped or added, numbers
    moved by ±1, offsets/shapes/dtypes changed), content hash recomputed: loading either gives a
    model whose re-serialised file loads and validates, or raises HardwareModelError — nothing else."""
    base = data.draw(st.sampled_from(_FUZZ_BASES))
    n = data.draw(st.integers(1, 3))
    relayout = data.draw(st.booleans())
    tail = data.draw(st.sampled_from([0, 0, 0, -1, 1, 8]))

    def edit(h):
        for _ in range(n):
            _mutate(h, data.draw)

    def edit_payload(h, p):
        if relayout:
            p = _relayout_loosely(h, p)
        return p[:tail] if tail < 0 else p + bytes(tail)

    try:
        m = HardwareModel.from_bytes(_rewrite_header(base, edit, edit_payload), _SRC)
    except HardwareModelError as e:
        msg = str(e)
        assert msg.startswith(f"{_SRC}: ") and "\n" not in msg and "\r" not in msg
    else:
        m.validate()
        again = m.to_bytes()
        m2 = HardwareModel.from_bytes(again)
        m2.validate()
        assert m2.to_bytes() == again


# ---- every integer field of every kind, out of range (hash recomputed) -----------------------------
_OUT_OF_RANGE = (0, -1, -2, 2, 3, 16, 2**20 + 1, 2**31, -(2**63), 2**70)


def _int_paths(header: dict):
    return [p for p in _paths(header) if p and p[0] != "meta" and type(_at(header, p)) is int]


@pytest.mark.parametrize("base", range(len(_FUZZ_BASES)))
def test_every_integer_field_out_of_range(base):
    """Each integer of the header (sizes, shapes, kernel, pool, bits, threshold, crop, offsets,
    versions) set to values around and far outside its range: the loader refuses it with one line,
    or the model it gives runs through the golden model, the cycle model and the report's counts
    without any other exception (a file that loads must not crash a later stage)."""
    from bitsnn import kinds
    from bitsnn.report.counts import layer_counts
    from bitsnn.sim import cycles, golden

    data = _FUZZ_BASES[base]
    header = json.loads(_header_of(data))
    rng = np.random.default_rng(0)
    loaded = 0
    for path in _int_paths(header):
        for value in _OUT_OF_RANGE:
            def edit(h, path=path, value=value):
                _at(h, path[:-1])[path[-1]] = value

            try:
                m = HardwareModel.from_bytes(_rewrite_header(data, edit), _SRC)
            except HardwareModelError as e:
                assert str(e).startswith(f"{_SRC}: ") and "\n" not in str(e)
                continue
            loaded += 1
            m.validate()
            images = rng.integers(0, 256, size=(3, *(m.input_crop[:2] if m.input_crop else m.input_shape)), dtype=np.uint8)
            g = golden.run(m, m.prepare_images(images))
            if all(kinds.of(layer).has_hardware for layer in m.layers):  # a kind may come before its hardware
                cycles.predict_cycles(m, g, mode="event", lanes=8, word=32)
                layer_counts(m, g, lanes=8)
    assert loaded < len(_int_paths(header)) * len(_OUT_OF_RANGE)  # most edits are refused
