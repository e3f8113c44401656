"""BitSNN layers: binary weights, BatchNorm, hardtanh, learnable bias, {0,1} spikes.

A hidden neuron j (Hu, Zheng, Pan, "BitSNNs", IEEE TCDS 2024; one time step)::

    w_hat_j = (w_j - mean(w_j)) / std(w_j)                weights standardised per neuron
    w_b_j   = sign(w_hat_j) in {-1,+1}, sign(0) = +1      straight-through gradient
    a_j     = sum_i x_i * w_b_ji                          integer pre-activation
    y_j     = BN(alpha_j * a_j)                           alpha_j learnable, > 0 at init
    v_j     = hardtanh(y_j) + b_j                         b_j learnable
    s_j     = [v_j > 0]                                   surrogate gradient (surrogate.py)

The integer eval contract (docs/hardware-model.md, "Arithmetic"): in eval mode the default ``exact`` path
computes a_j exactly (float64 matmul of 0/1 or 0..255 inputs with +-1 weights) and spikes by
``a_j >= theta_j`` (compare +1) or ``a_j <= theta_j`` (compare -1), theta/compare from
:func:`bitsnn.model.fold.fold_thresholds` -- the very function export writes into the hardware
model, so torch and the golden model agree bit for bit. The ``float`` path (train-mode arithmetic
with BN running statistics) is kept for comparison and speed.

The output layer is a :class:`BinaryLinear` with one learnable positive scalar scale s: logits
``s * a``, so argmax of the logits is argmax of the integer scores a.

Multi-bit weights (``bits`` b >= 2, any layer): w_q = clamp(round(w_hat / step), -Q, Q) with
Q = 2^(b-1) - 1 and step = 2.5 / Q (1 for Q = 1), straight-through gradient; a_j = sum_i x_i * w_q_ji
is then an integer sum of b-bit integer weights, exported as ``int_dense`` / ``int_conv2d`` layers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bitsnn import kinds
from bitsnn.hwmodel import MAX_MEMBRANE_PARAM, MAX_SHIFT, WEIGHT_BITS, weight_limit

from .fold import fold_membrane, fold_thresholds
from .surrogate import RHO, SURROGATES, spike

__all__ = [
    "SignSTE",
    "binarize",
    "quantize",
    "weight_limit",
    "BinaryLinear",
    "SpikeActivation",
    "IFActivation",
    "SignedIFActivation",
    "make_activation",
    "InputSpikes",
    "BinaryDense",
    "BinaryConv2d",
    "GlobalSumPool",
]

_STD_EPS = 1e-8
#: BatchNorm shift a pooling conv layer starts with (see BinaryConv2d)
POOL_BN_SHIFT = -1.0


class SignSTE(torch.autograd.Function):
    """``sign`` with ``sign(0) = +1``; identity straight-through gradient.

    The input is the standardised weight (unit std per neuron), so no clipping is needed to keep
    it bounded; clipping at |w| <= 1 froze a third of the weights and cost ~1 point on MNIST.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return grad_out


def _check_bits(bits) -> int:
    if bits != 1 and bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be 1 (+-1) or {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}, got {bits!r}")
    return int(bits)


def standardise(w: torch.Tensor) -> torch.Tensor:
    """Standardise each output neuron's (row's / filter's) weights to zero mean, unit std."""
    flat = w.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True)
    return ((flat - mean) / (std + _STD_EPS)).view_as(w)


def binarize(w: torch.Tensor) -> torch.Tensor:
    """Binary +-1 weights of the real weights ``w``: sign of the standardised weights (STE)."""
    return SignSTE.apply(standardise(w))


class RoundSTE(torch.autograd.Function):
    """``clamp(round(w / step), -q, q)``; identity straight-through gradient."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: int, step: float) -> torch.Tensor:
        return torch.clamp(torch.round(w / step), -q, q)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return grad_out, None, None


def quantize(w: torch.Tensor, bits: int = 1) -> torch.Tensor:
    """The integer weights torch uses for real weights ``w`` (STE-differentiable): +-1 (``bits`` 1,
    :func:`binarize`) or integers in [-Q, Q], Q = 2^(bits-1) - 1, of the standardised weights on a
    grid of 2.5 / Q (a standardised weight beyond +-2.5 saturates)."""
    if bits == 1:
        return binarize(w)
    q = weight_limit(bits)
    return RoundSTE.apply(standardise(w), q, 2.5 / q if q > 1 else 1.0)


def width_ratio(w: torch.Tensor, bits: int, new_bits: int) -> torch.Tensor:
    """Per output neuron (row or filter), the least-squares c with ``quantize(w, bits) ~ c *
    quantize(w, new_bits)``: the factor a neuron's scale takes when its weights change width, so
    that its pre-activations keep their size (1 for a row that quantises to all zeros)."""
    with torch.no_grad():
        r = quantize(w, bits).flatten(1).to(torch.float64)
        q = quantize(w, new_bits).flatten(1).to(torch.float64)
        qq = (q * q).sum(1)
        c = torch.where(qq > 0, (r * q).sum(1) / qq.clamp_min(1e-300), torch.ones_like(qq))
        return c.clamp_min(1e-6)


def _set_width(module, bits: int) -> None:
    """``module`` (holding ``weight``, ``bits`` and a per-neuron ``alpha`` or one ``log_scale``)
    quantised to ``bits`` from now on, its scale rescaled by :func:`width_ratio` (the one scale by
    the ratios' geometric mean) so its pre-activations keep their size."""
    bits = _check_bits(bits)
    c = width_ratio(module.weight, module.bits, bits)
    with torch.no_grad():
        if hasattr(module, "alpha"):
            module.alpha.mul_(c.to(module.alpha.dtype))
        else:
            module.log_scale.add_(float(torch.log(c).mean()))
    module.bits = bits


class BinaryLinear(nn.Module):
    """Fully connected layer with +-1 weights, output ``scale * (x @ w_b.T)``.

    ``scale="neuron"``: one learnable alpha per output neuron (hidden layers, followed by BN).
    ``scale="scalar"``: one learnable positive scalar s = exp(log_s) (the output layer: integer
    class scores a, logits s*a). ``input_scale`` multiplies the input first (1/255 for 8-bit
    pixels) and is folded into the threshold at export.
    """

    def __init__(self, n_in: int, n_out: int, *, scale: str = "neuron", input_scale: float = 1.0, bits: int = 1):
        super().__init__()
        if scale not in ("neuron", "scalar"):
            raise ValueError(f"scale must be 'neuron' or 'scalar', got {scale!r}")
        self.bits = _check_bits(bits)
        self.n_in, self.n_out, self.scale_kind = int(n_in), int(n_out), scale
        self.input_scale = float(input_scale)
        self.weight = nn.Parameter(torch.empty(self.n_out, self.n_in))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if scale == "neuron":
            # alpha starts near 1/sqrt(fan-in * E[x^2]) so BN sees a well-scaled input either way.
            self.alpha = nn.Parameter(torch.full((self.n_out,), 1.0 / math.sqrt(self.n_in)))
        else:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / math.sqrt(self.n_in))))

    def extra_repr(self) -> str:
        return (f"{self.n_in}, {self.n_out}, scale={self.scale_kind}, input_scale={self.input_scale:g}"
                + (f", bits={self.bits}" if self.bits != 1 else ""))

    @property
    def scale(self) -> torch.Tensor:
        return self.alpha if self.scale_kind == "neuron" else self.log_scale.exp()

    @property
    def weight_max(self) -> int:
        """The largest |w| of the integer weights: 1, or 2^(bits-1) - 1."""
        return weight_limit(self.bits)

    @property
    def n_weights(self) -> int:
        return self.weight.numel()

    def set_bits(self, bits: int) -> None:
        """Quantise to ``bits`` from now on, the scale rescaled so the pre-activations keep their
        size (:func:`_set_width`)."""
        _set_width(self, bits)

    def binary_weight(self) -> torch.Tensor:
        """(n_out, n_in) integer weights, +-1 for ``bits`` 1 (STE-differentiable)."""
        return quantize(self.weight, self.bits)

    def weight_bits(self) -> np.ndarray:
        """(n_out, n_in) uint8 bits, 1 <-> +1: exactly the signs torch uses (``bits`` 1)."""
        with torch.no_grad():
            return (standardise(self.weight) >= 0).to(torch.uint8).cpu().numpy()

    def weight_ints(self) -> np.ndarray:
        """(n_out, n_in) int8: exactly the integer weights torch uses."""
        with torch.no_grad():
            return self.binary_weight().to(torch.int8).cpu().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return F.linear(x, self.binary_weight()) * self.scale

    def preact_exact(self, x_int: torch.Tensor) -> torch.Tensor:
        """Integer pre-activation a = x @ w_q.T, exact in float64 (x: 0/1 or 0..255 values)."""
        with torch.no_grad():
            w = self.binary_weight().to(torch.float64)
        return x_int.flatten(1).to(torch.float64) @ w.T


class GlobalSumPool(nn.Module):
    """ALBSNN's global pooling head (the output layer, kind ``global_pool``): class score c =
    class c's channels' spikes summed over their H x W maps (one channel a class, or ``channels /
    classes`` consecutive ones; an average pool's 1/(H W) is a positive scale that the argmax
    ignores), logits ``s * scores`` with one learnable positive scale s, as :class:`BinaryLinear`'s
    output scale. No weights."""

    #: weight width: none (the precision search skips it)
    bits = 0

    def __init__(self, channels: int, in_hw: tuple[int, int], classes: int | None = None):
        super().__init__()
        self.channels, self.in_hw = int(channels), tuple(int(d) for d in in_hw)
        self.n_in, self.n_out = self.channels * self.in_hw[0] * self.in_hw[1], int(classes or channels)
        if self.channels % self.n_out:
            raise ValueError(f"{self.channels} channels do not split into {self.n_out} classes")
        self.scale_kind = "scalar"
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / math.sqrt(self.in_hw[0] * self.in_hw[1]))))

    def extra_repr(self) -> str:
        return f"{self.channels} channels of {self.in_hw[0]}x{self.in_hw[1]} into {self.n_out} classes"

    @property
    def n_weights(self) -> int:
        return 0

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        """Each class's channels (consecutive in the flat maps) summed over their maps."""
        return x.reshape(x.shape[0], self.n_out, -1).sum(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sums(x) * self.scale

    def preact_exact(self, x_int: torch.Tensor) -> torch.Tensor:
        """The integer scores: each class's channels' spikes summed, exact in float64."""
        return self.sums(x_int.to(torch.float64))


class InputSpikes(nn.Module):
    """Raw 8-bit pixels -> {0,1} input spikes ``[x >= threshold]`` (the hardware's input encoding).

    Put it first in a module for :func:`bitsnn.export` to write a spike-input model; without it
    the first layer takes the pixels themselves (``input_kind="pixels"``).
    """

    def __init__(self, threshold: int = 128):
        super().__init__()
        if not 1 <= int(threshold) <= 255 or int(threshold) != threshold:
            raise ValueError(f"input threshold must be a whole number in 1..255, got {threshold!r}")
        self.threshold = int(threshold)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= self.threshold).to(torch.float32)


class SpikeActivation(nn.Module):
    """``s = [hardtanh(y) + b > 0]`` with a per-neuron learnable bias b and a chosen surrogate.

    For the ``box`` surrogate the window width delta (one per layer) is learnable.
    """

    def __init__(self, n: int, surrogate: str = "box", delta: float = 1.0, rho: float = RHO):
        super().__init__()
        if surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r} (expected one of {SURROGATES})")
        self.surrogate, self.rho = surrogate, rho
        self.bias = nn.Parameter(torch.zeros(n))
        self.delta = nn.Parameter(torch.tensor(float(delta)))

    #: the neuron model (bitsnn.kinds.NEURONS) this module is the torch part of
    neuron = "step"

    @classmethod
    def build(cls, n: int, surrogate: str, *, leak: int = 0, reset: str = "subtract") -> "SpikeActivation":
        """The ``step`` model keeps no membrane: ``leak`` and ``reset`` do not apply."""
        return cls(n, surrogate)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}"

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        b = self.bias.view(1, -1, *([1] * (y.dim() - 2)))
        return F.hardtanh(y) + b

    def forward(self, y: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Spikes of a batch (every step's, time-major, alike: the neuron keeps no state)."""
        return self.fire(self.potential(y))

    def pooled(self, y: torch.Tensor, pool, steps: int = 1) -> torch.Tensor:
        """Spikes through an OR pool: the potentials' maximum before the spike (the same spikes as
        OR-pooling them, [max v > 0] = OR [v > 0], and the surrogate gradient reaches the position
        that decides each window)."""
        return self.fire(pool(self.potential(y)))

    def fire(self, v: torch.Tensor) -> torch.Tensor:
        """Spikes [v > 0] of potentials ``v``, with this activation's surrogate gradient."""
        delta = self.delta.clamp(min=1e-2) if self.surrogate == "box" else None
        return spike(v, self.surrogate, delta)

    def fold(self, alpha, bn, input_scale: float, a_max: int) -> dict:
        """The layer's neuron fields in the hardware model: integer ``thresholds`` and ``compare``
        (:func:`bitsnn.model.fold.fold_thresholds`)."""
        t = lambda p: p.detach().cpu().to(torch.float64).numpy()  # noqa: E731
        theta, compare = fold_thresholds(t(alpha), t(bn.weight), t(bn.bias), t(bn.running_mean), t(bn.running_var),
                                         bn.eps, t(self.bias), a_max, input_scale)
        return {"thresholds": theta, "compare": compare}

    @staticmethod
    def exact(a: torch.Tensor, fields: dict, steps: int = 1) -> torch.Tensor:
        """Integer spikes of exact sums ``a`` (float64, neurons on axis 1): [a >= theta] (compare
        +1) or [a <= theta] (compare -1)."""
        shape = (1, -1) + (1,) * (a.dim() - 2)
        th = torch.as_tensor(fields["thresholds"], dtype=torch.float64, device=a.device).view(shape)
        up = torch.as_tensor(fields["compare"] > 0, device=a.device).view(shape)
        return torch.where(up, a >= th, a <= th)


def _membrane_terms(a: torch.Tensor, fields: dict, steps: int):
    """A stateful layer's integer terms for its exact path, as float64 tensors that broadcast over
    ``a`` (neurons on axis 1): c * 2^shift, theta, b, and ``a`` split into its steps."""
    shape = (1, -1) + (1,) * (a.dim() - 2)
    f64 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64, device=a.device).view(shape)  # noqa: E731
    c, th, b = f64(fields["compare"]) * 2.0 ** fields["shift"], f64(fields["thresholds"]), f64(fields["bias"])
    return c, th, b, a.reshape(steps, -1, *a.shape[1:])


class IFActivation(nn.Module):
    """``if`` / ``lif`` neurons over T steps (the neuron models' torch part, :mod:`bitsnn.kinds`).

    Float path (training, back-propagation through time): a membrane V per neuron, 0 at the
    start; each step V <- V (1 - leak/65536) (``lif``), V <- V + y + b (y the batch-normed sum, b
    a learnable bias), a spike when V >= 1 (the surrogate gradient of V - 1), then V <- V - 1
    (reset ``subtract``) or 0 (``zero``); the reset is not differentiated. Inputs are time-major:
    (T*B, n, ...), step t the rows t*B..(t+1)*B-1.

    Integer path: the golden model's rule (:class:`bitsnn.sim.golden.IFNeurons`) with the
    parameters :func:`bitsnn.model.fold.fold_membrane` folds, in float64 (exact below 2^53).
    """

    def __init__(self, n: int, surrogate: str = "box", *, leak: int = 0, reset: str = "subtract",
                 delta: float = 1.0, rho: float = RHO):
        super().__init__()
        if surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r} (expected one of {SURROGATES})")
        if reset not in kinds.RESETS:
            raise ValueError(f"unknown reset {reset!r} (expected one of {kinds.RESETS})")
        self.neuron = "lif" if leak else "if"
        if (why := kinds.neuron(self.neuron).leak_problem(leak)):
            raise ValueError(why)
        self.surrogate, self.rho, self.leak, self.reset = surrogate, rho, int(leak), reset
        self.bias = nn.Parameter(torch.zeros(n))
        self.delta = nn.Parameter(torch.tensor(float(delta)))

    @classmethod
    def build(cls, n: int, surrogate: str, *, leak: int = 0, reset: str = "subtract") -> "IFActivation":
        return cls(n, surrogate, leak=leak, reset=reset)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate}, leak={self.leak}, reset={self.reset}"

    def forward(self, y: torch.Tensor, steps: int = 1) -> torch.Tensor:
        yt = y.reshape(steps, -1, *y.shape[1:])
        b = self.bias.view(1, -1, *([1] * (y.dim() - 2)))
        delta = self.delta.clamp(min=1e-2) if self.surrogate == "box" else None
        decay = 1.0 - self.leak / 65536.0
        v = torch.zeros_like(yt[0])
        out, late = [], 0.0
        for t in range(steps):
            v = v * decay + yt[t] + b - late
            s = spike(v - 1.0, self.surrogate, delta)
            out.append(s)
            r = s.detach()
            if self.reset == "subtract":
                v = v - r
            elif self.reset == "zero":
                v = v * (1.0 - r)
            else:  # subtract-next: taken off at the next step, after the leak
                late = r
        return torch.stack(out).reshape(y.shape)

    def pooled(self, y: torch.Tensor, pool, steps: int = 1) -> torch.Tensor:
        """Spikes through an OR pool: each step's spikes, then their maximum per window."""
        return pool(self.forward(y, steps))

    def fold(self, alpha, bn, input_scale: float, a_max: int) -> dict:
        """The layer's neuron fields in the hardware model (:func:`bitsnn.model.fold.fold_membrane`)."""
        t = lambda p: p.detach().cpu().to(torch.float64).numpy()  # noqa: E731
        theta, compare, bias, shift = fold_membrane(t(alpha), t(bn.weight), t(bn.bias), t(bn.running_mean),
                                                    t(bn.running_var), bn.eps, t(self.bias), input_scale,
                                                    MAX_MEMBRANE_PARAM, MAX_SHIFT)
        return {"thresholds": theta, "compare": compare, "bias": bias, "neuron": self.neuron, "reset": self.reset,
                "leak": self.leak, "shift": shift}

    @staticmethod
    def exact(a: torch.Tensor, fields: dict, steps: int = 1) -> torch.Tensor:
        """Integer spikes of exact sums ``a`` (float64, time-major), the golden model's rule."""
        c, th, b, at = _membrane_terms(a, fields, steps)
        v = torch.zeros_like(at[0])
        out, prev = [], None
        for t in range(steps):
            if fields["leak"]:  # (V * m) >> 16, floored, as V = 2^16 h + l (exact in float64)
                h = torch.floor(v / 65536.0)
                v = v - (h * fields["leak"] + torch.floor((v - h * 65536.0) * fields["leak"] / 65536.0))
            v = v + c * at[t] + b
            if fields["reset"] == "subtract-next" and prev is not None:
                v = v - th * prev
            s = v >= th
            if fields["reset"] == "zero":
                v = torch.where(s, torch.zeros_like(v), v)
            elif fields["reset"] == "subtract":
                v = v - th * s
            prev = s
            out.append(s)
        return torch.stack(out).reshape(a.shape)


class RoundHalfUpSTE(torch.autograd.Function):
    """floor(x + 1/2) (what the membrane's theta/2 start gives), identity straight-through gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return grad_out


class SignedIFActivation(nn.Module):
    """``signed_if`` neurons (Fast-SNN; the neuron model's torch part, :mod:`bitsnn.kinds`).

    Float path: the quantised ANN the network trains as, in one pass (no steps). A b-bit clipped
    ReLU with a learned clip alpha: u = floor(clip((y + b) / alpha, 0, 1) * T + 1/2) / T, T =
    2^b - 1 levels, the rounding straight-through; y the batch-normed sum, b a learnable bias. The
    next layer takes u, which is the spike count / T of the converted neuron.

    Integer path: the converted network over T steps, the golden model's rule
    (:class:`bitsnn.sim.golden.SignedIFNeurons`) with the parameters
    :func:`bitsnn.model.fold.fold_membrane` folds for a threshold of alpha (even, so V starts at
    theta/2 exactly): over T steps of a constant input y a neuron then spikes u*T times, which is
    why the float path rounds half up."""

    neuron = "signed_if"
    #: the network trains it as a quantised ANN: one pass, no steps (:meth:`BitSNN.run`)
    one_pass = True

    def __init__(self, n: int, levels: int):
        super().__init__()
        if not 1 <= levels <= 255:
            raise ValueError(f"signed_if neurons take 1..255 levels (2^b - 1 steps), not {levels}")
        self.levels = int(levels)
        self.bias = nn.Parameter(torch.zeros(n))
        self.alpha = nn.Parameter(torch.tensor(1.0))

    @classmethod
    def build(cls, n: int, surrogate: str, *, leak: int = 0, reset: str = "subtract", steps: int = 1):
        """No surrogate (the rounding is straight-through) and no leak; the levels are the steps T."""
        if reset != "subtract":
            raise ValueError(f"signed_if neurons have their own reset rule, not reset {reset!r}")
        return cls(n, steps)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def clip(self) -> torch.Tensor:
        return self.alpha.abs().clamp(min=1e-3)

    def forward(self, y: torch.Tensor, steps: int = 1) -> torch.Tensor:
        b = self.bias.view(1, -1, *([1] * (y.dim() - 2)))
        r = torch.clamp((y + b) / self.clip(), 0.0, 1.0)
        return RoundHalfUpSTE.apply(r * self.levels) / self.levels

    def fold(self, alpha, bn, input_scale: float, a_max: int, window: int = 1) -> dict:
        """The layer's neuron fields: the membrane folded for a threshold of the clip (theta even);
        ``window`` positions pooled (their summed y: BatchNorm's shift ``window`` times, the bias once)."""
        t = lambda p: p.detach().cpu().to(torch.float64).numpy()  # noqa: E731
        clip = float(self.clip().detach().cpu())
        theta, compare, bias, shift = fold_membrane(t(alpha), t(bn.weight) / clip, t(bn.bias) * window / clip,
                                                    t(bn.running_mean) * window, t(bn.running_var), bn.eps,
                                                    t(self.bias) / clip, input_scale, MAX_MEMBRANE_PARAM,
                                                    MAX_SHIFT, even=True)
        return {"thresholds": theta, "compare": compare, "bias": bias, "neuron": self.neuron, "reset": "subtract",
                "leak": 0, "shift": shift}

    @staticmethod
    def exact(a: torch.Tensor, fields: dict, steps: int = 1) -> torch.Tensor:
        """Integer spikes -1/0/+1 of exact sums ``a`` (float64, time-major), the golden model's rule."""
        c, th, b, at = _membrane_terms(a, fields, steps)
        v = (th / 2).expand_as(at[0]).clone()
        count = torch.zeros_like(v)
        out = []
        for t in range(steps):
            v = v + c * at[t] + b
            up = v >= th
            down = ~up & (v < 0) & (count > 0)
            s = up.to(torch.float64) - down.to(torch.float64)
            v = v - s * th
            count = count + s
            out.append(s)
        return torch.stack(out).reshape(a.shape)


def make_activation(n: int, surrogate: str, neuron: str = "step", *, leak: int = 0, reset: str = "subtract",
                    steps: int = 1):
    """The torch module of neuron model ``neuron`` (its ``torch`` part, :mod:`bitsnn.kinds`);
    ``steps``: the model's T (a quantised ANN's levels for ``signed_if``)."""
    nm = kinds.neuron(neuron)
    if (why := nm.leak_problem(leak)):
        raise ValueError(why)
    build = nm.part("torch").build
    return build(n, surrogate, leak=leak, reset=reset, steps=steps) if nm.signed else build(n, surrogate, leak=leak, reset=reset)


class BinaryDense(nn.Module):
    """Hidden layer: BinaryLinear (per-neuron alpha) -> BatchNorm1d -> hardtanh + bias -> spike.

    ``input_kind``: ``"spikes"`` (0/1 inputs) or ``"pixels"`` (8-bit pixels, fed as x/255 while
    training; the 1/255 is folded into the threshold). See the module docstring for equations.
    """

    def __init__(self, n_in: int, n_out: int, *, surrogate: str = "box", input_kind: str = "spikes", bits: int = 1,
                 neuron: str = "step", leak: int = 0, reset: str = "subtract", steps: int = 1):
        super().__init__()
        if input_kind not in ("spikes", "pixels"):
            raise ValueError(f"input_kind must be 'spikes' or 'pixels', got {input_kind!r}")
        self.input_kind = input_kind
        self.fc = BinaryLinear(n_in, n_out, input_scale=1.0 / 255 if input_kind == "pixels" else 1.0, bits=bits)
        self.bn = nn.BatchNorm1d(n_out)
        self.act = make_activation(n_out, surrogate, neuron, leak=leak, reset=reset, steps=steps)

    @property
    def n_in(self) -> int:
        return self.fc.n_in

    @property
    def n_out(self) -> int:
        return self.fc.n_out

    @property
    def bits(self) -> int:
        return self.fc.bits

    @property
    def n_weights(self) -> int:
        return self.fc.weight.numel()

    def set_bits(self, bits: int) -> None:
        """Quantise the weights to ``bits`` from now on (:meth:`BinaryLinear.set_bits`)."""
        self.fc.set_bits(bits)

    @property
    def a_max(self) -> int:
        """R: the largest |a| any input can produce."""
        return (255 if self.input_kind == "pixels" else 1) * self.n_in * self.fc.weight_max

    def neuron_fields(self) -> dict:
        """The layer's neuron fields in the hardware model (thresholds, compare directions; a
        stateful neuron's bias, reset and leak), folded from its current parameters (float64)."""
        return self.act.fold(self.fc.alpha, self.bn, self.fc.input_scale, self.a_max)

    def fold(self) -> tuple[np.ndarray, np.ndarray]:
        """(theta int64, compare int8) of this layer, from its current parameters (float64)."""
        f = self.neuron_fields()
        return f["thresholds"], f["compare"]

    def forward_float(self, x: torch.Tensor, steps: int = 1, static: bool = False) -> torch.Tensor:
        """Float path (train-mode arithmetic; BN uses batch stats in train, running stats in eval).

        ``x``: 0/1 spikes or raw 0..255 pixel values (scaled by 1/255 inside), time-major over
        ``steps`` (T*B rows), or one step's B rows that every step takes (``static``)."""
        y = self.bn(self.fc(x))
        if static and steps > 1:
            y = y.repeat(steps, 1)
        return self.act(y, steps)

    forward = forward_float

    def forward_exact(self, x_int: torch.Tensor, steps: int = 1, static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer path: (a, spikes). a exact in float64 (time-major; ``static``: one step's,
        which every step takes); the spikes by the neuron model's integer rule."""
        a = self.fc.preact_exact(x_int)
        if static and steps > 1:
            a = a.repeat(steps, 1)
        return a, self.act.exact(a, self.neuron_fields(), steps).to(torch.float32)


class BinaryConv2d(nn.Module):
    """Convolutional hidden layer: +-1 kernels (standardised per filter) scaled by a per-channel
    alpha -> BatchNorm2d -> hardtanh + bias -> spike -> OR max-pool.

    Stride 1, zero padding k // 2 (the maps keep their size). Max-pooling {0,1} spikes is a
    logical OR over each window, so it stays binary. The integer eval contract is the dense
    layer's, per output channel: a = the integer convolution of the 0/1 (or 0..255) input maps
    with the +-1 kernels, spike = [a >= theta_c] (compare +1) or [a <= theta_c] (compare -1), then
    the OR pool; theta/compare from :func:`bitsnn.model.fold.fold_thresholds`, as export writes
    them into the hardware model's ``binary_conv2d`` layer.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, *, padding: int | None = None, pool: int = 2,
                 surrogate: str = "box", input_kind: str = "spikes", in_hw: tuple[int, int] | None = None,
                 bits: int = 1, neuron: str = "step", leak: int = 0, reset: str = "subtract", steps: int = 1):
        super().__init__()
        self.bits = _check_bits(bits)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        if padding is not None and padding != kernel_size // 2:
            raise ValueError(f"padding must be kernel_size // 2 = {kernel_size // 2} (the maps keep their size)")
        if input_kind not in ("spikes", "pixels"):
            raise ValueError(f"input_kind must be 'spikes' or 'pixels', got {input_kind!r}")
        self.c_in, self.c_out, self.kernel_size, self.pool = c_in, c_out, kernel_size, pool
        self.padding = kernel_size // 2
        self.input_kind = input_kind
        self.input_scale = 1.0 / 255 if input_kind == "pixels" else 1.0
        #: (H, W) of the input maps (set by the network; needed to export the geometry)
        self.in_hw = tuple(in_hw) if in_hw else None
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.alpha = nn.Parameter(torch.full((c_out,), 1.0 / math.sqrt(c_in * kernel_size * kernel_size)))
        self.bn = nn.BatchNorm2d(c_out)
        if pool > 1 and not kinds.neuron(neuron).stateful:
            # An OR pool of pool*pool positions fires if any does: at BN's zero shift each fires
            # half the time and the pool almost always (94 % for 2 x 2), and the net trains slowly
            # out of that. Starting the shift at -1 (16 % of positions, about half the pools) gave
            # 97.0 % instead of 93.5 % after 3 epochs on 20,000 MNIST images (784-c16-c32-10).
            # (A membrane that integrates over the steps starts at BN's zero shift.)
            nn.init.constant_(self.bn.bias, POOL_BN_SHIFT)
        self.act = make_activation(c_out, surrogate, neuron, leak=leak, reset=reset, steps=steps)

    def extra_repr(self) -> str:
        return (f"{self.c_in}, {self.c_out}, kernel_size={self.kernel_size}, pool={self.pool}, input={self.input_kind}"
                + (f", bits={self.bits}" if self.bits != 1 else ""))

    @property
    def fan_in(self) -> int:
        return self.c_in * self.kernel_size * self.kernel_size

    @property
    def n_weights(self) -> int:
        return self.weight.numel()

    def set_bits(self, bits: int) -> None:
        """Quantise the kernels to ``bits`` from now on, each channel's alpha rescaled so its
        pre-activations keep their size (:func:`_set_width`)."""
        _set_width(self, bits)

    @property
    def weight_max(self) -> int:
        """The largest |w| of the integer kernels: 1, or 2^(bits-1) - 1."""
        return weight_limit(self.bits)

    @property
    def a_max(self) -> int:
        """R: the largest |a| any input can produce."""
        return (255 if self.input_kind == "pixels" else 1) * self.fan_in * self.weight_max

    def weight_bits(self) -> np.ndarray:
        """(C_out, C_in*k*k) uint8 bits in (input channel, ky, kx) order, 1 <-> +1: the signs torch uses."""
        with torch.no_grad():
            return (standardise(self.weight) >= 0).to(torch.uint8).flatten(1).cpu().numpy()

    def weight_ints(self) -> np.ndarray:
        """(C_out, C_in*k*k) int8 in (input channel, ky, kx) order: exactly the integer kernels torch uses."""
        with torch.no_grad():
            return quantize(self.weight, self.bits).to(torch.int8).flatten(1).cpu().numpy()

    def neuron_fields(self) -> dict:
        """The layer's neuron fields in the hardware model, per output channel, folded from its
        current parameters (float64): see :meth:`BinaryDense.neuron_fields`."""
        if self.pools_sums:
            return self.act.fold(self.alpha, self.bn, self.input_scale, self.a_max, window=self.pool * self.pool)
        return self.act.fold(self.alpha, self.bn, self.input_scale, self.a_max)

    def fold(self) -> tuple[np.ndarray, np.ndarray]:
        """(theta int64, compare int8) per output channel, from the current parameters (float64)."""
        f = self.neuron_fields()
        return f["thresholds"], f["compare"]

    def _pool(self, s: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(s, self.pool) if self.pool > 1 else s

    def _sum_pool(self, y: torch.Tensor) -> torch.Tensor:
        """Each pool window's sum: signed neurons take it (an OR of signed spikes means nothing)."""
        return F.avg_pool2d(y, self.pool) * (self.pool * self.pool) if self.pool > 1 else y

    @property
    def pools_sums(self) -> bool:
        """Whether the pool sums the layer's sums before its neurons (signed ones) instead of
        OR-ing their spikes (:attr:`bitsnn.kinds.NeuronModel.signed`)."""
        return kinds.neuron(self.act.neuron).signed

    def forward(self, x: torch.Tensor, steps: int = 1, static: bool = False) -> torch.Tensor:
        """Float path, time-major over ``steps`` (or one step's input every step takes: ``static``).
        The neuron model pools (:meth:`SpikeActivation.pooled`: the step neuron pools potentials),
        or, for signed neurons, takes each window's summed y."""
        if self.input_scale != 1.0:
            x = x * self.input_scale
        a = F.conv2d(x, quantize(self.weight, self.bits), padding=self.padding)
        y = self.bn(a * self.alpha.view(1, -1, 1, 1))
        if static and steps > 1:
            y = y.repeat(steps, 1, 1, 1)
        if self.pools_sums:
            return self.act(self._sum_pool(y), steps)
        return self.act.pooled(y, self._pool, steps)

    forward_float = forward

    def forward_exact(self, x_int: torch.Tensor, steps: int = 1, static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer path: (a of shape (T*B, C_out, H, W), pooled spikes (T*B, C_out, H', W')), a
        exact in float64 (``static``: one step's input, which every step takes)."""
        with torch.no_grad():
            w = quantize(self.weight, self.bits).to(torch.float64)
        a = F.conv2d(x_int.to(torch.float64), w, padding=self.padding)
        if static and steps > 1:
            a = a.repeat(steps, 1, 1, 1)
        if self.pools_sums:
            return a, self.act.exact(self._sum_pool(a), self.neuron_fields(), steps).to(torch.float32)
        s = self.act.exact(a, self.neuron_fields(), steps).to(torch.float32)
        return a, self._pool(s)
