"""Your own model from Python: bitsnn's layers in a module of the test's own, trained with a plain
torch loop, traced by ``bitsnn.export`` into a bit-exact hardware model; anything else refused
by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bitsnn
from bitsnn import BitsnnError
from bitsnn.hwmodel import HardwareModel
from bitsnn.model import BinaryConv2d, BinaryDense, BinaryLinear, InputSpikes
from bitsnn.model.network import build_model
from bitsnn.model.trace import trace_network
from bitsnn.sim import golden


class ConvNet(nn.Module):
    """No preset: pixels into a 3x3 convolution of 4 channels (OR pool), 32 hidden, 10 classes."""

    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(1, 4, 3, input_kind="pixels")
        self.hidden = BinaryDense(4 * 14 * 14, 32)
        self.head = BinaryLinear(32, 10, scale="scalar")

    def forward(self, x):
        x = self.conv(x)
        x = torch.flatten(x, 1)
        return self.head(self.hidden(x))


class SpikeNet(nn.Module):
    """Spike input at 64, two dense layers, a view as the flatten."""

    def __init__(self):
        super().__init__()
        self.encode = InputSpikes(64)
        self.fc1 = BinaryDense(784, 64)
        self.fc2 = BinaryDense(64, 32)
        self.out = BinaryLinear(32, 10, scale="scalar")

    def forward(self, x):
        s = self.encode(x).view(x.size(0), -1)
        return self.out(self.fc2(self.fc1(s)))


def _train(net, mnist, steps=120, batch=100, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    x = torch.as_tensor(mnist.train_images[: steps * batch]).float().unsqueeze(1)
    y = torch.as_tensor(mnist.train_labels[: steps * batch]).long()
    net.train()
    for i in range(steps):
        loss = F.cross_entropy(net(x[i * batch : (i + 1) * batch]), y[i * batch : (i + 1) * batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("cls", [ConvNet, SpikeNet])
def test_own_module_trains_and_exports_bit_exact(tmp_path, mnist, cls):
    torch.manual_seed(0)
    net = _train(cls(), mnist)
    example = torch.as_tensor(mnist.test_images[:4]).float().unsqueeze(1)
    lines = []
    hw = bitsnn.export(net, example, tmp_path / "own.bsnn", images=mnist.test_images[:2000],
                       labels=mnist.test_labels[:2000], log=lines.append)
    assert "0 mismatches on 2000 images" in lines[0]
    assert hw.meta["exported_from"] == cls.__name__ and hw.meta["test_accuracy"] > 0.8  # 120 steps of training
    loaded = HardwareModel.load(tmp_path / "own.bsnn")
    assert loaded.content_hash == hw.content_hash
    assert loaded.input_encoding == ("spikes" if cls is SpikeNet else "pixels")
    # the golden model of the written file against the module's own integer path, every layer
    traced = trace_network(net.eval(), example)
    g = golden.run(loaded, mnist.test_images[:2000])
    tr = traced.run(torch.as_tensor(mnist.test_images[:2000]), "exact")
    for s_t, s_g in zip(tr.spikes, g.spikes):
        np.testing.assert_array_equal(s_t.numpy().astype(np.uint8), s_g)
    np.testing.assert_array_equal(tr.scores.numpy().astype(np.int64), g.scores)
    # the module's own float forward classifies (almost) every image as the hardware does
    with torch.no_grad():
        own = net(torch.as_tensor(mnist.test_images[:2000]).float().unsqueeze(1)).argmax(1).numpy()
    assert np.mean(own == g.classes) > 0.98
    # the traced network's arch rebuilds the same shapes: its weights load into a preset-style model
    rebuilt = build_model(traced.arch)
    rebuilt.load_state_dict(traced.state_dict())
    np.testing.assert_array_equal(rebuilt.eval().run(torch.as_tensor(mnist.test_images[:200]), "exact").scores,
                                  g.scores[:200])


class _Relu(ConvNet):
    def forward(self, x):
        return self.head(F.relu(self.hidden(self.conv(x).flatten(1))))


class _Residual(SpikeNet):
    def __init__(self):
        super().__init__()
        self.fc2 = BinaryDense(64, 64)
        self.out = BinaryLinear(64, 10, scale="scalar")

    def forward(self, x):
        h = self.fc1(self.encode(x).flatten(1))
        return self.out(self.fc2(h) + h)


class _MaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(1, 4, 3, pool=1, input_kind="pixels")
        self.pool = nn.MaxPool2d(2)
        self.head = BinaryLinear(4 * 14 * 14, 10, scale="scalar")

    def forward(self, x):
        return self.head(self.pool(self.conv(x)).flatten(1))


class _AvgPool(_MaxPool):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)


class _WideMaxPool(_MaxPool):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(4)
        self.head = BinaryLinear(4 * 7 * 7, 10, scale="scalar")


def test_a_maxpool_after_a_convolution_is_its_or_pool(mnist):
    """``BinaryConv2d(pool=1)`` then ``nn.MaxPool2d(2)``: exported as the convolution's OR pool, the
    same file as ``BinaryConv2d(pool=2)`` with the same parameters."""
    torch.manual_seed(0)
    net = _train(_MaxPool(), mnist, steps=40)
    example = torch.as_tensor(mnist.test_images[:4]).float().unsqueeze(1)
    hw = bitsnn.export(net, example, images=mnist.test_images[:1000])
    assert net.conv.pool == 1  # the module itself is left as it was
    twin = ConvNet()
    twin.conv = BinaryConv2d(1, 4, 3, pool=2, input_kind="pixels")
    twin.hidden = nn.Identity()
    twin.head = net.head
    twin.conv.load_state_dict(net.conv.state_dict())

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = twin.conv, twin.head

        def forward(self, x):
            return self.head(self.conv(x).flatten(1))

    other = bitsnn.export(Twin(), example, images=mnist.test_images[:1000])
    assert hw.layers[0].pool == 2 and hw.meta["arch"] == other.meta["arch"]
    assert dataclasses.replace(hw, meta={}).content_hash == dataclasses.replace(other, meta={}).content_hash


class _NeuronScaledHead(SpikeNet):
    def __init__(self):
        super().__init__()
        self.out = BinaryLinear(32, 10)


class _Branchy(SpikeNet):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.out(self.fc2(self.fc1(self.encode(x).flatten(1))))
        return self.out(self.fc2(self.fc1(x.flatten(1))))


class _SpikesIntoPixelLayer(ConvNet):
    def __init__(self):
        super().__init__()
        self.encode = InputSpikes(64)

    def forward(self, x):
        return self.head(self.hidden(self.conv(self.encode(x)).flatten(1)))


class _Scaled(ConvNet):
    def forward(self, x):
        return super().forward(x) * 2.0


@pytest.mark.parametrize("cls,message", [
    (_Relu, r"^export: node 'relu' \(function relu\) has no hardware mapping; bitsnn maps InputSpikes, "
            r"BinaryConv2d, BinaryDense, flatten and a final BinaryLinear"),
    (_Residual, r"^export: node 'add' \(function add\) also reads 'fc1' \(bitsnn maps a chain of layers, no "
                r"branches\)"),
    (_AvgPool, r"^export: node 'pool' \(AvgPool2d module 'pool'\) has no hardware mapping here: bitsnn pools a "
               r"convolution's spikes with a 2 x 2 MaxPool2d right after a BinaryConv2d\(\.\.\., pool=1\)"),
    (_WideMaxPool, r"^export: node 'pool' \(MaxPool2d module 'pool'\) has no hardware mapping here"),
    (_NeuronScaledHead, r"^export: node 'out' \(BinaryLinear module 'out'\) is a BinaryLinear with per-neuron "
                        r"scales"),
    (_Branchy, r"^export: torch.fx cannot trace _Branchy: "),
    (_SpikesIntoPixelLayer, r"^export: hidden layer 0 \(BinaryConv2d\) takes input_kind='pixels'; here its "
                            r"input is spikes$"),
    (_Scaled, r"^export: node 'mul' \(function mul\) comes after the output BinaryLinear"),
])
def test_unmappable_modules_are_refused_in_one_line(tmp_path, cls, message):
    x = torch.randint(0, 256, (3, 1, 28, 28)).float()
    with pytest.raises(BitsnnError, match=message) as e:
        bitsnn.export(cls(), x, tmp_path / "m.bsnn")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m.bsnn").exists()


def test_export_wants_raw_pixels_and_keeps_existing_files(tmp_path):
    x = torch.randint(0, 256, (3, 1, 28, 28)).float()
    with pytest.raises(BitsnnError, match=r"example_input must hold raw 8-bit pixel values 0\.\.255"):
        bitsnn.export(ConvNet(), x / 255.0)
    with pytest.raises(BitsnnError, match="example_input must be a batch of images"):
        bitsnn.export(ConvNet(), torch.zeros(0, 1, 28, 28))
    with pytest.raises(BitsnnError, match=r"--nir .*: is the hardware-model file -o names"):
        bitsnn.export(ConvNet(), x, tmp_path / "same", nir=tmp_path / "same")
    assert not (tmp_path / "same").exists()
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(BitsnnError):
        bitsnn.export(ConvNet(), x, target)
    assert target.is_dir()
