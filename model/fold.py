"""The export fold: alpha, BatchNorm, hardtanh and the learnable bias to one integer threshold.

One function, :func:`fold_thresholds`, used by both the PyTorch exact eval path and export, so
the two can never disagree. All arithmetic in float64 (docs/hardware-model.md, "Arithmetic")::

    y = gamma * (alpha*a - mu) / sqrt(var + eps) + beta        (a: integer pre-activation)
    spike  <=>  hardtanh(y) + b > 0

    -b >= 1  : never spikes                  -> compare +1, theta = R + 1
    -b < -1  : always spikes                 -> compare +1, theta = -R - 1
    otherwise: spike <=> k*a > c,  k = gamma*alpha/sqrt(var+eps),
                                   c = -b - beta + gamma*mu/sqrt(var+eps)
        k > 0  -> a >= floor(c/k) + 1        (compare +1)
        k < 0  -> a <= ceil(c/k) - 1         (compare -1)
        k == 0 -> constant [0 > c]

theta is clamped to [-R-1, R+1], R the largest |a| (n_in for spike inputs, 255*n_in for 8-bit
pixels). When training feeds pixels as x/255, pass ``input_scale=1/255``: it is folded into k
(alpha_eff = alpha * input_scale) so that a stays the integer sum of 0..255 pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_thresholds", "fold_membrane"]


def fold_thresholds(
    alpha,
    bn_weight,
    bn_bias,
    running_mean,
    running_var,
    eps: float,
    bias,
    a_max: int,
    input_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron integer thresholds and compare directions; see the module docstring.

    Array arguments are per-neuron (n,) (alpha may be a scalar); returns ``(theta int64,
    compare int8)``, both (n,), with theta in ``[-a_max-1, a_max+1]``.
    """
    f = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    gamma, beta, mu, var, b = f(bn_weight), f(bn_bias), f(running_mean), f(running_var), f(bias)
    n = gamma.shape[0]
    alpha = np.broadcast_to(f(alpha) * np.float64(input_scale), (n,))
    r = int(a_max)
    inv_std = 1.0 / np.sqrt(var + np.float64(eps))
    k = gamma * alpha * inv_std
    c = -b - beta + gamma * mu * inv_std

    theta = np.empty(n, dtype=np.int64)
    compare = np.ones(n, dtype=np.int8)
    never = -b >= 1
    always = (-b < -1) & ~never
    rest = ~(never | always)
    pos = rest & (k > 0)
    neg = rest & (k < 0)
    zero = rest & (k == 0)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = c / np.where(k == 0, 1.0, k)
    # Clip before rounding so huge or infinite quotients stay representable; anything beyond
    # +-(R+2) is clamped to the unreachable +-(R+1) afterwards anyway.
    q = np.clip(q, -r - 2.0, r + 2.0)
    theta[pos] = (np.floor(q[pos]) + 1).astype(np.int64)
    theta[neg] = (np.ceil(q[neg]) - 1).astype(np.int64)
    compare[neg] = -1
    theta[never] = r + 1
    theta[always] = -r - 1
    theta[zero] = np.where(c[zero] < 0, -r - 1, r + 1)
    np.clip(theta, -r - 1, r + 1, out=theta)
    return theta, compare


def fold_membrane(alpha, bn_weight, bn_bias, running_mean, running_var, eps: float, bias,
                  input_scale: float = 1.0, limit: int = 1 << 31, max_shift: int = 16,
                  resolution: int = 256, even: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A stateful (``if``/``lif``) neuron's integer parameters, in float64::

        float:   V += k*a + beta'   each step, a spike when V >= 1
                 k = gamma*alpha/sqrt(var+eps), beta' = beta - gamma*mu/sqrt(var+eps) + b
        integer: W = 2^s V / |k|:  W += c*a*2^s + round(2^s beta' / |k|),
                 a spike when W >= round(2^s / |k|)
                 (c = sign k; a leak V <- V (1 - 2^-k) becomes W <- W - (W >> k))

    The layer's shift s (0..max_shift) is the smallest that gives its median neuron a threshold of
    at least ``resolution``: the bias and threshold are then rounded to 1/resolution of a spike.
    Returns ``(theta int64 in 1..limit, compare int8, bias int64 in -limit..limit, s)``, the
    arrays (n,); ``even``: theta the nearest even integer, at least 2. A neuron with k = 0 takes the largest theta (its a does not reach it)."""
    f = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    gamma, beta, mu, var, b = f(bn_weight), f(bn_bias), f(running_mean), f(running_var), f(bias)
    n = gamma.shape[0]
    alpha = np.broadcast_to(f(alpha) * np.float64(input_scale), (n,))
    inv_std = 1.0 / np.sqrt(var + np.float64(eps))
    k = gamma * alpha * inv_std
    shift = beta - gamma * mu * inv_std + b
    mag = np.abs(k)
    live = mag[mag > 0]
    s = 0
    if live.size:
        s = int(np.clip(np.ceil(np.log2(resolution * float(np.median(live)))), 0, max_shift))
    mag = mag / 2.0 ** s
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        theta = np.where(mag > 0, 1.0 / np.where(mag > 0, mag, 1.0), float(limit))
        bias_i = np.where(mag > 0, shift / np.where(mag > 0, mag, 1.0), np.sign(shift) * float(limit))
    if even:  # the nearest even theta >= 2 (signed_if: the membrane starts at theta/2)
        theta = np.clip(2 * np.rint(np.clip(theta, 2, limit) / 2), 2, limit - limit % 2).astype(np.int64)
    else:
        theta = np.clip(np.rint(np.clip(theta, 1, limit)), 1, limit).astype(np.int64)
    bias_i = np.rint(np.clip(bias_i, -limit, limit)).astype(np.int64)
    compare = np.where(k < 0, -1, 1).astype(np.int8)
    return theta, compare, bias_i, s
