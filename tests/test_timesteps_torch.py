"""Time steps in torch: back-propagation through time, and the exact path against the golden
model on every spike of every step (what ``bitsnn export`` checks on the whole test set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitsnn.model.export import compare_with_golden, to_hardware_model
from bitsnn.model.network import build_model
from bitsnn.sim import golden


def _trained(arch, x, y, steps=4):
    """A model after a few optimiser steps (BatchNorm statistics and biases away from their start)."""
    torch.manual_seed(0)
    model = build_model(arch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("spec,coding,encoding,reset", [
    ("64-24-16-10", "threshold", "spikes", "subtract"),
    ("64-24-16-10", "rate", "spikes", "zero"),
    ("64-24-16-10", "threshold", "spikes", "subtract-next"),
    ("64-c4-16-10", "direct", "pixels", "subtract"),
    ("64-c4w4-c6p1-10w3", "threshold", "spikes", "zero"),
])
def test_exact_path_equals_golden_on_every_step(spec, coding, encoding, reset):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8), dtype=np.uint8)
    labels = torch.as_tensor(rng.integers(0, 10, size=64))
    arch = {"spec": spec, "input_shape": [8, 8], "input_encoding": encoding, "input_threshold": 100,
            "timesteps": 4, "input_coding": coding, "input_seed": 99 if coding == "rate" else None,
            "neuron": "lif", "leak": 16384, "reset": reset}
    model = _trained(arch, torch.as_tensor(images), labels)
    hw = to_hardware_model(model)
    assert hw.format_version == 5 and hw.timesteps == 4 and hw.input_coding == coding
    assert {l.neuron for l in hw.hidden_layers} == {"lif"} and {l.reset for l in hw.hidden_layers} == {reset}
    result = compare_with_golden(model, hw, images)
    assert result["mismatches"] == 0, result
    g = golden.run(hw, images)
    for s in g.step_spikes:  # neither silent nor saturated: the comparison says something
        assert 0.02 < s.mean() < 0.98, s.mean()
    tr = model.run(torch.as_tensor(images), "exact")
    assert tr.spikes[0].shape == (64, 4, g.step_spikes[0].shape[2])
    assert np.array_equal(tr.scores.numpy().astype(np.int64), g.scores)


def test_given_spikes_through_a_convolution():
    """An event sensor's frames: (B, T, 2, H, W) spikes of two polarities, no pixels."""
    rng = np.random.default_rng(1)
    frames = (rng.random((32, 5, 2, 6, 6)) < 0.3).astype(np.uint8)
    arch = {"spec": "72-c6-12-10", "input_shape": [2, 6, 6], "input_encoding": "spikes", "timesteps": 5,
            "input_coding": "given", "neuron": "if", "reset": "subtract"}
    model = _trained(arch, torch.as_tensor(frames), torch.as_tensor(rng.integers(0, 10, size=32)))
    hw = to_hardware_model(model)
    assert hw.input_shape == (2, 6, 6) and hw.input_coding == "given" and hw.layers[0].in_shape == (2, 6, 6)
    assert compare_with_golden(model, hw, frames)["mismatches"] == 0
    with pytest.raises(ValueError, match=r"given spikes have shape \[4, 2, 6, 6\] each, the model takes 5x2x6x6"):
        model.run(torch.as_tensor(frames[:, :4]))


def test_gradients_flow_back_through_time():
    """The loss at the last step reaches the first layer's weights through every step's membrane."""
    arch = {"spec": "64-16-10", "input_shape": [8, 8], "input_encoding": "pixels", "timesteps": 6,
            "neuron": "lif", "leak": 32768}
    torch.manual_seed(0)
    model = build_model(arch).train()
    x = torch.as_tensor(np.random.default_rng(2).integers(0, 256, size=(16, 8, 8), dtype=np.uint8))
    F.cross_entropy(model(x), torch.zeros(16, dtype=torch.long)).backward()
    g = model.hidden[0].fc.weight.grad
    assert g is not None and torch.count_nonzero(g) > g.numel() // 2


def test_time_options_are_checked_before_training():
    from bitsnn import BitsnnError
    from bitsnn.model.train import resolve_config

    assert resolve_config("tiny", neuron="lif").leak == 3  # the default leak
    for kw, msg in [({"neuron": "if", "leak": 2}, r"--leak 2: if neurons have no leak \(lif neurons do\)"),
                    ({"neuron": "lif", "leak": 17}, r"--leak must be a shift of 1\.\.16, got 17"),
                    ({"coding": "direct"}, "input coding 'direct': spikes input takes threshold, rate, given"),
                    ({"coding": "rate"}, r"rate coding needs a seed \(--rate-seed\) in 1\.\.2\^32-1, not None"),
                    ({"rate_seed": 5}, r"a seed \(--rate-seed\) belongs to rate coding only, not threshold"),
                    ({"timesteps": 0}, "time steps 0 outside 1..4096"),
                    ({"neuron": "izhikevich"}, "unsupported neuron model 'izhikevich'")]:
        with pytest.raises(BitsnnError, match=msg):
            resolve_config("tiny", **kw)


def test_export_of_a_given_spikes_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    """bitsnn export checks on the data set's images; a model of given spikes is refused before
    any data is loaded, naming what to do instead."""
    from bitsnn.cli import main
    from bitsnn.model.train import save_checkpoint

    arch = {"spec": "72-12-10", "input_shape": [2, 6, 6], "input_encoding": "spikes", "timesteps": 3,
            "input_coding": "given", "neuron": "if"}
    save_checkpoint(tmp_path / "g.ckpt", build_model(arch), {"arch": arch})
    assert main(["export", str(tmp_path / "g.ckpt"), "-o", str(tmp_path / "g.bsnn"), "--data-dir",
                 str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this one takes given spikes per step" in err
    assert not (tmp_path / "g.bsnn").exists()
