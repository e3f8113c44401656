"""BitSNN networks: input encoding, hidden spiking layers, integer-score output layer; presets.

A network is built from a JSON-able architecture dict (stored in checkpoints)::

    {"spec": "784-256-256-10", "input_shape": [28, 28], "input_encoding": "spikes",
     "input_threshold": 128, "surrogate": "box"}

``spec`` is a layer spec: the input size, then hidden sizes, then the class count
(``784-256-256-10``); a hidden token ``cN[kK][pP]`` is a :class:`BinaryConv2d` with N channels,
a K x K kernel (default 3) and an OR max-pool of P (1 or 2, default 2), e.g. ``784-c8-c16-10``
or ``784-c8k5-c16p1-10``. Convolutions come first; the dense layers take their flattened maps.
A layer token may end in ``wB``: B-bit integer weights (2..8) instead of +-1, e.g.
``784-c8w4-c32-10w4`` (a 4-bit first convolution and output layer). The last token may be
``gap`` after a convolution instead of a class count: ALBSNN's global sum pooling head, each
class's score the spikes of its channel summed over the map (``784-c8w4-c32-c10p1-gap``), or
``gapN``: N classes, each the sum of C / N consecutive channels (``784-c8w4-c32-c40p1-gap10``).

``input_crop`` (optional): [image height, image width, top, left]: the network takes the
``input_shape`` window at (top, left) of larger images (MNIST's border pixels are almost never
set; cropping them frees weight memory for hidden neurons). ``forward`` accepts whole images and
cuts the window out, or takes already cropped ones.

Input encoding: ``spikes`` (s_i = [x_i >= threshold], threshold 128 by default, stored in the
hardware model) or ``pixels`` (8-bit x_i straight into the first binary-weight layer).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from bitsnn import kinds
from bitsnn.hwmodel import CODINGS_OF, MAX_DIM, MAX_KERNEL, MAX_STEPS, WEIGHT_BITS, crop_problem, rate_randoms

from .layers import BinaryConv2d, BinaryDense, BinaryLinear, GlobalSumPool
from .surrogate import SURROGATES

__all__ = ["PRESETS", "BitSNN", "Trace", "parse_spec", "normalise_time", "spec_weight_bits", "with_weight_bits", "with_layer_bits", "spec_classes",
           "build_model", "weight_bits_of_spec"]

#: name -> layer spec and training defaults: the best settings measured here (docs/model.md has
#: the numbers; not every preset reached its accuracy target).
PRESETS: dict[str, dict] = {
    # The central 24x24 window (MNIST's border pixels are almost never set) into 160 hidden
    # neurons: 576*160 + 160*10 = 93,760 weight bits in the iCE40UP5K's 30 x 4 kbit block RAM.
    # 96.61 % at seed 0 (96.25 / 96.47 % at seeds 1 / 2); the whole image into 128 neurons, the
    # widest that fits, gave 96.2 % over three seeds. Input spikes at pixel >= 64 beat >= 128.
    "tiny": dict(spec="576-160-10", crop=24, epochs=30, lr=5e-3, batch_size=64, shift=0, surrogate="s2nn",
                 input_threshold=64),
    # Convolutions (docs/model.md, "Convolutional presets"): 8-bit pixels into a 3x3 convolution
    # of 8 channels with 4-bit weights (8 DSP multipliers on the iCE40UP5K), OR pool, 32 channels
    # with +-1 weights (a sliding-window stage, 16 lanes), OR pool, 10 classes with 4-bit weights
    # (in SPRAM, written over the UART). 20 epochs at learning rate 2.5e-3: 98.93 % at seed 0
    # (98.80 / 98.72 % at seeds 1 / 2); 15 epochs 98.77 / 98.87 / 98.78 %. With +-1 weights
    # everywhere (784-c8-c32-10, the preset before) 98.10 / 98.11 / 98.31 % after 15 epochs.
    "conv-tiny": dict(spec="784-c8w4-c32-10w4", epochs=20, lr=2.5e-3, batch_size=64, shift=1, surrogate="box",
                      input_encoding="pixels", input_threshold=64),
    # For the ULX3S (ECP5-85F): 32 and 64 channels, a hidden layer of 256, +-2 px shifts, 30
    # epochs at learning rate 2.5e-3: 99.33 % at seed 0 (4,717 s on one thread, partly beside
    # other jobs); at 5e-3 99.28 %, 99.19 % after 40 epochs. 784-c32-c64-10: 98.90 % after 15
    # epochs; 784-c16-c32-10 (+-1 px) 98.70 % (681 s), 98.50 % after 30 epochs.
    "conv": dict(spec="784-c32-c64-256-10", epochs=30, lr=2.5e-3, batch_size=64, shift=2, surrogate="box",
                 input_encoding="pixels", input_threshold=64),
    # Over time (docs/model.md, "Time steps"): conv-tiny's layers with lif neurons (leak V >> 3,
    # reset by subtraction) over 4 steps of direct pixel input, 15 epochs: 98.96 % at seed 0 (20
    # epochs 98.84 %; 2 steps, 20 epochs, 97.70 %). Its membranes run in the convolutions' stages.
    "lif-tiny": dict(spec="784-c8w4-c32-10w4", epochs=15, lr=2.5e-3, batch_size=64, shift=1, surrogate="box",
                     input_encoding="pixels", input_threshold=64, timesteps=4, neuron="lif", leak=3),
    # For the ULX3S over time: 16 and 32 channels with 4-bit kernels, the rest as lif-tiny, 20
    # epochs: 99.24 % at seed 0 (4,453 s on one thread beside another run). Its 4-bit second
    # convolution is an event stage with a bank of accumulators per step: 48 block RAMs, more
    # than the iCE40UP5K has; with +-1 kernels there (784-c16w4-c32-10w4) it fits the UP5K at 2 lanes.
    "lif": dict(spec="784-c16w4-c32w4-10w4", epochs=20, lr=2.5e-3, batch_size=64, shift=1, surrogate="box",
                input_encoding="pixels", input_threshold=64, timesteps=4, neuron="lif", leak=3),
    # Fast-SNN (docs/model.md, "Fast-SNN"): conv-tiny's layers as a quantised ANN of 2-bit
    # activations, converted to signed_if neurons over T = 3 steps, then one epoch of the
    # layer-wise fine-tuning; each convolution pools the sums of its windows before its neurons.
    # 30 epochs at 5e-3: 98.93 % at seed 0 (the ANN 98.89 %; the fine-tuning's epoch did not help
    # and was undone); 20 at 2.5e-3: 98.67 %.
    "fast-tiny": dict(spec="784-c8w4-c32-10w4", epochs=30, lr=5e-3, batch_size=64, shift=1, surrogate="box",
                      input_encoding="pixels", input_threshold=64, act_bits=2, finetune_epochs=1),
    # ALBSNN (docs/model.md, "Per-layer precision"): conv-tiny's recipe on 16 and 32 channels, each
    # layer's weight width chosen by the accuracy-loss estimator while training, within half the
    # network's bits at 8 bits (the output layer goes to the iCE40UP5K's SPRAM). At seed 0 on MNIST
    # it chose 784-c16w4-c32w4-10w4 (81,728 bits): 99.10 %, 4,849 LC on the UP5K; within 40 %,
    # 784-c16w4-c32w4-10w2 (50,368 bits): 98.98 %.
    "alb-tiny": dict(spec="784-c16-c32-10", epochs=30, lr=2.5e-3, batch_size=64, shift=1, surrogate="box",
                     input_encoding="pixels", input_threshold=64, precision="auto", max_weight_bits="50%"),
    "small": dict(spec="784-256-256-10", epochs=25, lr=5e-3, batch_size=64, shift=1),
    "large": dict(spec="784-1024-1024-1024-10", epochs=12, lr=3e-3, batch_size=64, shift=1),
}


_CONV_TOKEN = re.compile(r"c(\d+)(?:k(\d+))?(?:p(\d+))?", re.IGNORECASE)
_BITS_SUFFIX = re.compile(r"(.*?)w(\d+)", re.IGNORECASE)
#: the spec's last token for ALBSNN's global sum pooling head (:class:`GlobalSumPool`)
GAP_TOKEN = "gap"
#: ``gap`` (a class a channel) or ``gapN`` (N classes, each the sum of C / N consecutive channels)
_GAP = re.compile(GAP_TOKEN + r"(\d+)?", re.IGNORECASE)


def _split_bits(spec: str) -> list[tuple[str, int]]:
    """The spec's tokens, each with its weight bits (1 without a ``wB`` suffix)."""
    out = []
    for i, tok in enumerate(str(spec).split("-")):
        tok = tok.strip()
        bits = 1
        if (m := _BITS_SUFFIX.fullmatch(tok)):
            tok, bits = m[1], int(m[2])
            if i == 0:
                raise ValueError(f"bad layer spec {spec!r}: the input size takes no weight bits")
            if _GAP.fullmatch(tok):
                raise ValueError(f"bad layer spec {spec!r}: {GAP_TOKEN} (global sum pooling) has no weights")
            if bits not in WEIGHT_BITS:
                raise ValueError(f"bad layer spec {spec!r}: w{bits}: weight bits must be "
                                 f"{WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1} (no suffix: +-1 weights)")
        out.append((tok, bits))
    return out


def spec_weight_bits(spec: str) -> list[int]:
    """Bits per weight of each layer of ``spec`` (hidden layers, then the output layer): 1 for
    +-1 weights, B for a token ending in ``wB``."""
    parse_spec(spec)
    return [b for _tok, b in _split_bits(spec)[1:]]


def with_weight_bits(spec: str, bits: int) -> str:
    """``spec`` with ``bits``-bit weights in every layer (1: +-1 weights, no suffix), whatever
    widths it gave: ``with_weight_bits("784-c8-c32w4-10", 2)`` is ``"784-c8w2-c32w2-10w2"``."""
    return with_layer_bits(spec, [bits] * (len(_split_bits(spec)) - 1))


def with_layer_bits(spec: str, bits) -> str:
    """``spec`` with layer i's weights ``bits[i]`` bits wide (hidden layers, then the output
    layer; 1: +-1 weights): ``with_layer_bits("784-c8-c32-10", [4, 1, 2])`` is
    ``"784-c8w4-c32-10w2"``. A ``gap`` head, which holds no weights, keeps its token."""
    toks = _split_bits(spec)
    bits = [int(b) for b in bits]
    if len(bits) != len(toks) - 1:
        raise ValueError(f"{len(bits)} widths for the {len(toks) - 1} layers of {spec!r}")
    out = "-".join([toks[0][0]] + [tok + ("" if _GAP.fullmatch(tok) else _bits_token(b))  # a gap head holds no weights
                                   for (tok, _), b in zip(toks[1:], bits)])
    parse_spec(out)  # refuses bits that are neither +-1 nor in WEIGHT_BITS
    return out


#: the most weights one layer may have in training (float32 weights, gradients and Adam's two
#: moments take 16 bytes each: 1 GiB a layer); the file format's own limit is 2^20 neurons a layer
MAX_LAYER_WEIGHTS = 1 << 26


def parse_spec(spec: str) -> list:
    """``"784-256-10"`` -> [784, 256, 10]; a conv token ``cN[kK][pP]`` (N channels, K x K kernel,
    default 3, OR max-pool P, 1 or 2, default 2) -> ("conv", N, K, P). A ``wB`` suffix (B-bit
    weights) is checked here and read by :func:`spec_weight_bits`."""
    out = []
    toks = _split_bits(spec)
    for j, (tok, _bits) in enumerate(toks):
        if (g := _GAP.fullmatch(tok)):
            if j != len(toks) - 1 or not out or not isinstance(out[-1], tuple):
                raise ValueError(f"bad layer spec {spec!r}: {GAP_TOKEN} (global sum pooling, ALBSNN's head) ends the "
                                 "spec, after a convolution whose channels are the classes")
            classes = int(g[1]) if g[1] else out[-1][1]
            if not 0 < classes <= out[-1][1] or out[-1][1] % classes:
                raise ValueError(f"bad layer spec {spec!r}: {tok}: {out[-1][1]} channels do not split into "
                                 f"{classes} classes of as many channels each")
            out.append((GAP_TOKEN, classes))  # the head: each class the sum of its channels' maps
            continue
        if (m := _CONV_TOKEN.fullmatch(tok)):
            n, k, p = int(m[1]), int(m[2] or 3), int(m[3] or 2)
            if k % 2 == 0 or p not in (1, 2):
                raise ValueError(f"bad layer spec {spec!r}: {tok!r} needs an odd kernel and pool 1 or 2")
            out.append(("conv", n, k, p))
            continue
        try:
            out.append(int(tok))
        except ValueError:
            raise ValueError(f"bad layer spec {spec!r}: {tok!r} is not a size or cN[kK][pP] (optionally ending in wB)") from None
    if len(out) < 2 or not isinstance(out[0], int) or not (isinstance(out[-1], int) or _is_gap(out[-1])):
        raise ValueError(f"bad layer spec {spec!r}: needs an input size, optional hidden layers and a class count")
    if any((v[1] if isinstance(v, tuple) else v) <= 0 for v in out):
        raise ValueError(f"bad layer spec {spec!r}: sizes must be positive")
    # the limits, before anything is allocated: neurons per layer (the format's), weights per layer
    n_prev, c_prev = out[0], 1
    for v in out[1:]:
        if _is_gap(v):
            break
        if isinstance(v, tuple):
            _, c, k, p = v
            if k > MAX_KERNEL:
                raise ValueError(f"bad layer spec {spec!r}: kernel {k} is wider than {MAX_KERNEL}")
            n = c * (n_prev // c_prev) // (p * p)  # the maps' size (at most: a crop or an odd side gives less)
            fan_in = c_prev * k * k
            weights, c_prev = c * fan_in, c
        else:
            fan_in = n_prev
            n, weights, c_prev = v, n_prev * v, 1
        if fan_in < 2:
            raise ValueError(f"bad layer spec {spec!r}: a layer with one input; the weights are standardised over "
                             "each neuron's inputs, which needs at least 2")
        if n > MAX_DIM:
            raise ValueError(f"bad layer spec {spec!r}: {n:,} neurons in one layer; the hardware-model file "
                             f"holds at most {MAX_DIM:,}")
        if weights > MAX_LAYER_WEIGHTS:
            raise ValueError(f"bad layer spec {spec!r}: {weights:,} weights in one layer; training takes at "
                             f"most {MAX_LAYER_WEIGHTS:,}")
        n_prev = n
    return out


def spec_classes(spec: str) -> int:
    """The class count of ``spec``: its last size, or its ``gap`` head's (``gapN``: N; ``gap``: the last
    convolution's channels)."""
    sizes = parse_spec(spec)
    return sizes[-1][1] if _is_gap(sizes[-1]) else sizes[-1]


def _is_gap(v) -> bool:
    return isinstance(v, tuple) and v[0] == GAP_TOKEN


def weight_bits_of_spec(spec: str) -> int:
    sizes = parse_spec(spec)
    if any(isinstance(s, tuple) for s in sizes):
        raise ValueError("weight_bits_of_spec: dense specs only")
    return sum(a * b * w for a, b, w in zip(sizes[:-1], sizes[1:], spec_weight_bits(spec)))


@dataclass
class Trace:
    """What one forward pass produced.

    ``logits``: (B, classes) float (s * a). ``scores``: (B, classes) float64 holding the integer
    scores a (exact path only, else None). ``spikes``: one 0/1 float tensor per hidden layer.
    ``preacts``: integer pre-activations per layer (float64; exact path only).
    """

    logits: torch.Tensor
    spikes: list[torch.Tensor] = field(default_factory=list)
    scores: torch.Tensor | None = None
    preacts: list[torch.Tensor] = field(default_factory=list)

    @property
    def classes(self) -> torch.Tensor:
        """argmax, ties to the lowest index (of the integer scores on the exact path)."""
        return torch.argmax(self.scores if self.scores is not None else self.logits, dim=1)

    def firing_rates(self) -> list[torch.Tensor]:
        """Mean firing rate of each hidden layer (differentiable on the float path)."""
        return [s.mean() for s in self.spikes]


class BitSNN(nn.Module):
    """Input encoding -> hidden spiking layers -> BinaryLinear output with one scale s.

    ``forward(x)`` returns logits; :meth:`run` returns a :class:`Trace`. ``x`` holds raw 8-bit
    pixel values (uint8 or float), shaped (B, *input_shape) or (B, n_inputs).

    Paths: ``"float"`` is the training arithmetic (BN+hardtanh+bias, float32); ``"exact"`` is the
    integer contract (exact a, folded thresholds), the default in eval mode for dense models.
    """

    def __init__(self, arch: dict):
        super().__init__()
        self.arch = normalise_arch(arch)
        sizes = parse_spec(self.arch["spec"])
        wbits = spec_weight_bits(self.arch["spec"])
        enc = self.arch["input_encoding"]
        self.input_shape = tuple(self.arch["input_shape"])
        self.input_encoding = enc
        self.input_threshold = int(self.arch["input_threshold"])
        crop = self.arch.get("input_crop")
        self.input_crop = tuple(crop) if crop else None
        if math.prod(self.input_shape) != sizes[0]:
            raise ValueError(f"spec input size {sizes[0]} does not match input shape {self.input_shape}")
        sur = self.arch["surrogate"]
        #: time steps per inference, the input coding, the hidden layers' neuron model
        self.timesteps = int(self.arch.get("timesteps", 1))
        self.input_coding = self.arch.get("input_coding", CODINGS_OF[enc][0])
        self.input_seed = self.arch.get("input_seed")
        neuron = {"neuron": self.arch.get("neuron", "step"), "leak": int(self.arch.get("leak", 0)),
                  "reset": self.arch.get("reset", "subtract"), "steps": self.timesteps}
        hidden = []
        n_prev, chw = sizes[0], None
        for i, s in enumerate(sizes[1:-1]):
            kind = enc if i == 0 else "spikes"
            if isinstance(s, tuple):
                if chw is None:
                    if i != 0 or len(self.input_shape) not in (2, 3):
                        raise ValueError("conv layers must come first and need a 2-D input shape (3-D for given spikes)")
                    chw = (1, *self.input_shape) if len(self.input_shape) == 2 else tuple(self.input_shape)
                _, c_out, k, pool = s
                if min(chw[1:]) < pool:
                    raise ValueError(f"conv layer {i + 1}: {chw[1]}x{chw[2]} maps are too small to pool by {pool}")
                layer = BinaryConv2d(chw[0], c_out, k, pool=pool, surrogate=sur, input_kind=kind, in_hw=chw[1:],
                                     bits=wbits[i], **neuron)
                chw = (c_out, chw[1] // pool, chw[2] // pool)
                n_prev = math.prod(chw)
            else:
                layer = BinaryDense(n_prev, s, surrogate=sur, input_kind=kind, bits=wbits[i], **neuron)
                chw = None
                n_prev = s
            hidden.append(layer)
        out_kind = enc if not hidden else "spikes"
        if _is_gap(sizes[-1]):  # parse_spec put it after a convolution
            self._attach(hidden, GlobalSumPool(chw[0], chw[1:], sizes[-1][1]))
            return
        self._attach(hidden, BinaryLinear(n_prev, sizes[-1], scale="scalar",
                                          input_scale=1.0 / 255 if out_kind == "pixels" else 1.0, bits=wbits[-1]))

    def _attach(self, hidden: list, output: BinaryLinear) -> None:
        self._conv_input = isinstance(hidden[0], BinaryConv2d) if hidden else False
        self.hidden = nn.ModuleList(hidden)
        self.output = output
        self.output_input_kind = self.input_encoding if not hidden else "spikes"

    @classmethod
    def from_layers(cls, hidden: list, output: BinaryLinear, *, input_shape, input_encoding: str = "pixels",
                    input_threshold: int = 128) -> "BitSNN":
        """A BitSNN around existing layers (shared, not copied): the hidden :class:`BinaryConv2d` /
        :class:`BinaryDense` layers in order and a scalar-scale :class:`BinaryLinear` output.

        Its ``arch`` is the one :func:`build_model` would build the same shapes from, so its
        ``state_dict`` loads into ``build_model(model.arch)``. ValueError names a layer that does not
        fit (sizes, input kinds, conv after dense). A conv layer that does not know its input map size
        (``in_hw=None``) learns it here."""
        tokens, n, chw = [], math.prod(input_shape), None
        if hidden and isinstance(hidden[0], BinaryConv2d):
            if len(input_shape) != 2:
                raise ValueError(f"a first conv layer needs a 2-D input shape, got {tuple(input_shape)}")
            chw = (1, *input_shape)
        for i, layer in enumerate(hidden):
            want = input_encoding if i == 0 else "spikes"
            if getattr(layer, "input_kind", None) != want:
                raise ValueError(f"hidden layer {i} ({type(layer).__name__}) takes input_kind="
                                 f"{getattr(layer, 'input_kind', None)!r}; here its input is {want}")
            if isinstance(layer, BinaryConv2d):
                if chw is None:
                    raise ValueError(f"hidden layer {i} (BinaryConv2d): convolutions must come first")
                if layer.c_in != chw[0] or (layer.in_hw is not None and tuple(layer.in_hw) != chw[1:]):
                    raise ValueError(f"hidden layer {i} (BinaryConv2d) takes {layer.c_in} x {layer.in_hw} maps, "
                                     f"it gets {chw[0]} x {chw[1:]}")
                if layer.in_hw is None:
                    layer.in_hw = chw[1:]  # geometry only: what export writes into the file
                tokens.append(f"c{layer.c_out}k{layer.kernel_size}p{layer.pool}" + _bits_token(layer.bits))
                chw = (layer.c_out, chw[1] // layer.pool, chw[2] // layer.pool)
                n = math.prod(chw)
            elif isinstance(layer, BinaryDense):
                if layer.n_in != n:
                    raise ValueError(f"hidden layer {i} (BinaryDense) takes {layer.n_in} inputs, it gets {n}")
                tokens.append(str(layer.n_out) + _bits_token(layer.bits))
                chw, n = None, layer.n_out
            else:
                raise ValueError(f"hidden layer {i} ({type(layer).__name__}) is not a BinaryConv2d or BinaryDense")
        if not isinstance(output, BinaryLinear) or output.scale_kind != "scalar":
            raise ValueError("the output layer must be a BinaryLinear(..., scale='scalar')")
        if output.n_in != n:
            raise ValueError(f"the output BinaryLinear takes {output.n_in} inputs, it gets {n}")
        surrogate = hidden[0].act.surrogate if hidden else "box"
        arch = normalise_arch({"spec": "-".join([str(math.prod(input_shape)), *tokens,
                                                 str(output.n_out) + _bits_token(output.bits)]),
                               "input_shape": list(input_shape), "input_encoding": input_encoding,
                               "input_threshold": int(input_threshold), "surrogate": surrogate})
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.arch = arch
        self.timesteps, self.input_coding, self.input_seed = 1, CODINGS_OF[input_encoding][0], None
        self.input_shape = tuple(arch["input_shape"])
        self.input_encoding = input_encoding
        self.input_threshold = int(input_threshold)
        self.input_crop = None
        self._attach(list(hidden), output)
        return self

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of the images :meth:`forward` takes whole: the crop's source size, else input_shape."""
        return tuple(self.input_crop[:2]) if self.input_crop else self.input_shape

    @property
    def is_dense(self) -> bool:
        return all(isinstance(l, BinaryDense) for l in self.hidden)

    @property
    def has_exact_path(self) -> bool:
        """Every hidden layer has the integer path (dense and conv layers do)."""
        return all(isinstance(l, (BinaryDense, BinaryConv2d)) for l in self.hidden)

    @property
    def one_pass(self) -> bool:
        """Whether the float path is a quantised ANN of one pass (``signed_if`` neurons, trained as
        Fast-SNN's b-bit activations), not a run over the steps."""
        return any(getattr(layer.act, "one_pass", False) for layer in self.hidden)

    @property
    def static_input(self) -> bool:
        """Whether every time step takes the same first-layer input (direct, threshold coding)."""
        return self.input_coding in ("direct", "threshold")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixels -> first-layer input: 0/1 spikes or 0..255 values (:attr:`dtype`); one step's
        input (B rows) when every step takes the same, else T steps', time-major (T*B rows):
        ``rate`` spikes [pixel > r] (r from :func:`bitsnn.hwmodel.rate_randoms`), or ``given``
        spikes, x shaped (B, T, *input_shape)."""
        if self.input_coding == "given":
            T, B = self.timesteps, x.shape[0]
            if x.dim() < 2 or x.shape[1] != T or math.prod(x.shape[2:]) != self.n_inputs:
                raise ValueError(f"given spikes have shape {list(x.shape[1:])} each, the model takes "
                                 f"{'x'.join(map(str, (T, *self.input_shape)))} (steps x input)")
            x = x.to(self.dtype).transpose(0, 1).reshape(T * B, *self._layer_input_shape())
            return x
        if self.input_coding == "rate":
            px = self._encode_pixels(x, spikes=False)
            r = torch.as_tensor(rate_randoms(self.input_seed, self.timesteps, self.n_inputs), dtype=self.dtype,
                                device=px.device)
            px = (px.flatten(1)[None] > r[:, None]).to(self.dtype)  # (T, B, n)
            return px.reshape(-1, *self._layer_input_shape())
        return self._encode_pixels(x)

    @property
    def dtype(self) -> torch.dtype:
        """The float path's arithmetic: float32, or float64 after ``.double()``."""
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    def _layer_input_shape(self) -> tuple[int, ...]:
        if not self._conv_input:
            return (self.n_inputs,)
        return tuple(self.input_shape) if len(self.input_shape) == 3 else (1, *self.input_shape)

    def _encode_pixels(self, x: torch.Tensor, spikes: bool = True) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if self.input_crop and x.shape[1] != self.n_inputs:
            ih, iw, top, left = self.input_crop
            h, w = self.input_shape
            if x.shape[1] != ih * iw:
                raise ValueError(f"images have {x.shape[1]} values each, the model takes {ih}x{iw} images")
            x = x.view(-1, ih, iw)[:, top : top + h, left : left + w].reshape(x.shape[0], h * w)
        if self.input_encoding == "spikes" and spikes:
            x = (x >= self.input_threshold).to(self.dtype)
        else:
            x = x.to(self.dtype)
        if self._conv_input:
            x = x.view(x.shape[0], 1, *self.input_shape)
        return x

    def run(self, x: torch.Tensor, path: str | None = None) -> Trace:
        """A forward pass over the model's T steps. The trace's spikes are (B, n) at one step,
        (B, T, n) over several; logits and scores are summed over the steps (the logits' mean)."""
        if path is None:
            path = "exact" if (not self.training and self.has_exact_path) else "float"
        T = self.timesteps
        h = self.encode(x)
        B = h.shape[0] // (1 if self.static_input else T)
        static = self.static_input

        def per_step(t: torch.Tensor) -> torch.Tensor:
            t = t.flatten(1)
            return t if T == 1 else t.reshape(T, B, -1).transpose(0, 1)

        if path == "float" and self.one_pass:  # a quantised ANN (signed_if): one pass, its levels = the steps
            spikes = []
            for layer in self.hidden:
                h = layer.forward_float(h, 1, True)
                spikes.append(h.flatten(1))
            return Trace(logits=self.output(h.flatten(1)), spikes=spikes)
        if path == "float":
            spikes = []
            for layer in self.hidden:
                h = layer.forward_float(h, T, static)
                static = False
                spikes.append(per_step(h))
            if static and T > 1:  # no hidden layer: the output layer sees the same input each step
                h = h.repeat(T, *([1] * (h.dim() - 1)))
            logits = self.output(h.flatten(1))
            return Trace(logits=logits if T == 1 else logits.reshape(T, B, -1).mean(0), spikes=spikes)
        if path != "exact":
            raise ValueError(f"unknown path {path!r} (expected 'float' or 'exact')")
        if not self.has_exact_path:
            raise ValueError("the exact integer path supports BinaryDense and BinaryConv2d layers only")
        spikes, preacts = [], []
        for layer in self.hidden:
            a, h = layer.forward_exact(h, T, static)
            static = False
            preacts.append(a)
            spikes.append(per_step(h))  # a convolution's maps, channel by channel, row by row
        if static and T > 1:
            h = h.repeat(T, *([1] * (h.dim() - 1)))
        scores = self.output.preact_exact(h)
        if T > 1:
            scores = scores.reshape(T, B, -1).sum(0)
        preacts.append(scores)
        logits = scores * self.output.scale.detach().to(torch.float64)
        return Trace(logits=logits, spikes=spikes, scores=scores, preacts=preacts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x).logits


def _bits_token(bits: int) -> str:
    return f"w{bits}" if bits != 1 else ""


def normalise_arch(arch: dict) -> dict:
    """Fill defaults and check an architecture dict; returns a new JSON-able dict."""
    a = dict(arch)
    a.setdefault("input_shape", [28, 28])
    a.setdefault("input_encoding", "spikes")
    a.setdefault("input_threshold", 128)
    a.setdefault("surrogate", "box")
    a["input_shape"] = [int(d) for d in a["input_shape"]]
    if a["input_encoding"] not in ("spikes", "pixels"):
        raise ValueError(f"input encoding must be 'spikes' or 'pixels', got {a['input_encoding']!r}")
    if a["surrogate"] not in SURROGATES:
        raise ValueError(f"unknown surrogate {a['surrogate']!r} (expected one of {SURROGATES})")
    if not 1 <= int(a["input_threshold"]) <= 255:
        raise ValueError(f"input threshold {a['input_threshold']} outside 1..255")
    crop = a.get("input_crop")
    if crop:
        crop = [int(d) for d in crop]
        why = crop_problem(a["input_shape"], crop)
        if why:
            raise ValueError(f"input_crop: {why}")
        a["input_crop"] = crop
    else:
        a.pop("input_crop", None)
    parse_spec(a["spec"])
    normalise_time(a)
    return a


def normalise_time(a: dict) -> None:
    """Check the time fields (``timesteps``, ``input_coding``, ``input_seed``, ``neuron``, ``leak``,
    ``reset``); a field at its one-step default is left out, so a one-step arch stays as it was."""
    defaults = {"timesteps": 1, "input_coding": CODINGS_OF[a["input_encoding"]][0], "input_seed": None,
                "neuron": "step", "leak": 0, "reset": "subtract"}
    for k, v in defaults.items():
        if a.get(k, v) == v:
            a.pop(k, None)
    T = a.get("timesteps", 1)
    if type(T) is not int or not 1 <= T <= MAX_STEPS:
        raise ValueError(f"time steps {T!r} outside 1..{MAX_STEPS}")
    coding = a.get("input_coding", defaults["input_coding"])
    if coding not in CODINGS_OF[a["input_encoding"]]:
        raise ValueError(f"input coding {coding!r}: {a['input_encoding']} input takes "
                         f"{', '.join(CODINGS_OF[a['input_encoding']])}")
    seed = a.get("input_seed")
    if coding == "rate" and not (type(seed) is int and 1 <= seed < 1 << 32):
        raise ValueError(f"rate coding needs a seed (--rate-seed) in 1..2^32-1, not {seed!r}")
    if coding != "rate" and seed is not None:
        raise ValueError(f"a seed (--rate-seed) belongs to rate coding only, not {coding}")
    name = a.get("neuron", "step")
    nm = kinds.neuron(name)  # KeyError names the known ones
    if (why := nm.leak_problem(a.get("leak", 0))):
        raise ValueError(why)
    if a.get("reset", "subtract") not in kinds.RESETS:
        raise ValueError(f"reset {a['reset']!r}: one of {', '.join(kinds.RESETS)}")
    if len(a["input_shape"]) == 3 and coding != "given":
        raise ValueError("a 3-D input shape (channels, height, width) takes given spikes only")


def build_model(arch: dict) -> BitSNN:
    return BitSNN(arch)
