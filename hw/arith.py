"""Wide sums as balanced adder trees, and the weight words' arithmetic.

Python's ``sum(values)`` builds ``((v0 + v1) + v2) + ...``: an expression as deep as the list is
long, which overflows the recursion limit of Amaranth's simulator compiler and back ends at a few
hundred terms (e.g. the spike count of 144+ lanes) and describes a linear carry chain. These
helpers pair the terms up level by level instead, so the depth is ceil(log2(n)).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Mux, Value

__all__ = ["popcount", "tree_sum", "field", "bits_to_int", "ints_to_word", "lane_term"]


def tree_sum(values) -> Value:
    """The sum of ``values`` (Amaranth values or ints) as a balanced tree of two-input adds.

    Exact: Amaranth's ``+`` widens by one bit, so n unsigned w-bit terms give a
    w + ceil(log2(n))-bit result, which holds their largest possible sum n * (2**w - 1); signed
    terms widen the same way. An empty list sums to ``Const(0, 1)``.
    """
    level = [Value.cast(v) for v in values]
    if not level:
        return Const(0, 1)
    while len(level) > 1:
        pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0]


def popcount(bits) -> Value:
    """The number of set bits of ``bits`` (a value, or an iterable of 1-bit values), as a
    :func:`tree_sum` of its bits: ceil(log2(n)) adds deep, ceil(log2(n)) + 1 bits wide."""
    if not isinstance(bits, Value) and not hasattr(bits, "as_value"):
        return tree_sum(bits)
    v = Value.cast(bits)
    return tree_sum(v[i] for i in range(len(v)))


def field(v, n: int):
    """``v`` zero-extended or cut to exactly ``n`` bits (an empty value for n = 0): one field of a
    concatenated address."""
    return Cat(v, Const(0, n))[:n]


def bits_to_int(bits) -> int:
    """A little-endian sequence of 0/1 -> the integer (a memory word's initial value)."""
    v = 0
    for i in np.flatnonzero(np.asarray(bits)):
        v |= 1 << int(i)
    return v


def ints_to_word(values, bits: int) -> int:
    """A little-endian sequence of signed ``bits``-bit integers -> the integer holding them as
    two's-complement fields (a multi-bit weight word's initial value)."""
    mask, v = (1 << bits) - 1, 0
    for j, x in enumerate(values):
        v |= (int(x) & mask) << (j * bits)
    return v


def lane_term(wdata, j: int, bits: int, v, neg=None):
    """What lane j adds for one event: +-v from weight bit j (``bits`` 1), or v x w with w the
    signed ``bits``-bit field j of the weight word (w itself for spike input, where v is the
    constant 1). ``neg`` (a signed input's -1 spike) negates it: it flips the weight bit, or
    negates the b-bit weight, so the accumulator still takes one adder."""
    if bits == 1:
        return Mux(wdata[j] if neg is None else wdata[j] ^ neg, v, -v)
    w = wdata[j * bits:(j + 1) * bits].as_signed()
    t = w if isinstance(v, Const) else v * w
    return t if neg is None else Mux(neg, -t, t)
