"""model/: layers, surrogates, the fold, determinism, the exact eval path against sim/golden."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitsnn import BitsnnError  # noqa: E402
from bitsnn.hwmodel import HardwareModel, Layer, pack_bits  # noqa: E402
from bitsnn.model.fold import fold_thresholds  # noqa: E402
from bitsnn.model.layers import BinaryConv2d, BinaryDense, BinaryLinear, SignSTE  # noqa: E402
from bitsnn.model.network import PRESETS, BitSNN, parse_spec, weight_bits_of_spec  # noqa: E402
from bitsnn.model.surrogate import RHO, S2NN_ALPHA, spike  # noqa: E402
from bitsnn.model.train import resolve_config, shift_images, train_model  # noqa: E402
from bitsnn.sim import golden  # noqa: E402

# One thread: `make test` runs two xdist workers on this 2-core machine; more threads thrash.
torch.set_num_threads(1)


# ---- layers -------------------------------------------------------------------------------------
def test_binary_linear_shapes_and_gradients():
    torch.manual_seed(0)
    fc = BinaryLinear(20, 7)
    x = (torch.rand(5, 20) > 0.5).float()
    y = fc(x)
    assert y.shape == (5, 7)
    y.square().sum().backward()
    assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0
    assert fc.alpha.grad is not None and fc.alpha.grad.shape == (7,)
    # the forward really uses +-1 weights times alpha
    wb = torch.where(fc.weight - fc.weight.mean(1, keepdim=True) >= 0, 1.0, -1.0)
    torch.testing.assert_close(y.detach(), (x @ wb.T) * fc.alpha.detach())


def test_binary_linear_scalar_scale_is_positive_and_argmax_preserving():
    torch.manual_seed(1)
    fc = BinaryLinear(30, 10, scale="scalar")
    with torch.no_grad():
        fc.log_scale.fill_(-7.0)
    assert fc.scale.item() > 0
    x = (torch.rand(200, 30) > 0.5).float()
    a = fc.preact_exact(x)
    assert torch.equal(a, torch.round(a))
    assert torch.equal(torch.argmax(a * fc.scale.double(), 1), torch.argmax(a, 1))


def test_sign_ste_zero_is_plus_one_and_passes_gradient():
    w = torch.tensor([-2.0, -0.0, 0.0, 0.5], requires_grad=True)
    s = SignSTE.apply(w)
    assert s.tolist() == [-1.0, 1.0, 1.0, 1.0]
    s.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_binary_dense_float_path_shapes_spikes_and_grads():
    torch.manual_seed(0)
    layer = BinaryDense(16, 9)
    x = (torch.rand(32, 16) > 0.5).float()
    s = layer.forward_float(x)
    assert s.shape == (32, 9)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    (s * torch.randn(32, 9)).sum().backward()
    for p in (layer.fc.weight, layer.fc.alpha, layer.bn.weight, layer.bn.bias, layer.act.bias, layer.act.delta):
        assert p.grad is not None, p


def test_binary_conv2d_or_maxpool():
    torch.manual_seed(0)
    conv = BinaryConv2d(1, 4, 3, padding=1, pool=2)
    x = (torch.rand(3, 1, 28, 28) > 0.5).float()
    s = conv(x)
    assert s.shape == (3, 4, 14, 14)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    # OR pooling: the pooled spike is 1 exactly when any spike in its 2x2 window is 1
    conv.eval()
    with torch.no_grad():
        import torch.nn.functional as F

        a = F.conv2d(x, torch.where(conv.weight - conv.weight.flatten(1).mean(1).view(-1, 1, 1, 1) >= 0, 1.0, -1.0),
                     padding=1)
        full = conv.act(conv.bn(a * conv.alpha.view(1, -1, 1, 1)))
        ored = full.view(3, 4, 14, 2, 14, 2).amax(dim=(3, 5))
        assert torch.equal(conv(x), ored)
    conv.train()
    s = conv(x)
    s.sum().backward()
    assert conv.weight.grad is not None and conv.alpha.grad is not None


def test_specs_and_presets():
    assert parse_spec("784-256-256-10") == [784, 256, 256, 10]
    assert parse_spec("784-c8-10") == [784, ("conv", 8, 3, 2), 10]
    assert parse_spec("784-c8k5p1-C4-10") == [784, ("conv", 8, 5, 1), ("conv", 4, 3, 2), 10]
    for bad in ("784", "784-x-10", "784-0-10", "c8-10", "784-c8k4-10", "784-c8p3-10", "784-c0-10"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    assert weight_bits_of_spec(PRESETS["tiny"]["spec"]) <= 120 * 1024
    assert PRESETS["small"]["spec"] == "784-256-256-10"
    assert PRESETS["large"]["spec"] == "784-1024-1024-1024-10"
    with pytest.raises(BitsnnError):
        resolve_config("huge")


def test_shift_images_moves_content():
    gen = torch.Generator().manual_seed(0)
    img = torch.zeros(50, 28, 28, dtype=torch.uint8)
    img[:, 14, 14] = 255
    out = shift_images(img, 2, gen)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    ys, xs = torch.nonzero(out[:, :, :] == 255, as_tuple=True)[1:]
    assert (ys - 14).abs().max() <= 2 and (xs - 14).abs().max() <= 2
    assert len(set(zip(ys.tolist(), xs.tolist()))) > 5


# ---- surrogates -----------------------------------------------------------------------------
def test_box_surrogate_gradient_window_and_delta_grad():
    delta = torch.tensor(0.5, requires_grad=True)
    v = torch.linspace(-1, 1, 401, dtype=torch.float64).requires_grad_()
    s = spike(v, "box", delta.double())
    assert torch.equal(s, (v > 0).double())
    s.sum().backward()
    d = 0.5
    inside = (v >= -RHO * d) & (v <= d)
    expect = torch.where(inside, 1 / d, 0.0)
    torch.testing.assert_close(v.grad, expect.double())
    assert v.grad[~inside].abs().max() == 0
    assert delta.grad is not None
    torch.testing.assert_close(delta.grad.double(), (-(v.detach() * inside) / d**2).sum(), rtol=1e-5, atol=1e-6)


def test_box_surrogate_delta_learns_in_a_layer():
    layer = BinaryDense(10, 6, surrogate="box")
    x = (torch.rand(16, 10) > 0.5).float()
    layer.forward_float(x).sum().backward()
    assert layer.act.delta.grad is not None and layer.act.delta.grad.shape == ()


def test_s2nn_surrogate_gradient():
    v = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_()
    s = spike(v, "s2nn")
    assert torch.equal(s, (v > 0).double())
    s.sum().backward()
    x = v.detach()
    sg = torch.sigmoid(S2NN_ALPHA * x)
    expect = torch.where(x < 0, S2NN_ALPHA * sg * (1 - sg), 1.0 / (x.clamp(min=0) + 1))
    torch.testing.assert_close(v.grad, expect)


def test_ste_surrogate_gradient():
    v = torch.linspace(-2, 2, 41, dtype=torch.float64).requires_grad_()
    spike(v, "ste").sum().backward()
    torch.testing.assert_close(v.grad, (v.detach().abs() <= 1).double())


# ---- the fold -----------------------------------------------------------------------------------
def _reference_spikes(a, alpha, gamma, beta, mu, var, eps, b, input_scale=1.0):
    """hardtanh(y) + b > 0 in float64 for integer pre-activations a (n_a,) and neurons (n,)."""
    a = np.asarray(a, dtype=np.float64)[:, None]
    y = gamma * (alpha * input_scale * a - mu) / np.sqrt(var + eps) + beta
    return (np.clip(y, -1, 1) + b > 0).astype(np.uint8)


def _dense_with(n_in, params, input_kind="spikes"):
    """A BinaryDense whose per-neuron parameters are set from ``params`` (eps = 0)."""
    n = len(params["gamma"])
    layer = BinaryDense(n_in, n, input_kind=input_kind)
    layer.bn.eps = 0.0
    with torch.no_grad():
        layer.fc.alpha.copy_(torch.tensor(params["alpha"]))
        layer.bn.weight.copy_(torch.tensor(params["gamma"]))
        layer.bn.bias.copy_(torch.tensor(params["beta"]))
        layer.bn.running_mean.copy_(torch.tensor(params["mu"]))
        layer.bn.running_var.copy_(torch.tensor(params["var"]))
        layer.act.bias.copy_(torch.tensor(params["b"]))
    layer.eval()
    return layer


# Neurons with c/k an exact integer (alpha, gamma powers of two, var = 1, eps = 0) and extremes.
HAND_CASES = [
    # name,                 alpha, gamma, beta,  mu,   var, b,    theta, compare
    ("k>0, c/k=3",            1.0,   1.0,  0.0,  3.0,  1.0, 0.0,     4,  1),
    ("k>0, c/k=-4",           0.5,   2.0,  0.0, -2.0,  1.0, 0.0,    -3,  1),
    ("k>0, c/k=0",            1.0,   1.0,  0.5,  0.0,  1.0, -0.5,    1,  1),
    ("k>0, c/k=2.5",          1.0,   1.0,  0.0,  2.5,  1.0, 0.0,     3,  1),
    ("k<0, c/k=2",            1.0,  -1.0,  0.0,  2.0,  1.0, 0.0,     1, -1),
    ("k<0, c/k=-3",           2.0,  -0.5,  0.0, -6.0,  4.0, 0.0,    -4, -1),
    ("k<0, c/k=1.5",          1.0,  -1.0,  0.0,  1.5,  1.0, 0.0,     1, -1),
    ("k=0, c<0 always",       1.0,   0.0,  0.5,  0.0,  1.0, 0.0,    -9,  1),
    ("k=0, c>0 never",        1.0,   0.0, -0.5,  0.0,  1.0, 0.0,     9,  1),
    ("k=0, c=0 never",        1.0,   0.0,  0.0,  0.0,  1.0, 0.0,     9,  1),
    ("b=-1 never (-b>=1)",    1.0,   1.0,  5.0,  0.0,  1.0, -1.0,    9,  1),
    ("b=-1.5 never",          1.0,   1.0,  5.0,  0.0,  1.0, -1.5,    9,  1),
    ("b=1 regular",           1.0,   1.0,  0.0,  0.0,  1.0, 1.0,    -0,  1),
    ("b=1.5 always",          1.0,   1.0, -9.0,  0.0,  1.0, 1.5,    -9,  1),
    ("c/k beyond +R",         1.0,   1.0,  0.0, 50.0,  1.0, 0.0,     9,  1),
    ("c/k beyond -R",         1.0,   1.0,  0.0, -50.0, 1.0, 0.0,    -9,  1),
    ("k<0, c/k beyond +R",    1.0,  -1.0,  0.0, 50.0,  1.0, 0.0,     9, -1),
]


def test_fold_hand_made_cases():
    cols = list(zip(*[c[1:] for c in HAND_CASES]))
    alpha, gamma, beta, mu, var, b, theta_want, cmp_want = (np.array(c, dtype=np.float64) for c in cols)
    n_in = 8  # R = 8, so the clamp range is [-9, 9]
    theta, compare = fold_thresholds(alpha, gamma, beta, mu, var, 0.0, b, n_in)
    for i, case in enumerate(HAND_CASES):
        assert (theta[i], compare[i]) == (theta_want[i], cmp_want[i]), case[0]
    # and the compare matches hardtanh(y) + b > 0 for every reachable integer a
    a = np.arange(-n_in, n_in + 1)
    ref = _reference_spikes(a, alpha, gamma, beta, mu, var, 0.0, b)
    got = np.where(compare > 0, a[:, None] >= theta, a[:, None] <= theta).astype(np.uint8)
    assert np.array_equal(got, ref)


def test_fold_clamps_and_survives_tiny_k():
    theta, compare = fold_thresholds([1e-300, 1e-300, -1e-300], [1.0] * 3, [0.0] * 3, [1.0, -1.0, 1.0],
                                     [1.0] * 3, 0.0, [0.0] * 3, 100)
    assert theta.tolist() == [101, -101, -101] and compare.tolist() == [1, 1, -1]


def _golden_model(layer: BinaryDense, n_classes=3) -> HardwareModel:
    theta, compare = layer.fold()
    rng = np.random.default_rng(0)
    out_bits = rng.integers(0, 2, size=(n_classes, layer.n_out), dtype=np.uint8)
    return HardwareModel(
        input_shape=(layer.n_in,), input_encoding=layer.input_kind, input_threshold=128,
        layers=(Layer("fc1", layer.n_in, layer.n_out, pack_bits(layer.fc.weight_bits()), theta, compare,
                      layer.input_kind),
                Layer("fc2", layer.n_out, n_classes, pack_bits(out_bits))),
    )


def test_exact_path_matches_golden_on_hand_made_neurons_all_inputs():
    torch.manual_seed(3)
    cols = list(zip(*[c[1:7] for c in HAND_CASES]))
    params = dict(zip(("alpha", "gamma", "beta", "mu", "var", "b"), (list(c) for c in cols)))
    layer = _dense_with(8, params)
    hw = _golden_model(layer)
    # every one of the 256 binary inputs (as spikes: pixel 255 >= threshold 128)
    x = np.array(list(itertools.product([0, 1], repeat=8)), dtype=np.uint8)
    a_t, s_t = layer.forward_exact(torch.as_tensor(x).float())
    g = golden.run(hw, x * 255)
    assert np.array_equal(a_t.numpy().astype(np.int64), g.preacts[0])
    assert np.array_equal(s_t.numpy().astype(np.uint8), g.spikes[0])
    ref = _reference_spikes(np.arange(-8, 9), *(np.array(params[k]) for k in ("alpha", "gamma", "beta", "mu", "var")),
                            0.0, np.array(params["b"]))
    np.testing.assert_array_equal(s_t.numpy().astype(np.uint8), ref[g.preacts[0] + 8, np.arange(len(HAND_CASES))])


def test_exact_path_matches_golden_random_pixel_layer():
    """Pixel input: the 1/255 is folded into k; torch exact == golden on random images."""
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    n = 40
    layer = BinaryDense(64, n, input_kind="pixels")
    with torch.no_grad():
        layer.fc.alpha.copy_(torch.tensor(rng.uniform(0.01, 1, n)))
        layer.bn.weight.copy_(torch.tensor(rng.normal(0, 1, n)))
        layer.bn.bias.copy_(torch.tensor(rng.normal(0, 0.5, n)))
        layer.bn.running_mean.copy_(torch.tensor(rng.normal(0, 1, n)))
        layer.bn.running_var.copy_(torch.tensor(rng.uniform(0.1, 4, n)))
        layer.act.bias.copy_(torch.tensor(rng.uniform(-1.6, 1.6, n)))
    layer.eval()
    x = rng.integers(0, 256, size=(500, 64), dtype=np.uint8)
    hw = _golden_model(layer)
    a_t, s_t = layer.forward_exact(torch.as_tensor(x).float())
    g = golden.run(hw, x)
    assert np.array_equal(a_t.numpy().astype(np.int64), g.preacts[0])
    assert np.array_equal(s_t.numpy().astype(np.uint8), g.spikes[0])
    # the float path agrees except (possibly) within rounding of a threshold
    with torch.no_grad():
        s_f = layer.forward_float(torch.as_tensor(x).float()).numpy()
    assert np.mean(s_f == s_t.numpy()) > 0.99


def test_exact_path_in_eval_mode_is_default():
    torch.manual_seed(0)
    model = BitSNN({"spec": "16-8-3", "input_shape": [16]})
    model.eval()
    x = torch.randint(0, 256, (10, 16), dtype=torch.uint8)
    tr = model.run(x)
    assert tr.scores is not None and torch.equal(tr.scores, torch.round(tr.scores))
    assert torch.equal(tr.classes, torch.argmax(tr.logits, 1))
    model.train()
    assert model.run(x).scores is None


def test_input_crop_takes_whole_or_cropped_images():
    torch.manual_seed(0)
    model = BitSNN({"spec": "12-8-3", "input_shape": [3, 4], "input_crop": [5, 6, 1, 2]})
    model.eval()
    assert model.image_shape == (5, 6) and model.n_inputs == 12
    x = torch.randint(0, 256, (10, 5, 6), dtype=torch.uint8)
    whole = model.run(x)
    cut = model.run(x[:, 1:4, 2:6])
    assert torch.equal(whole.scores, cut.scores)
    with pytest.raises(ValueError, match="takes 5x6 images"):
        model.run(torch.zeros(2, 20, dtype=torch.uint8))
    for bad in ([5, 6, 3, 0], [3, 4, 0, 0], [5, 6, 1]):
        with pytest.raises(ValueError, match="input_crop"):
            BitSNN({"spec": "12-8-3", "input_shape": [3, 4], "input_crop": bad})


def test_crop_config():
    cfg = resolve_config("576-16-10", crop=24)
    arch = cfg.arch((28, 28))
    assert arch["input_shape"] == [24, 24] and arch["input_crop"] == [28, 28, 2, 2]
    with pytest.raises(ValueError, match="--crop 28"):
        resolve_config("784-16-10", crop=28).arch((28, 28))
    with pytest.raises(BitsnnError, match="--crop"):
        resolve_config("784-16-10", crop=-1)
    assert resolve_config("tiny").threads == 1
    with pytest.raises(BitsnnError, match="--threads"):
        resolve_config("tiny", threads=0)


# ---- training ---------------------------------------------------------------------------------
def _subset(ds, n):
    from bitsnn.data import Dataset

    return Dataset(ds.name, ds.source, ds.train_images[:n], ds.train_labels[:n], ds.test_images[:1000],
                   ds.test_labels[:1000])


@pytest.mark.slow
def test_training_is_deterministic(mnist):
    """Same seed, same model, whatever torch's thread count outside (training uses cfg.threads)."""
    ds = _subset(mnist, 2000)
    cfg = resolve_config("784-32-10", epochs=1, seed=7, device="cpu")
    outside = torch.get_num_threads()
    m1, met1 = train_model(cfg, ds, progress=False, log=lambda m: None)
    assert torch.get_num_threads() == outside  # restored
    torch.set_num_threads(2)
    try:
        m2, met2 = train_model(cfg, ds, progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(outside)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert met1["test_accuracy"] == met2["test_accuracy"]
    m3, _ = train_model(resolve_config("784-32-10", epochs=1, seed=8, device="cpu"), ds, progress=False,
                        log=lambda m: None)
    assert not torch.equal(m3.state_dict()["output.weight"], s1["output.weight"])


@pytest.mark.slow
def test_sparsity_knob_lowers_firing_rate(mnist):
    ds = _subset(mnist, 2000)
    rates = {}
    for lam in (0.0, 2.0):
        cfg = resolve_config("784-32-32-10", epochs=1, seed=0, sparsity=lam, device="cpu")
        _, met = train_model(cfg, ds, progress=False, log=lambda m: None)
        assert len(met["history"][0]["train_firing_rates"]) == 2  # per hidden layer, logged
        rates[lam] = float(np.mean(met["test_firing_rates"]))
    assert rates[2.0] < rates[0.0]
