"""Spike functions: the forward pass is a hard step, the backward pass a surrogate gradient.

Every surrogate here has the same forward, ``s = [v > 0]`` in {0, 1}; they differ only in the
gradient ``ds/dv`` used for training (and, for ``box``, the gradient of its learnable width).

``box``   BitSNN (Hu, Zheng, Pan, "BitSNNs", IEEE TCDS 2024): a learnable-width rectangle,
          ``ds/dv = 1/delta`` on ``[-rho*delta, delta]`` and 0 outside, ``rho = 0.3``. It is the
          gradient of the pseudo-function ``f(v) = clamp(v/delta, -rho, 1)``, so the width also
          learns: ``ds/d(delta) = -v/delta**2`` inside the window, 0 outside.
``s2nn``  S2NN/S3NN single-step surrogate (Suetake, Ikegawa, Saiin, Sawada, "S3NN: Time step
          reduction of spiking surrogate gradients for training energy efficient single-step
          spiking neural networks", arXiv:2201.10879, 2022; Neural Networks 2023), in the form
          BrainPy/braintools implement it (``brainpy.math.surrogate.S2NN``, defaults
          ``alpha = 4``, ``beta = 1``): ``ds/dv = alpha * sig(alpha v) * (1 - sig(alpha v))``
          for ``v < 0`` and ``beta / (v + 1)`` for ``v >= 0`` (the derivative of
          ``sigmoid(alpha v)`` below 0 and of ``beta ln(v + 1) + 1/2`` above).
``ste``   plain straight-through estimator clipped to the hardtanh range: ``ds/dv = 1`` on
          ``[-1, 1]``, 0 outside.
"""

from __future__ import annotations

import torch

from bitsnn.options import SURROGATES  # the names, where the command line reads them without torch

__all__ = ["SURROGATES", "BoxSpike", "S2NNSpike", "STESpike", "spike"]

RHO = 0.3
S2NN_ALPHA = 4.0
S2NN_BETA = 1.0


class BoxSpike(torch.autograd.Function):
    """``s = [v > 0]``; gradient ``1/delta`` on ``[-rho*delta, delta]`` (BitSNN), delta learnable."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, delta: torch.Tensor, rho: float = RHO) -> torch.Tensor:
        ctx.save_for_backward(v, delta)
        ctx.rho = rho
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        v, delta = ctx.saved_tensors
        inside = ((v >= -ctx.rho * delta) & (v <= delta)).to(v.dtype)
        grad_v = grad_out * inside / delta
        grad_delta = None
        if ctx.needs_input_grad[1]:
            g = -(grad_out * inside * v) / (delta * delta)
            grad_delta = g.sum().reshape(delta.shape) if delta.numel() == 1 else g.sum_to_size(delta.shape)
        return grad_v, grad_delta, None


class S2NNSpike(torch.autograd.Function):
    """``s = [v > 0]``; gradient of S2NN (Suetake et al. 2022), see the module docstring."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v)
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (v,) = ctx.saved_tensors
        sg = torch.sigmoid(S2NN_ALPHA * v)
        neg = S2NN_ALPHA * sg * (1 - sg)
        pos = S2NN_BETA / (v.clamp(min=0) + 1)
        return grad_out * torch.where(v < 0, neg, pos)


class STESpike(torch.autograd.Function):
    """``s = [v > 0]``; gradient 1 on ``[-1, 1]``, 0 outside."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v)
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (v,) = ctx.saved_tensors
        return grad_out * (v.abs() <= 1).to(grad_out.dtype)


def spike(v: torch.Tensor, surrogate: str, delta: torch.Tensor | None = None) -> torch.Tensor:
    """``[v > 0]`` as 0/1 in v's dtype, with the named surrogate gradient."""
    if surrogate == "box":
        if delta is None:
            raise ValueError("the box surrogate needs its width delta")
        return BoxSpike.apply(v, delta)
    if surrogate == "s2nn":
        return S2NNSpike.apply(v)
    if surrogate == "ste":
        return STESpike.apply(v)
    raise ValueError(f"unknown surrogate {surrogate!r} (expected one of {SURROGATES})")
