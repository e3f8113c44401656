"""``bitsnn train --nproc N``: data-parallel training on torch.distributed (gloo on the CPU)."""

from __future__ import annotations

import pytest
import torch

from bitsnn.cli import main
from bitsnn.model.layers import quantize
from bitsnn.model.train import load_checkpoint

ARGS = ["--preset", "784-c4-32-10", "--input", "pixels", "--epochs", "1", "--batch-size", "16", "--sparsity", "0.01"]


@pytest.fixture
def digits(mnist_digits):
    """800 training and 200 test digits: 50 steps of a batch of 16."""
    return mnist_digits


def _train(tmp_path, digits, name, *extra) -> tuple:
    out = tmp_path / f"{name}.ckpt"
    assert main(["train", *ARGS, "--data-dir", str(digits), "-o", str(out), *extra]) == 0
    return load_checkpoint(out)


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(tmp_path, digits, capfd):
    """The same global batch of 16 in one process, and in two of 8 rows each, for 50 steps: the
    weights the network uses (quantised) are the same, and every other parameter and buffer agrees
    to float tolerance. In float64, so that float32 rounding (which differs with the split of the
    sums) cannot flip a sign() that later steps would build on."""
    one, cfg1, m1 = _train(tmp_path, digits, "one", "--float64")
    two, cfg2, m2 = _train(tmp_path, digits, "two", "--float64", "--nproc", "2")
    out = capfd.readouterr().out
    assert "2 processes (gloo), batch 8 per process" in out
    assert m2["processes"] == 2 and "processes" not in m1
    assert m1["history"][0]["loss"] == pytest.approx(m2["history"][0]["loss"], rel=1e-9)
    assert m1["test_accuracy"] == m2["test_accuracy"]
    assert cfg1["float64"] and cfg1 == cfg2
    for (name, a), (_, b) in zip(one.named_modules(), two.named_modules()):
        if hasattr(a, "bits") and hasattr(a, "weight"):
            assert torch.equal(quantize(a.weight, a.bits), quantize(b.weight, b.bits)), name
    sa, sb = one.state_dict(), two.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not sa[k].is_floating_point() or k.endswith("weight") and sa[k].dim() > 1:
            continue  # latent weights: only their quantised values reach the network (above)
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.slow
def test_nproc_refuses_before_it_starts(tmp_path, digits, capsys):
    out = tmp_path / "x.ckpt"
    assert main(["train", *ARGS, "--batch-size", "2", "--data-dir", str(digits), "-o", str(out), "--nproc", "3"]) == 1
    assert "gives each process less than a row" in capsys.readouterr().err
    (tmp_path / "user.txt").write_text("mine")
    assert main(["train", *ARGS, "--data-dir", str(digits), "-o", str(tmp_path / "user.txt"), "--nproc", "2"]) == 1
    assert (tmp_path / "user.txt").read_text() == "mine"
    assert not out.exists()


@pytest.mark.slow
def test_a_bad_data_set_is_refused_before_the_processes_start(tmp_path, digits, capfd):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digits, data)
    (data / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")  # 1 label, 200 images
    out = tmp_path / "x.ckpt"
    assert main(["train", *ARGS, "--data-dir", str(data), "-o", str(out), "--nproc", "2"]) == 1
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bitsnn train: error:" in err, err
    assert not out.exists()
