"""``bitsnn train --precision auto``: ALBSNN's accuracy-loss estimator picks each layer's weight
width (bitsnn.model.precision), the choice under both budgets, a layer's width changed in place,
training on real digits into a file with the chosen widths, ALBSNN's binary weight optimisation
(BWO), and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitsnn import BitsnnError  # noqa: E402
from bitsnn.hwmodel import HardwareModel  # noqa: E402
from bitsnn.model import precision  # noqa: E402
from bitsnn.model.layers import BinaryConv2d, BinaryLinear  # noqa: E402
from bitsnn.model.network import build_model, with_layer_bits  # noqa: E402
from bitsnn.model.train import resolve_config, train_model  # noqa: E402


def _est(rows):
    """An estimate whose layer i costs rows[i][b] = (loss increase, accuracy drop) at width b."""
    return {"loss": 1.0, "accuracy": 0.9, "layers": [{b: row.get(b, (0.0, 0.0)) for b in precision.WIDTHS}
                                                     for row in rows]}


def test_the_choice_takes_the_fewest_bits_within_the_accuracy_budget():
    counts = [100, 1000, 10]
    est = _est([{1: (0.5, 2.0), 2: (0.1, 0.05), 4: (0.01, 0.0)},    # layer 0: 2 bits cost 0.05 pt
                {1: (0.2, 0.08), 2: (0.05, 0.02), 4: (0.0, -0.3)},  # layer 1: +-1 costs 0.08 pt
                {1: (0.3, 0.5), 2: (0.02, 0.01), 4: (0.0, 0.0)}])
    # 0.1 pt: layer 1 at 1 bit (0.08) leaves 0.02: layer 0 cannot go to 2 bits (0.05), layer 2 can (0.01)
    assert precision.choose(est, counts, precision.Budget(max_loss=0.1)) == [4, 1, 2]
    # nothing allowed: only the free narrowings (layer 0 at 4 bits, layer 1 at 4 bits measured better,
    # which counts as 0; layer 2 at 4 bits)
    assert precision.choose(est, counts, precision.Budget(max_loss=0.0)) == [4, 4, 4]
    # a bit budget: the smallest summed drop within 1,300 bits: layer 1 at 1 bit (1,000 bits) leaves
    # 300 for the others: layer 0 at 2 bits (0.05 pt), layer 2 at 4 (free; 8 would cost 40 bits more)
    choice = precision.choose(est, counts, precision.Budget(max_weight_bits=1300))
    assert choice == [2, 1, 4] and precision.weight_bits(counts, choice) == 1240
    with pytest.raises(ValueError):
        precision.choose(est, counts, precision.Budget(max_weight_bits=100))


def test_the_estimates_are_averaged_over_the_search_epochs():
    a = _est([{1: (1.0, 4.0)}])
    b = _est([{1: (0.0, 0.0), 2: (0.2, 1.0)}])
    assert precision.smooth(None, a) is a
    s = precision.smooth(a, b)
    assert s["layers"][0][1] == (0.5, 2.0) and s["layers"][0][2] == (0.1, 0.5) and s["layers"][0][8] == (0.0, 0.0)


@pytest.mark.parametrize("make", [lambda: BinaryLinear(200, 16), lambda: BinaryLinear(200, 5, scale="scalar"),
                                  lambda: BinaryConv2d(4, 8, 3)])
def test_a_layer_keeps_its_preactivation_size_when_its_width_changes(make):
    """set_bits rescales each neuron's alpha (the output layer: its one scale) by the least-squares
    factor between its weights at the two widths: the scaled pre-activations stay close."""
    torch.manual_seed(0)
    layer = make()
    layer.bits = 8
    x = (torch.rand(64, *((200,) if isinstance(layer, BinaryLinear) else (4, 6, 6))) < 0.3).float()

    def out():
        with torch.no_grad():
            if isinstance(layer, BinaryLinear):
                return layer(x)
            return torch.nn.functional.conv2d(x, precision_quant(layer)) * layer.alpha.view(1, -1, 1, 1)

    ref = out()
    for b in (4, 2, 1):
        layer.set_bits(b)
        assert layer.bits == b
        got = out()
        rel = float((got - ref).norm() / ref.norm())
        assert rel < {4: 0.2, 2: 0.45, 1: 0.65}[b], (b, rel)
        assert 0.85 < float(got.norm() / ref.norm()) < 1.15, b  # without the rescale: about 1/50 at 1 bit
        layer.set_bits(8)  # back; the next width starts from 8 bits again
        ref = out()


def precision_quant(layer):
    from bitsnn.model.layers import quantize

    return quantize(layer.weight, layer.bits)


def test_the_estimator_leaves_the_network_as_it_was(mnist):
    """estimate() narrows one layer at a time and puts every parameter and width back bit for bit."""
    torch.manual_seed(0)
    model = build_model({"spec": "784-c4w8-24w8-10w8", "input_shape": [28, 28], "input_encoding": "pixels",
                         "input_threshold": 128, "surrogate": "box"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.as_tensor(mnist.train_images[:300])
    y = torch.as_tensor(mnist.train_labels[:300]).long()
    est = precision.estimate(model, x, y)
    assert [layer.bits for layer in precision.weight_layers(model)] == [8, 8, 8]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(est["layers"]) == 3 and all(set(row) == set(precision.WIDTHS) for row in est["layers"])
    assert all(row[8] == (0.0, 0.0) for row in est["layers"])
    assert precision.recalibrated(model, x, y) == (est["loss"], est["accuracy"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_auto_precision_trains_into_a_file_with_the_chosen_widths(mnist_digits, tmp_path):
    """Real digits (800 training, 200 test): the search epoch's estimator and choice are logged
    per layer, the remaining epoch trains at the chosen widths, the checkpoint's spec carries
    them, and export writes them into the file as per-layer weight bits within the bit budget."""
    from bitsnn.data import load_dataset
    from bitsnn.model.export import export_checkpoint
    from bitsnn.model.train import save_checkpoint

    ds = load_dataset(mnist_dir := mnist_digits, download=False)
    cfg = resolve_config("conv-tiny", spec="784-c4-c8-10", epochs=2, precision="auto", max_weight_bits="40%",
                         holdout=200, threads=1)
    lines = []
    model, metrics = train_model(cfg, ds, progress=False, log=lines.append)
    rec = metrics["precision"]
    widths = rec["widths"]
    counts = [36, 288, 3920]
    assert rec["weight_counts"] == counts and rec["widest_weight_bits"] == 8 * sum(counts)
    assert precision.weight_bits(counts, widths) <= 0.4 * 8 * sum(counts)
    assert rec["holdout_images"] == 200 and metrics["train_images"] == 600
    assert model.arch["spec"] == with_layer_bits("784-c4-c8-10", widths) == rec["spec"]
    assert [layer.bits for layer in precision.weight_layers(model)] == widths
    est_lines = [m for m in lines if m.startswith("  layer ")]
    assert len(est_lines) == 3 and all(m.count(" pt") == 4 for m in est_lines)
    assert any(m.startswith("precision: choice " + "-".join(f"w{b}" for b in widths)) for m in lines)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, cfg, metrics)
    hm_path = tmp_path / "m.bsnn"
    export_checkpoint(ckpt, hm_path, data_dir=mnist_dir, log=lambda m: None)
    hm = HardwareModel.load(hm_path)
    assert [layer.bits for layer in hm.layers] == widths
    assert hm.weight_bits_total == precision.weight_bits(counts, widths)
    # the report: each layer's width, the storage against all layers at the widest, the estimator
    from bitsnn.report.core import weights_section

    w = weights_section(hm)
    assert [layer["bits"] for layer in w["layers"]] == widths and w["weight_bits"] == hm.weight_bits_total
    assert w["weight_bits_at_widest"] == max(widths) * sum(counts)
    assert w["precision"]["widths"] == widths and w["precision"]["epoch"] == 1
    assert [set(row) for row in w["precision"]["estimator"]] == [{"1", "2", "4", "8"}] * 3


@pytest.mark.parametrize("overrides,needle", [
    (dict(max_loss=0.5), "--max-loss belongs to --precision auto"),
    (dict(holdout=10), "--holdout belongs to --precision auto"),
    (dict(precision="best"), "--precision must be one of spec, auto"),
    (dict(precision="auto", max_weight_bits="eighty"), "--max-weight-bits must be a bit count or a percentage"),
    (dict(precision="auto", max_weight_bits="120%"), r"a percentage must be in \(0, 100\]"),
    (dict(precision="auto", max_loss=-1.0), "--max-loss must be"),
    (dict(precision="auto", epochs=3, search_epochs=4), r"--search-epochs must be in 1..3"),
    (dict(epochs=3, bwo_epochs=4), r"--bwo-epochs must be in 0..3"),
    (dict(epochs=3, bwo_epochs=-1), r"--bwo-epochs must be in 0..3"),
    (dict(precision="auto", epochs=6, search_epochs=4, bwo_epochs=3),
     "--bwo-epochs 3: BWO runs after the width search, in the last 2 epochs at most"),
])
def test_bad_precision_options_are_refused(overrides, needle):
    with pytest.raises(BitsnnError, match=needle):
        resolve_config("35-8-4", **overrides)


def test_auto_precision_in_several_processes_is_refused_before_they_start(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "bitsnn", "train", "--preset", "35-8-4", "--precision", "auto",
                        "--nproc", "2", "--data-dir", str(tmp_path / "none"), "-o", str(tmp_path / "m.ckpt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("bitsnn train: error: --precision auto trains in one process: "
                                                 "leave out --nproc")
    assert list(tmp_path.iterdir()) == []


def test_an_impossible_bit_budget_is_refused_before_training(tmp_path, capfd):
    """Fewer bits than every layer at +-1: one line, exit 1, nothing written, no epoch run."""
    import subprocess
    import sys

    from conftest import small_arrays, write_idx_set

    data = tmp_path / "data"
    write_idx_set(data, small_arrays(n_train=60, h=5, w=7))
    out = tmp_path / "m.ckpt"
    r = subprocess.run([sys.executable, "-m", "bitsnn", "train", "--preset", "35-8-4", "--precision", "auto",
                        "--max-weight-bits", "100", "--holdout", "10", "--data-dir", str(data), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == ("bitsnn train: error: --max-weight-bits 100: 100 bits, fewer than "
                                                 "the 312 of every layer at 1 bit")
    assert "Traceback" not in r.stderr and "epoch 1/" not in r.stdout
    assert not out.exists()
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["data"])


def test_a_gap_head_has_no_width_to_choose():
    """The estimator and the choice skip a head without weights; the spec keeps its token."""
    model = build_model({"spec": "784-c4-c8-c20p1-gap10", "input_shape": [28, 28], "input_encoding": "pixels",
                         "input_threshold": 128, "surrogate": "box"})
    assert len(precision.weight_layers(model)) == 3
    precision.apply_widths(model, [4, 1, 2])
    assert model.arch["spec"] == "784-c4w4-c8-c20p1w2-gap10"
    assert [layer.bits for layer in precision.weight_layers(model)] == [4, 1, 2]


def test_the_flow_takes_the_precision_options():
    from bitsnn.flow import FlowConfig, _train_config

    cfg = FlowConfig.from_dict({"train": {"preset": "conv-tiny", "precision": "auto", "max_weight_bits": "50%",
                                          "search_epochs": 3}})
    t = _train_config(cfg)
    assert (t.precision, t.max_weight_bits, t.search_epochs, t.max_loss) == ("auto", "50%", 3, None)
    with pytest.raises(BitsnnError, match="precision"):
        FlowConfig.from_dict({"train": {"precision": "best"}})
    with pytest.raises(BitsnnError, match="--max-loss belongs to --precision auto"):
        _train_config(FlowConfig.from_dict({"train": {"max_loss": 0.2}}))


def test_bwo_trains_the_signs_and_leaves_b_bit_weights_alone():
    """BWO starts from the +-1 layers' signs (the network computes the same), flips exactly the
    weights whose averaged gradient points against their sign by more than the threshold, takes
    their gradients from the optimiser, and leaves a b-bit layer's weights to it."""
    torch.manual_seed(0)
    model = build_model({"spec": "64-c4w4-c8-10", "input_shape": [8, 8], "input_encoding": "pixels",
                         "input_threshold": 128, "surrogate": "box"})
    model.eval()
    x = torch.randint(0, 256, (16, 8, 8), dtype=torch.uint8)
    before = model.run(x, "float").logits
    conv1, conv2, out = precision.weight_layers(model)
    w4 = conv1.weight.detach().clone()
    bwo = precision.BinaryWeightOptimiser(model, rate=0.5, threshold=0.1)
    assert [tuple(p.shape) for p in bwo.params] == [(8, 4, 3, 3), (10, 32)] and bwo.n_weights == 288 + 320
    assert all(set(p.unique().tolist()) == {-1.0, 1.0} for p in bwo.params)
    assert torch.equal(model.run(x, "float").logits, before)  # the same signs: the same network
    p = bwo.params[0]
    g = torch.zeros_like(p)
    g.view(-1)[:4] = torch.tensor([1.0, -1.0, 0.1, 1.0]) * p.view(-1)[:4]  # against, with, too weak, against
    p.grad = g.clone()
    signs = p.detach().clone()
    conv1.weight.grad = torch.ones_like(conv1.weight)
    bwo.step()
    flipped = (p != signs).view(-1)
    assert flipped[:4].tolist() == [True, False, False, True] and int(flipped.sum()) == 2 == bwo.flips
    assert p.grad is None and conv1.weight.grad is not None and torch.equal(conv1.weight, w4)


def test_bwo_epochs_train_and_export(mnist_digits, tmp_path):
    """``--bwo-epochs``: the log says when BWO starts and how many weights each epoch flips; the
    checkpoint keeps the option; the +-1 weights stay +-1 and export (golden = torch) takes them."""
    from bitsnn.data import load_dataset
    from bitsnn.model.export import export_checkpoint
    from bitsnn.model.train import save_checkpoint

    ds = load_dataset(mnist_digits, download=False)
    cfg = resolve_config("conv-tiny", spec="784-c4w4-c8-10", epochs=2, bwo_epochs=1, threads=1)
    lines = []
    model, metrics = train_model(cfg, ds, progress=False, log=lines.append)
    assert "BWO: the last 1 epoch(s) flip the 4,208 +-1 weights directly" in lines
    assert "bwo_flips" not in metrics["history"][0] and metrics["history"][1]["bwo_flips"] >= 0
    assert any(m.startswith("epoch 2/2") and "BWO flips" in m for m in lines)
    assert set(model.output.weight.detach().unique().tolist()) <= {-1.0, 1.0}
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, cfg, metrics)
    assert torch.load(ckpt, weights_only=False)["config"]["bwo_epochs"] == 1
    export_checkpoint(ckpt, tmp_path / "m.bsnn", data_dir=mnist_digits, log=lines.append)
    assert any("golden vs torch: 0 mismatches" in m for m in lines)


@pytest.mark.slow
def test_alb_tiny_preset_on_a_custom_28x28_set(tmp_path, capsys, write_set):
    """The alb-tiny preset end to end on a data set other than MNIST (the shapes test_conv.py
    draws): the estimator picks the widths within the preset's half of the bits at 8 bits, export
    writes them (golden = torch), and the Accelerator in Amaranth's simulator agrees (0 mismatches)."""
    from test_bad_input import run_main
    from test_conv import _shapes_set

    data = tmp_path / "shapes"
    write_set(data, _shapes_set(n_train=2000))
    ckpt, bsnn = tmp_path / "a.ckpt", tmp_path / "a.bsnn"
    r = run_main(capsys, "train", "--preset", "alb-tiny", "--epochs", "3", "--holdout", "300", "--data-dir", data,
                 "-o", ckpt)
    assert r.returncode == 0, r.stderr
    assert "precision: the layers train at 784-c16" in r.stdout
    r = run_main(capsys, "export", ckpt, "--data-dir", data, "-o", bsnn)
    assert r.returncode == 0, r.stderr
    assert "golden vs torch: 0 mismatches on 100 images" in r.stdout + r.stderr
    model = HardwareModel.load(bsnn)
    counts = [16 * 9, 16 * 32 * 9, 32 * 7 * 7 * 10]
    assert model.meta["dataset"] == "custom" and model.weight_bits_total <= 0.5 * 8 * sum(counts)
    assert [layer.bits for layer in model.layers] != [8, 8, 8] and model.meta["test_accuracy"] > 0.6
    r = run_main(capsys, "sim", "--model", bsnn, "--simulator", "amaranth", "--images", "4", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "mismatches: 0" in r.stdout
