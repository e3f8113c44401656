"""The golden model against a naive integer reference, on random shapes and at the extremes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsnn.hwmodel import HardwareModel, Layer, pack_bits, random_model
from bitsnn.sim import golden


def naive(model: HardwareModel, images: np.ndarray):
    """Element by element, in Python integers: docs/hardware-model.md's "Arithmetic" written out."""
    out_spikes, out_scores, out_classes = [], [], []
    for img in images.reshape(len(images), -1):
        if model.input_encoding == "spikes":
            x = [1 if int(p) >= model.input_threshold else 0 for p in img]
        else:
            x = [int(p) for p in img]
        per_layer = []
        for layer in model.layers:
            w = layer.weights_pm1().tolist()
            a = [sum(xi * wi for xi, wi in zip(x, row)) for row in w]
            if layer.is_output:
                break
            x = [
                int(aj >= int(t)) if int(c) == 1 else int(aj <= int(t))
                for aj, t, c in zip(a, layer.thresholds, layer.compare)
            ]
            per_layer.append(x)
        best = max(range(len(a)), key=lambda j: (a[j], -j))
        out_spikes.append(per_layer)
        out_scores.append(a)
        out_classes.append(best)
    return out_spikes, out_scores, out_classes


def check(model, images):
    r = golden.run(model, images)
    spikes, scores, classes = naive(model, images)
    assert r.scores.tolist() == scores
    assert r.classes.tolist() == classes
    for li in range(len(model.layers) - 1):
        assert r.spikes[li].tolist() == [s[li] for s in spikes]
    assert r.spike_counts.tolist() == [[sum(l) for l in s] for s in spikes]
    return r


sizes_st = st.lists(st.integers(1, 150), min_size=2, max_size=4)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 2**32 - 1), enc=st.sampled_from(["spikes", "pixels"]),
       thr=st.integers(1, 255), batch=st.integers(1, 40))
def test_random_models_match_naive(sizes, seed, enc, thr, batch):
    rng = np.random.default_rng(seed)
    m = random_model(rng, sizes, input_encoding=enc, input_threshold=thr)
    images = rng.integers(0, 256, size=(batch, sizes[0]), dtype=np.uint8)
    check(m, images)


@pytest.mark.parametrize("n_in", [1, 63, 64, 65, 127, 129, 200])
@pytest.mark.parametrize("fill", [0, 255])
def test_all_zero_and_all_one_inputs(n_in, fill):
    m = random_model(np.random.default_rng(n_in), [n_in, 17, 5])
    images = np.full((2, n_in), fill, dtype=np.uint8)
    r = check(m, images)
    if fill == 0:  # no input spikes: a = 0 everywhere
        assert not r.preacts[0].any() and r.input_events[:, 0].tolist() == [0, 0]
    else:
        assert r.input_events[:, 0].tolist() == [n_in, n_in]


def test_extreme_thresholds_never_and_always():
    n_in = 70
    rng = np.random.default_rng(3)
    bits = pack_bits(rng.integers(0, 2, (4, n_in), dtype=np.uint8))
    # ge with theta = R+1: never; ge with -R: always; le with -R-1: never; le with R: always.
    th = np.array([n_in + 1, -n_in, -n_in - 1, n_in], np.int64)
    cmp_ = np.array([1, 1, -1, -1], np.int8)
    out = Layer("out", 4, 3, pack_bits(rng.integers(0, 2, (3, 4), dtype=np.uint8)))
    m = HardwareModel((n_in,), "spikes", 1, (Layer("fc1", n_in, 4, bits, th, cmp_), out))
    images = rng.integers(0, 256, size=(50, n_in), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    r = check(m, images)
    assert r.spikes[0][:, 0].sum() == 0 and r.spikes[0][:, 1].all()
    assert r.spikes[0][:, 2].sum() == 0 and r.spikes[0][:, 3].all()


def test_ties_go_to_lowest_index():
    # All-(+1) output weights: every class scores the same, so the class is 0.
    bits = pack_bits(np.ones((6, 10), np.uint8))
    m = HardwareModel((10,), "spikes", 128, (Layer("out", 10, 6, bits),))
    r = golden.run(m, np.full((3, 10), 200, np.uint8))
    assert r.scores.tolist() == [[10] * 6] * 3 and r.classes.tolist() == [0, 0, 0]


def test_event_counts():
    m = random_model(np.random.default_rng(0), [100, 40, 10])
    images = np.random.default_rng(1).integers(0, 256, size=(20, 100), dtype=np.uint8)
    r = golden.run(m, images)
    assert r.input_events[:, 0].tolist() == (images >= 128).sum(1).tolist()
    assert r.input_events[:, 1].tolist() == r.spike_counts[:, 0].tolist()
    assert r.synaptic_events.tolist() == (r.input_events * np.array([40, 10])).tolist()


def test_mnist_batch_independent(mnist, monkeypatch):
    """Results do not depend on how the batch is cut: the broadcast path for small batches, the
    per-word loop over blocks of images (block size lowered so 700 images span several)."""
    m = random_model(np.random.default_rng(5), [784, 300, 10])
    x = mnist.test_images[:700]
    monkeypatch.setattr(golden, "_BLOCK", 128)
    whole = golden.run(m, x)
    check(m, x[:300])
    cuts = [0, 1, 6, 103, 200, 213, 700]  # batches of 1, 5, 97, 97, 13 and 487 images
    parts = [golden.run(m, x[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert np.array_equal(whole.scores, np.concatenate([p.scores for p in parts]))
    assert np.array_equal(whole.spikes[0], np.concatenate([p.spikes[0] for p in parts]))


def test_bad_images_rejected():
    m = random_model(np.random.default_rng(0), [16, 4, 2])
    with pytest.raises(TypeError, match="uint8"):
        golden.run(m, np.zeros((1, 16), np.float32))
    with pytest.raises(ValueError, match="images have 15 values each, the model takes 16"):
        golden.run(m, np.zeros((1, 15), np.uint8))


def test_golden_imports_neither_torch_nor_amaranth():
    src = Path(golden.__file__).read_text()
    names = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(ast.parse(src))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [None])
    }
    assert not {n for n in names if n.split(".")[0] in ("torch", "amaranth")}
