"""The hardware-model file (``.bsnn``): the one integer IR every stage after export reads.

NumPy only. The arithmetic it defines (docs/hardware-model.md has the full text):

- weights w_ji in {-1, +1}, stored as bits b_ji (1 <-> +1), packed per neuron row,
  little-endian bit order: input i is bit (i % 8) of byte (i // 8); padding bits are 0; the
  multi-bit kinds (version 4) hold b-bit integers in [-(2^(b-1) - 1), 2^(b-1) - 1] instead, unpacked;
- optional input crop: the model takes the (h, w) window at (top, left) of a larger image
  (``input_crop``); x is that window's pixels, row by row;
- input encoding ``spikes``: s_i = [x_i >= input_threshold] for 8-bit pixels x;
  ``pixels``: the first layer takes x_i in 0..255 directly;
- pre-activation a_j = sum_i s_i * w_ji = 2 * popcount(s & b_j) - popcount(s);
- hidden layer: spike_j = [a_j >= theta_j] where compare_j = +1, [a_j <= theta_j] where
  compare_j = -1 (a negative folded scale); theta lies in [-R-1, R+1], R the largest |a_j|;
- output layer: integer scores a_j; class = argmax, ties to the lowest index.

Container (version 2, 3 with convolutions, 4 with multi-bit weights; version 1, without the
input crop, is still read), all integers little-endian::

    b"BITSNNHW" | u32 version | u32 header length H | H bytes UTF-8 JSON header | payload

The header lists each array's name, dtype, shape and offset into the payload, the model's
structure, free-form ``meta`` (data set, accuracy, training config) and ``content_hash``, the
SHA-256 of the canonical header without that field followed by the payload. Loading is strict:
every field has its exact JSON type, unknown keys (outside ``meta``) are refused, the array table
holds exactly the arrays the layers need in the format's dtypes and shapes, tiling the payload with
no overlap or gap. Any failure raises :class:`HardwareModelError` with one line naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import BitsnnError
from .fileio import DuplicateKeyError, atomic_write_bytes, magic_kind, unique_keys
from .kinds import FILE_KINDS, KINDS, NEURONS, RESETS

__all__ = [
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "MAGIC",
    "HardwareModelError",
    "MAX_INPUT",
    "MAX_DIM",
    "MAX_KERNEL",
    "MODEL_FILE",
    "Layer",
    "ConvLayer",
    "WEIGHT_BITS",
    "weight_limit",
    "weight_fields",
    "MAX_STEPS",
    "INPUT_CODINGS",
    "rate_randoms",
    "rate_start_states",
    "LAYER_CLASSES",
    "GapLayer",
    "HardwareModel",
    "pack_bits",
    "unpack_bits",
    "random_model",
]

MAGIC = b"BITSNNHW"
#: what ``-o`` of export and import writes: an existing file of this kind may be replaced
MODEL_FILE = magic_kind("a bitsnn hardware-model file", MAGIC)
FORMAT_VERSION = 6
#: versions this bitsnn reads: 1 has no input crop, 2 no convolutions, 3 no multi-bit weights,
#: 4 no time steps, 5 no global sum pooling
READ_VERSIONS = (1, 2, 3, 4, 5, 6)
#: the most time steps one inference may take
MAX_STEPS = 4096
#: how the input enters the first layer at each time step (version 5; one step before): the same
#: pixels (``direct``, pixel input), the same spikes [pixel >= threshold] (``threshold``), Bernoulli
#: spikes [pixel > r] with r from :func:`rate_randoms` (``rate``), or the user's spikes per step
#: (``given``, for example an event sensor's frames)
INPUT_CODINGS = ("direct", "threshold", "rate", "given")
#: the codings each input encoding takes (the first in each is the one-step default)
CODINGS_OF = {"pixels": ("direct",), "spikes": ("threshold", "rate", "given")}
#: the largest |bias| and threshold of a stateful neuron, and its largest input shift
MAX_MEMBRANE_PARAM = 1 << 31
MAX_SHIFT = 16
#: multi-bit weight layers (``int_dense``, ``int_conv2d``) hold b-bit weights, b in this range:
#: integers in [-(2^(b-1) - 1), 2^(b-1) - 1] (a symmetric range, as the training quantiser gives)
WEIGHT_BITS = range(2, 9)
_DTYPES = {"u1": np.dtype("<u1"), "i1": np.dtype("<i1"), "i8": np.dtype("<i8")}
_MAX_HEADER = 1 << 24
#: the most neurons (or inputs) one layer of the file may have
MAX_DIM = 1 << 20
INPUT_ENCODINGS = ("spikes", "pixels")
#: odd kernel sizes up to this are accepted; OR max-pool windows (1: none)
MAX_KERNEL = 15
#: the longest layer name (printable characters only)
MAX_NAME = 128
CONV_POOLS = (1, 2)
#: the largest input value of each input kind: a spike is 0/1, a pixel 0..255
MAX_INPUT = {"spikes": 1, "pixels": 255}


class HardwareModelError(BitsnnError):
    """The file is not a valid hardware model (wrong version, corrupt, inconsistent)."""


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(..., n) array of 0/1 -> (..., ceil(n/8)) uint8, little-endian bit order, zero padding."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (..., ceil(n/8)) uint8 -> (..., n) uint8 of 0/1."""
    return np.unpackbits(packed, axis=-1, count=n, bitorder="little")


@dataclass(frozen=True, eq=False)
class Layer:
    """One fully connected layer (kind ``dense``, :mod:`bitsnn.kinds`), hidden or output.

    ``bits``: bits per weight. 1: +-1 weights in ``weight_bits``, (n_out, ceil(n_in/8)) uint8, row
    j holds neuron j's weights packed (the file's ``binary_dense``); 2..8: ``weights``, (n_out,
    n_in) int8 integers in [-(2^(b-1) - 1), 2^(b-1) - 1] (``int_dense``); the other array is None.
    ``thresholds``/``compare``: (n_out,) int64/int8 for a hidden layer; None for the output layer,
    whose neurons emit their integer pre-activation as class scores.
    ``input_kind``: ``"spikes"`` (0/1 inputs) or ``"pixels"`` (0..255 inputs, first layer only).
    """

    name: str
    n_in: int
    n_out: int
    weight_bits: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    compare: np.ndarray | None = None
    input_kind: str = "spikes"
    bits: int = 1
    weights: np.ndarray | None = None
    #: the neuron model of a hidden layer (:data:`bitsnn.kinds.NEURONS`); the output layer has no
    #: neurons (its scores are summed over the time steps) and keeps ``step``
    neuron: str = "step"
    #: a stateful neuron's reset after a spike (:data:`bitsnn.kinds.RESETS`)
    reset: str = "subtract"
    #: a ``lif`` neuron's leak m: V <- V - ((V * m) >> 16) before each step (0: no leak)
    leak: int = 0
    #: a stateful neuron's integer bias, added to its membrane each step: (rows,) int64
    bias: np.ndarray | None = None
    #: a stateful neuron's input scale: V += c*a*2^shift + b (finer thresholds and biases)
    shift: int = 0

    #: the layer kind's name in :data:`bitsnn.kinds.KINDS`
    kind_name = "dense"

    @property
    def layer_kind(self):
        """This layer's :class:`bitsnn.kinds.LayerKind`."""
        return KINDS[self.kind_name]

    @property
    def kind(self) -> str:
        """The file's name for the layer's kind and weights (``binary_dense``, ``int_dense``, ...)."""
        return self.layer_kind.file_kind(self.bits)

    @property
    def multibit(self) -> bool:
        """Whether the weights are b-bit integers (b >= 2) rather than +-1 bits."""
        return self.bits != 1

    @property
    def neuron_model(self):
        """This layer's :class:`bitsnn.kinds.NeuronModel`."""
        return NEURONS[self.neuron]

    @property
    def min_version(self) -> int:
        """The first format version that holds this layer: its kind's, 4 with multi-bit weights,
        its neuron model's."""
        return max(self.layer_kind.min_version, 4 if self.multibit else 1, self.neuron_model.min_version)

    @property
    def is_output(self) -> bool:
        return self.thresholds is None

    @property
    def fan_in(self) -> int:
        """Inputs each neuron sums (one weight row)."""
        return self.n_in

    @property
    def rows(self) -> int:
        """Weight rows (one per neuron) and threshold entries."""
        return self.n_out

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the equivalent ANN layer."""
        return self.n_in * self.n_out

    @property
    def compares(self) -> int:
        """Compares per inference: a hidden layer's threshold compares (one per neuron), the
        output layer's argmax (n_out - 1)."""
        return self.n_out - 1 if self.is_output else self.n_out

    def header_fields(self) -> dict:
        """This layer's own fields of the file's entry (beside name, kind, n_in, n_out, input,
        output): its kind's :attr:`~bitsnn.kinds.LayerKind.header_keys`, ``bits`` if multi-bit."""
        own = {k: getattr(self, k) for k in self.layer_kind.header_keys}
        own = {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}
        nm = self.neuron_model
        neuron = {"neuron": self.neuron, **{k: getattr(self, k) for k in nm.header_keys}} if nm.min_version > 1 else {}
        return {**own, **({"bits": self.bits} if self.multibit else {}), **neuron}

    @property
    def spec_token(self) -> str:
        """The layer in a layer spec (``bitsnn train``'s spelling): its size, ``wB`` after B-bit weights."""
        return str(self.n_out) + self.bits_suffix

    @property
    def bits_suffix(self) -> str:
        return f"w{self.bits}" if self.multibit else ""

    @property
    def max_input(self) -> int:
        return MAX_INPUT[self.input_kind]

    @property
    def weight_max(self) -> int:
        """The largest |w| a weight may take: 1 for +-1 weights, 2^(b-1) - 1 for b-bit ones."""
        return weight_limit(self.bits)

    @property
    def a_max(self) -> int:
        """R: the largest |a_j| any input can produce."""
        return self.max_input * self.fan_in * self.weight_max

    @property
    def row_bytes(self) -> int:
        return (self.fan_in + 7) // 8

    def weights_pm1(self) -> np.ndarray:
        """(rows, fan_in) int8 of -1/+1 (+-1 weights only)."""
        if self.multibit:
            raise TypeError(f"{self.name}: {self.bits}-bit weights are not +-1 (use weights_int)")
        return unpack_bits(self.weight_bits, self.fan_in).astype(np.int8) * 2 - 1

    def weights_int(self) -> np.ndarray:
        """(rows, fan_in) int8: each weight as an integer (+-1, or b-bit values)."""
        return self.weights if self.multibit else self.weights_pm1()

    def weight_bit_matrix(self) -> np.ndarray:
        """(rows, fan_in) uint8 of 0/1 (+-1 weights only)."""
        if self.multibit:
            raise TypeError(f"{self.name}: {self.bits}-bit weights are not +-1 bits (use weights_int)")
        return unpack_bits(self.weight_bits, self.fan_in)

    @staticmethod
    def file_arrays(rows: int, fan_in: int, is_output: bool, multibit: bool = False,
                    stateful: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The file's arrays of a layer: suffix -> (dtype, shape)."""
        specs = {"weights": ("i1", (rows, fan_in))} if multibit else {"weight_bits": ("u1", (rows, (fan_in + 7) // 8))}
        if not is_output:
            specs.update(thresholds=("i8", (rows,)), compare=("i1", (rows,)))
        if stateful:
            specs.update(bias=("i8", (rows,)))
        return specs

    def array_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """This layer's arrays in the file: suffix -> (dtype, shape)."""
        return self.file_arrays(self.rows, self.fan_in, self.is_output, self.multibit, self.neuron_model.stateful)

    def arrays(self) -> dict[str, np.ndarray]:
        """This layer's arrays, by suffix (the file's ``layers.{i}.{suffix}``)."""
        out = {"weights": self.weights} if self.multibit else {"weight_bits": self.weight_bits}
        if not self.is_output:
            out.update(thresholds=self.thresholds, compare=self.compare)
        if self.neuron_model.stateful:
            out.update(bias=self.bias)
        return out

    def neuron_problem(self) -> str | None:
        """Why the neuron model's fields are not what it takes, or None (thresholds and compare
        directions are the model's, checked beside)."""
        if self.neuron not in NEURONS:
            return f"unknown neuron model {self.neuron!r} (known: {', '.join(NEURONS)})"
        nm = self.neuron_model
        if self.is_output and nm.stateful:
            return f"the output layer has no neurons (its scores are summed over the steps), not {self.neuron!r} ones"
        if (why := nm.leak_problem(self.leak)):
            return why
        if not nm.stateful:
            if self.bias is not None or self.reset != "subtract" or self.shift != 0:
                return f"{self.neuron} neurons keep no membrane: no bias, reset or shift"
            return None
        if type(self.shift) is not int or not 0 <= self.shift <= MAX_SHIFT:
            return f"shift {self.shift!r}: must be 0..{MAX_SHIFT}"
        if self.reset not in RESETS:
            return f"reset {self.reset!r}: must be one of {RESETS}"
        if "reset" not in nm.header_keys and self.reset != "subtract":
            return f"{self.neuron} neurons have their own reset rule, not reset {self.reset!r}"
        if nm.signed and isinstance(self.thresholds, np.ndarray) and np.any(self.thresholds % 2):
            return f"{self.neuron} thresholds must be even: the membrane starts at theta/2"
        b = self.bias
        if not isinstance(b, np.ndarray) or b.dtype.kind != "i" or b.shape != (self.rows,):
            return f"a {self.neuron} layer needs an integer bias of shape ({self.rows},)"
        if b.size and np.abs(b).max() > MAX_MEMBRANE_PARAM:
            return f"a bias beyond +-{MAX_MEMBRANE_PARAM}"
        return None

    def weights_problem(self) -> str | None:
        """Why the weight array is not what the layer stores, or None."""
        if self.multibit:
            return self._int_weights_problem()
        if self.weights is not None:
            return "+-1 weights are stored as weight bits, not integer weights"
        wb = self.weight_bits
        if not isinstance(wb, np.ndarray) or wb.dtype != np.uint8 or wb.shape != (self.rows, self.row_bytes):
            return (f"weight bits must be uint8 of shape {(self.rows, self.row_bytes)}, "
                    f"got {getattr(wb, 'dtype', type(wb))} {getattr(wb, 'shape', '')}")
        pad = self.row_bytes * 8 - self.fan_in
        if pad and np.any(wb[:, -1] >> (8 - pad)):
            return f"padding bits beyond input {self.fan_in} are not zero"
        return None

    def _int_weights_problem(self) -> str | None:
        if self.bits not in WEIGHT_BITS or type(self.bits) is not int:
            return f"weight bits {self.bits!r}: must be 1 or {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1}"
        if self.weight_bits is not None:
            return f"{self.bits}-bit weights are stored as integer weights, not weight bits"
        w = self.weights
        if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.shape != (self.rows, self.fan_in):
            return (f"weights must be int8 of shape {(self.rows, self.fan_in)}, "
                    f"got {getattr(w, 'dtype', type(w))} {getattr(w, 'shape', '')}")
        q = self.weight_max
        bad = np.flatnonzero(np.abs(w.astype(np.int16)).max(axis=1) > q) if w.size else []
        if len(bad):
            return f"a weight of row {int(bad[0])} is outside the {self.bits}-bit range [{-q}, {q}]"
        return None


@dataclass(frozen=True, eq=False)
class ConvLayer(Layer):
    """A binary convolution, hidden only: C_in x H x W input maps -> C_out output maps.

    k x k kernels (k odd), stride 1, zero padding k // 2 (the output maps keep H x W), +-1 weights,
    one integer threshold and compare direction per output channel, then an optional 2 x 2 OR
    max-pool (``pool`` 2: output maps of H // 2 x W // 2, the last odd row and column dropped, as
    torch's max_pool2d does). Inputs and outputs are flattened channel by channel, row by row
    (torch's order), so a dense layer can follow.

    ``weight_bits``: (C_out, ceil(C_in*k*k/8)) uint8, row c holds output channel c's kernel in
    (input channel, ky, kx) order, packed like a dense row. ``thresholds``/``compare``: (C_out,).
    ``n_in``/``n_out`` are derived: C_in*H*W and C_out*(H/pool)*(W/pool).
    """

    n_in: int = 0
    n_out: int = 0
    weight_bits: np.ndarray = None
    in_shape: tuple[int, int, int] = (1, 1, 1)
    channels: int = 1
    kernel: int = 3
    pool: int = 1

    kind_name = "conv2d"

    def __post_init__(self):
        object.__setattr__(self, "in_shape", tuple(int(d) for d in self.in_shape))
        object.__setattr__(self, "n_in", math.prod(self.in_shape))
        object.__setattr__(self, "n_out", math.prod(self.out_shape))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _c, h, w = self.in_shape
        if self.pool < 1:  # no such layer (shape_problem says why): nothing to divide by
            return (self.channels, 0, 0)
        return (self.channels, h // self.pool, w // self.pool)

    @property
    def fan_in(self) -> int:
        return self.in_shape[0] * self.kernel * self.kernel

    @property
    def rows(self) -> int:
        return self.channels

    @property
    def macs(self) -> int:
        """k*k*C_in multiply-accumulates per output position and channel (before the pool)."""
        return self.channels * self.in_shape[1] * self.in_shape[2] * self.fan_in

    @property
    def compares(self) -> int:
        """Threshold compares per inference: one per output position and channel, before the pool."""
        return self.channels * self.in_shape[1] * self.in_shape[2]

    @property
    def spec_token(self) -> str:
        return (f"c{self.channels}" + (f"k{self.kernel}" if self.kernel != 3 else "")
                + (f"p{self.pool}" if self.pool != 2 else "") + self.bits_suffix)

    def kernels_pm1(self) -> np.ndarray:
        """(C_out, C_in, k, k) int8 of -1/+1."""
        return self.weights_pm1().reshape(self.channels, self.in_shape[0], self.kernel, self.kernel)

    def kernels_int(self) -> np.ndarray:
        """(C_out, C_in, k, k) int8: the kernels' integer weights."""
        return self.weights_int().reshape(self.channels, self.in_shape[0], self.kernel, self.kernel)

    def shape_problem(self) -> str | None:
        """Why the geometry is not one the format defines, or None."""
        c, h, w = self.in_shape
        k = self.kernel
        if not (0 < c <= MAX_DIM and 0 < h <= MAX_DIM and 0 < w <= MAX_DIM and c * h * w <= MAX_DIM):
            return f"bad input shape {list(self.in_shape)}"
        if not 0 < self.channels <= MAX_DIM or self.channels * h * w > MAX_DIM:
            return f"bad channel count {self.channels}"
        if not (k % 2 == 1 and 1 <= k <= min(MAX_KERNEL, 2 * min(h, w) - 1)):
            return f"kernel {k}: must be odd, 1..{MAX_KERNEL}, and no wider than twice the map"
        if self.pool not in CONV_POOLS or min(h, w) < self.pool:
            return f"pool {self.pool}: must be one of {CONV_POOLS} and fit the {h}x{w} map"
        return None


@dataclass(frozen=True, eq=False)
class GapLayer(Layer):
    """ALBSNN's global sum pooling head (kind ``global_pool``, format version 6), the output layer
    only: C x H x W input spikes -> ``n_out`` class scores, score c = the spikes of class c's
    channels summed over their H x W positions (and over the time steps, as every output layer's
    scores are). Each class has C / n_out consecutive channels: one (``n_out`` = C, the default)
    or a population of several. No weights (``bits`` 0, no arrays) and no neurons; the 1/(H W) of
    an average pool is a positive scale that the argmax ignores, so it folds away. ``n_in`` is
    derived: C*H*W."""

    n_in: int = 0
    n_out: int = 0
    in_shape: tuple[int, int, int] = (1, 1, 1)
    bits: int = 0

    kind_name = "global_pool"

    def __post_init__(self):
        object.__setattr__(self, "in_shape", tuple(int(d) for d in self.in_shape))
        object.__setattr__(self, "n_in", math.prod(self.in_shape))
        if not self.n_out:
            object.__setattr__(self, "n_out", self.in_shape[0])

    @property
    def multibit(self) -> bool:
        return False

    @property
    def group(self) -> int:
        """Channels per class."""
        return self.in_shape[0] // self.n_out if self.n_out > 0 else 0

    @property
    def fan_in(self) -> int:
        """Inputs each score sums: its channels' positions."""
        return self.group * self.in_shape[1] * self.in_shape[2]

    @property
    def rows(self) -> int:
        return self.n_out

    @property
    def weight_max(self) -> int:
        return 1

    @property
    def macs(self) -> int:
        """The adds of the equivalent ANN's pool: one per input."""
        return self.n_in

    @property
    def spec_token(self) -> str:
        return "gap" if self.n_out == self.in_shape[0] else f"gap{self.n_out}"

    @staticmethod
    def file_arrays(rows: int, fan_in: int, is_output: bool, multibit: bool = False,
                    stateful: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
        """None: the layer holds no weights, thresholds or biases."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def weights_problem(self) -> str | None:
        if self.bits != 0 or self.weight_bits is not None or self.weights is not None:
            return "a global sum pool holds no weights"
        return None

    def shape_problem(self) -> str | None:
        c, h, w = self.in_shape
        if not (0 < c <= MAX_DIM and 0 < h <= MAX_DIM and 0 < w <= MAX_DIM and c * h * w <= MAX_DIM):
            return f"bad input shape {list(self.in_shape)}"
        if not (0 < self.n_out <= c and c % self.n_out == 0):
            return f"{c} channels do not split into {self.n_out} classes of as many channels each"
        return None


def weight_fields(bits: int, ints: np.ndarray) -> dict:
    """A layer's weight fields for (rows, fan_in) integer weights ``ints`` of ``bits`` bits:
    ``weight_bits`` (+-1 weights, packed) or ``bits`` and ``weights`` (multi-bit ones)."""
    ints = np.asarray(ints)
    if bits == 1:
        return {"weight_bits": pack_bits((ints > 0).astype(np.uint8))}
    return {"bits": int(bits), "weights": ints.astype(np.int8)}


def weight_limit(bits: int) -> int:
    """The largest |w| of a ``bits``-bit weight: 1 for +-1 weights, 2^(bits-1) - 1 from 2 bits up."""
    return 1 if bits == 1 else (1 << (bits - 1)) - 1


@dataclass(frozen=True, eq=False)
class HardwareModel:
    """A whole network in integer form; see the module docstring for its arithmetic."""

    input_shape: tuple[int, ...]
    input_encoding: str
    input_threshold: int
    layers: tuple[Layer, ...]
    meta: dict = field(default_factory=dict)
    #: (image height, image width, top, left): the model takes the input_shape window at
    #: (top, left) of images of that size (None: it takes whole images of input_shape)
    input_crop: tuple[int, int, int, int] | None = None
    #: time steps per inference (format version 5; 1 before)
    timesteps: int = 1
    #: how the input enters the first layer at each step (:data:`INPUT_CODINGS`); None: the input
    #: encoding's one-step default (``direct`` for pixels, ``threshold`` for spikes)
    input_coding: str | None = None
    #: the ``rate`` coding's generator seed, 1..2^32-1 (:func:`rate_randoms`); None otherwise
    input_seed: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.input_coding is None and self.input_encoding in CODINGS_OF:
            object.__setattr__(self, "input_coding", CODINGS_OF[self.input_encoding][0])
        if self.meta is None:  # the file's meta is always an object
            object.__setattr__(self, "meta", {})
        if self.input_crop is not None:
            object.__setattr__(self, "input_crop", tuple(int(d) for d in self.input_crop))
        object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()

    # ---- structure -------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of the images a user gives: the crop's source size, else input_shape."""
        return self.input_crop[:2] if self.input_crop else self.input_shape

    @property
    def n_image_values(self) -> int:
        return math.prod(self.image_shape)

    def prepare_images(self, images) -> np.ndarray:
        """(B, *image_shape) or (B, n_image_values) images, or already cropped (B, n_inputs)
        ones -> (B, n_inputs) uint8: the pixels the first layer takes, the crop applied."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        x = images.reshape(images.shape[0], -1)
        if x.shape[1] == self.n_inputs:
            return x
        if self.input_crop and x.shape[1] == self.n_image_values:
            ih, iw, top, left = self.input_crop
            h, w = self.input_shape
            return np.ascontiguousarray(x.reshape(-1, ih, iw)[:, top : top + h, left : left + w]).reshape(-1, h * w)
        want = "x".join(map(str, self.image_shape))
        raise ValueError(f"images have {x.shape[1]} values each, the model takes {want} images")

    @property
    def static_input(self) -> bool:
        """Whether every time step takes the same first-layer input (``direct``, ``threshold``)."""
        return self.input_coding in ("direct", "threshold")

    @property
    def default_time(self) -> bool:
        """Whether the model is one step of its encoding's default coding (what versions 1-4 hold)."""
        return self.timesteps == 1 and self.input_coding == CODINGS_OF.get(self.input_encoding, (None,))[0]

    def step_inputs(self, x) -> np.ndarray:
        """The first layer's input at every step: (B, n_inputs) uint8 when every step takes the same
        (``direct``, ``threshold``: from images, as :meth:`encode_input`), else (B, T, n_inputs):
        ``rate`` spikes [pixel > r] of images, r from :func:`rate_randoms`; ``given``: the user's
        spikes, (B, T, *input_shape) or (B, T, n_inputs) of 0/1."""
        if self.static_input:
            return self.encode_input(x)
        if self.input_coding == "rate":
            px = self.prepare_images(x)
            r = rate_randoms(self.input_seed, self.timesteps, self.n_inputs)
            return (px[:, None, :] > r[None]).view(np.uint8)
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise TypeError(f"given spikes must be uint8, got {x.dtype}")
        if x.ndim < 2 or x.shape[1] != self.timesteps or math.prod(x.shape[2:]) != self.n_inputs:
            want = "x".join(map(str, (self.timesteps, *self.input_shape)))
            raise ValueError(f"given spikes have shape {list(x.shape[1:])} each, the model takes {want} (steps x input)")
        x = x.reshape(x.shape[0], self.timesteps, self.n_inputs)
        if x.size and x.max() > 1:
            raise ValueError("given spikes must be 0 or 1")
        return x

    def encode_input(self, images) -> np.ndarray:
        """(B, *image_shape) uint8 images (or already cropped ones) -> (B, n_inputs) uint8 first-layer
        inputs: the spikes ``pixel >= input_threshold`` (spike input) or the pixels. The one place
        of this rule: the golden model and the host driver (which sends the spikes packed) use it."""
        x = self.prepare_images(images)
        if self.input_encoding == "spikes":
            return (x >= self.input_threshold).view(np.uint8)
        return x.copy()

    @property
    def num_classes(self) -> int:
        return self.layers[-1].n_out

    @property
    def hidden_layers(self) -> tuple[Layer, ...]:
        return self.layers[:-1]

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].n_in] + [l.n_out for l in self.layers]

    @property
    def weight_layers(self) -> tuple:
        """The layers that hold weights (every kind but a global sum pool; :attr:`bitsnn.kinds.LayerKind.has_weights`)."""
        return tuple(l for l in self.layers if l.layer_kind.has_weights)

    @property
    def weight_bits_total(self) -> int:
        """Weight bits the model holds: rows x fan-in x bits per weight (a convolution's kernels, once)."""
        return sum(l.rows * l.fan_in * l.bits for l in self.layers)

    @property
    def spec(self) -> str:
        """The layer spec: input size, each layer's size (a convolution as cN[kK][pP], as
        ``bitsnn train`` spells it; ``wB`` after a layer of B-bit weights), the class count."""
        return "-".join([str(self.layers[0].n_in)] + [l.spec_token for l in self.layers])

    def describe(self) -> str:
        spec = self.spec
        crop = ""
        if self.input_crop:
            ih, iw, top, left = self.input_crop
            crop = f", {'x'.join(map(str, self.input_shape))} window at ({top}, {left}) of {ih}x{iw} images"
        return (
            f"{spec} ({self.input_encoding} input{crop}"
            + (f", threshold {self.input_threshold}" if self.input_coding == "threshold" else "")
            + f"), {self.weight_bits_total} weight bits"
            + time_text(self.timesteps, self.input_coding, [(l.neuron, l.leak, l.reset) for l in self.hidden_layers],
                        self.default_time)
        )

    def validate(self) -> None:
        """Raise HardwareModelError naming the first inconsistency."""
        err = HardwareModelError
        if self.input_encoding not in INPUT_ENCODINGS:
            raise err(f"unknown input encoding {self.input_encoding!r} (expected one of {INPUT_ENCODINGS})")
        if not self.input_shape or any(d <= 0 or d > MAX_DIM for d in self.input_shape):
            raise err(f"bad input shape {self.input_shape}")
        if self.input_crop is not None and (why := crop_problem(self.input_shape, self.input_crop)):
            raise err(why)
        if self.input_encoding == "spikes" and not (1 <= self.input_threshold <= 255):
            raise err(f"input threshold {self.input_threshold} outside 1..255")
        if not 0 <= self.input_threshold <= 255:  # pixel input does not read it, but it is still a pixel value
            raise err(f"input threshold {self.input_threshold} outside 0..255")
        if type(self.timesteps) is not int or not 1 <= self.timesteps <= MAX_STEPS:
            raise err(f"time steps {self.timesteps!r} outside 1..{MAX_STEPS}")
        if self.input_coding not in CODINGS_OF[self.input_encoding]:
            raise err(f"input coding {self.input_coding!r}: {self.input_encoding} input takes "
                      f"{', '.join(CODINGS_OF[self.input_encoding])}")
        if self.input_coding == "rate":
            if type(self.input_seed) is not int or not 1 <= self.input_seed < 1 << 32:
                raise err(f"rate coding needs a seed in 1..2^32-1, not {self.input_seed!r}")
        elif self.input_seed is not None:
            raise err(f"a seed belongs to rate coding only, not {self.input_coding}")
        if len(self.input_shape) == 3 and self.input_coding != "given":
            raise err(f"a {len(self.input_shape)}-D input shape (channels, height, width) takes given spikes only; "
                      "images are one channel")
        if self.input_coding == "given" and self.input_crop is not None:
            raise err("an input crop cuts images; given spikes come at the input shape")
        if not self.layers:
            raise err("the model has no layers")
        prev = self.n_inputs
        prev_maps = {2: (1, *self.input_shape), 3: self.input_shape}.get(len(self.input_shape))
        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({layer.name})"
            if not isinstance(layer.name, str) or not 0 < len(layer.name) <= MAX_NAME or not layer.name.isprintable():
                raise err(f"layer {i}: its name {_one_line(repr(layer.name))[:60]} is not 1..{MAX_NAME} printable "
                          "characters (a terminal would act on control characters)")
            if layer.kind not in LAYER_CLASSES or type(layer) is not LAYER_CLASSES[layer.kind]:
                raise err(f"{where}: unknown layer kind {type(layer).__name__}")
            if layer.layer_kind.input_is_map:
                if (why := layer.shape_problem()):
                    raise err(f"{where}: {why}")
                if prev_maps is None:
                    what = ("a convolution", "another") if layer.layer_kind.output_is_map else ("a global sum pool", "a")
                    raise err(f"{where}: {what[0]} must follow the input image or {what[1]} convolution")
                if tuple(layer.in_shape) != tuple(prev_maps):
                    raise err(f"{where}: takes {list(layer.in_shape)} maps but the previous stage gives "
                              f"{list(prev_maps)}")
            prev_maps = layer.out_shape if layer.layer_kind.output_is_map else None
            if layer.n_in != prev:
                raise err(f"{where}: takes {layer.n_in} inputs but the previous stage gives {prev}")
            if not (0 < layer.n_out <= MAX_DIM):
                raise err(f"{where}: bad neuron count {layer.n_out}")
            want_kind = self.input_encoding if i == 0 else "spikes"
            if layer.input_kind != want_kind:
                raise err(f"{where}: input kind {layer.input_kind!r}, expected {want_kind!r}")
            if (why := layer.weights_problem()):
                raise err(f"{where}: {why}")
            if (why := layer.neuron_problem()):
                raise err(f"{where}: {why}")
            last = i == len(self.layers) - 1
            if not last and not layer.layer_kind.can_be_hidden:
                raise err(f"{where}: a {layer.kind} layer has no neurons: it is the output layer or none")
            if last:
                if not layer.layer_kind.can_be_output:
                    names = [n for k in KINDS.values() if k.can_be_output for n in k.file_names]
                    raise err(f"{where}: the output layer must be a {names[0]} layer"
                              + "".join(f" or {'an' if n[0] in 'aeiou' else 'a'} {n} one" for n in names[1:]))
                if layer.thresholds is not None or layer.compare is not None:
                    raise err(f"{where}: the output layer must not have thresholds")
            else:
                th, cmp_ = layer.thresholds, layer.compare
                if th is None or cmp_ is None:
                    raise err(f"{where}: a hidden layer needs thresholds and compare directions")
                if th.shape != (layer.rows,) or cmp_.shape != (layer.rows,):
                    raise err(f"{where}: thresholds/compare must have shape ({layer.rows},)")
                if th.dtype.kind != "i" or cmp_.dtype.kind != "i":
                    raise err(f"{where}: thresholds and compare must be integers")
                if not np.all((cmp_ == 1) | (cmp_ == -1)):
                    raise err(f"{where}: compare directions must be +1 (a >= theta) or -1 (a <= theta)")
                # a step neuron's theta lies in a's range (its ends: never and always); a stateful
                # neuron's is positive, as its membrane starts at 0
                lo, hi = (1, MAX_MEMBRANE_PARAM) if layer.neuron_model.stateful else (-layer.a_max - 1, layer.a_max + 1)
                bad = np.flatnonzero((th < lo) | (th > hi))
                if bad.size:
                    what = "the range of a stateful neuron's" if lo == 1 else "the reachable range"
                    raise err(
                        f"{where}: threshold {int(th[bad[0]])} of neuron {int(bad[0])} outside "
                        f"{what} [{lo}, {hi}]"
                    )
            prev = layer.n_out

    @property
    def format_version(self) -> int:
        """The version this model is written as: the lowest that holds all of it (2; 3 with
        convolutions; 4 with multi-bit weights; 5 with time steps, an input coding other than the
        one-step default, or a stateful neuron model: :attr:`Layer.min_version`), so a model
        without new features reads in older bitsnn releases, byte for byte as they wrote it."""
        return max(2, *(l.min_version for l in self.layers), 1 if self.default_time else 5)

    # ---- serialisation ---------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for i, l in enumerate(self.layers):
            specs = l.array_specs()
            for name, arr in l.arrays().items():
                out[f"layers.{i}.{name}"] = np.ascontiguousarray(arr, dtype="<" + specs[name][0])
        return out

    def _structure(self) -> dict:
        return {
            "format": "bitsnn-hardware-model",
            "version": self.format_version,
            "input": {
                "shape": list(self.input_shape),
                "encoding": self.input_encoding,
                "threshold": int(self.input_threshold),
                **({"crop": {"image_shape": list(self.input_crop[:2]), "offset": list(self.input_crop[2:])}}
                   if self.input_crop else {}),
            },
            "layers": [
                {"name": l.name, "kind": l.kind, "n_in": l.n_in, "n_out": l.n_out,
                 "input": l.input_kind, "output": "scores" if l.is_output else "spikes", **l.header_fields()}
                for l in self.layers
            ],
            "meta": self.meta,
            **({"time": {"steps": self.timesteps, "coding": self.input_coding,
                         **({"seed": self.input_seed} if self.input_seed is not None else {})}}
               if self.format_version >= 5 else {}),
        }

    def to_bytes(self) -> bytes:
        header = self._structure()
        arrays, payload, offset = {}, [], 0
        for name, arr in self._arrays().items():
            dt = {np.dtype("<u1"): "u1", np.dtype("<i1"): "i1", np.dtype("<i8"): "i8"}[arr.dtype]
            arrays[name] = {"dtype": dt, "shape": list(arr.shape), "offset": offset}
            blob = arr.tobytes()
            payload.append(blob)
            offset += len(blob)
        header["arrays"] = arrays
        payload_bytes = b"".join(payload)
        header["content_hash"] = _content_hash(header, payload_bytes)
        hjson = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return MAGIC + struct.pack("<II", self.format_version, len(hjson)) + hjson + payload_bytes

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical header (without this field) and the payload."""
        return json.loads(_header_of(self.to_bytes()))["content_hash"]

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: the file appears whole or not at all."""
        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "HardwareModel":
        return _parse(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HardwareModel":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise HardwareModelError(f"cannot read hardware model {path}: {e.strerror}") from None
        return _parse(data, str(path))


def leak_text(m: int) -> str:
    """A leak m as people write it: "leak V>>3" (m = 2^13), or "decay 0.9000" (1 - m/65536)."""
    if m & (m - 1) == 0:
        return f"leak V>>{16 - (m.bit_length() - 1)}"
    return f"decay {1 - m / 65536:.4f}"


def time_text(steps: int, coding: str, neurons, default_time: bool) -> str:
    """", 4 steps of direct input, lif neurons (leak 3, reset subtract)": how a model runs over time,
    for its one-line description ("" for one step of the default coding with step neurons)."""
    kinds_ = []
    for name, leak, reset in neurons:
        nm = NEURONS.get(name)
        if nm is not None and nm.stateful:
            how = [leak_text(leak)] if leak else []
            how += [f"reset {reset}"] if "reset" in nm.header_keys else []
            text = f"{name} neurons" + (f" ({', '.join(how)})" if how else "")
            if text not in kinds_:
                kinds_.append(text)
    if default_time and not kinds_:
        return ""
    return f", {steps} step{'s' if steps != 1 else ''} of {coding} input" + "".join(f", {k}" for k in kinds_)


def _xorshift32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x << np.uint32(13))
    x = x ^ (x >> np.uint32(17))
    return x ^ (x << np.uint32(5))


def _xorshift32_jump(k: int) -> np.ndarray:
    """(32,) uint32: the images of the 32 unit vectors under k advances of the generator (it is
    linear over GF(2)), so advancing any state k times is the XOR of the columns of its set bits."""
    cols = np.array([1 << i for i in range(32)], np.uint32)
    for _ in range(k):
        cols = _xorshift32(cols)
    return cols


def _jump(states: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.zeros_like(states)
    for i in range(32):
        out ^= np.where((states >> np.uint32(i)) & np.uint32(1), cols[i], np.uint32(0))
    return out


def rate_randoms(seed: int, steps: int, n: int) -> np.ndarray:
    """(steps, n) uint8: the ``rate`` coding's random bytes. One xorshift32 generator (x ^= x << 13,
    x ^= x >> 17, x ^= x << 5, on 32 bits), started at ``seed`` for every inference, advances once
    per input value, step by step and input by input in order; input i of step t spikes when its
    pixel exceeds the low byte of the state after that advance (pixel 0 never, 255 at 255/256).

    Computed a block at a time: the generator is linear over GF(2), so a block of K states, each
    advanced K times, is the next block (K = 4096; a whole model's steps x inputs in milliseconds)."""
    total = steps * n
    K = min(total, 4096)
    first = np.empty(K, np.uint32)
    x = int(seed) & 0xFFFFFFFF
    for j in range(K):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        first[j] = x
    cols = _xorshift32_jump(K)
    out = np.empty(-(-total // K) * K, np.uint32)
    block = first
    for lo in range(0, len(out), K):
        out[lo : lo + K] = block
        block = _jump(block, cols)
    return (out[:total] & 0xFF).astype(np.uint8).reshape(steps, n)


def rate_start_states(seed: int, steps: int, n: int) -> list[int]:
    """The ``rate`` generator's state before input 0 of each step (``seed`` advanced t * n times):
    the hardware runs one generator per step side by side from these (docs/hardware.md), and
    step t's generator then yields what :func:`rate_randoms` gives for step t."""
    cols = _xorshift32_jump(n)
    state = np.array([int(seed) & 0xFFFFFFFF], np.uint32)
    out = []
    for _ in range(steps):
        out.append(int(state[0]))
        state = _jump(state, cols)
    return out


def crop_problem(input_shape, crop) -> str | None:
    """Why ``crop`` (image height, image width, top, left) is not a valid input crop for a model
    taking ``input_shape`` windows, or None. Shared by the hardware model and the torch network."""
    if len(crop) != 4 or len(input_shape) != 2:
        return "an input crop needs a 2-D input shape and (image height, image width, top, left)"
    ih, iw, top, left = crop
    h, w = input_shape
    if not (0 < ih <= MAX_DIM and 0 < iw <= MAX_DIM and 0 <= top and 0 <= left
            and top + h <= ih and left + w <= iw and (h, w) != (ih, iw)):
        return f"input crop: a {h}x{w} window at ({top}, {left}) is not a proper part of a {ih}x{iw} image"
    return None


def _canonical(header: dict) -> bytes:
    h = {k: v for k, v in header.items() if k != "content_hash"}
    return json.dumps(h, sort_keys=True, separators=(",", ":")).encode()


def _content_hash(header: dict, payload: bytes) -> str:
    return hashlib.sha256(_canonical(header) + payload).hexdigest()


def _header_of(data: bytes) -> bytes:
    (hlen,) = struct.unpack("<I", data[12:16])
    return data[16 : 16 + hlen]


# ---- the strict reader ---------------------------------------------------------------------------
# Every field the reader needs is required, with its exact JSON type (an integer is an int and
# never a bool); keys it does not know are refused (a newer writer's file is refused, not half
# understood), except inside the free-form ``meta``. The array table holds exactly the arrays the
# layers need, each in the dtype and shape the format defines, and sorted by offset they tile the
# payload from 0 to its end: no overlaps, no gaps.

_HEADER_KEYS = ("format", "version", "input", "layers", "arrays", "meta", "content_hash")  # version 5 adds "time"
_TIME_KEYS = ("steps", "coding")  # and "seed" with rate coding
_INPUT_KEYS = ("shape", "encoding", "threshold")  # version 2 adds an optional "crop"
_CROP_KEYS = ("image_shape", "offset")
_LAYER_KEYS = ("name", "kind", "n_in", "n_out", "input", "output")
_INT_KEYS = ("bits",)  # version 4: multi-bit weights (a kind's own keys: bitsnn.kinds.LayerKind.header_keys)
_ARRAY_KEYS = ("dtype", "shape", "offset")
#: the file's layer-kind names and the classes that hold them: each kind's ``layer`` part
#: (:mod:`bitsnn.kinds`; all of them live here), for +-1 and for multi-bit weights
LAYER_CLASSES = {name: globals()[k.parts["layer"].split(":", 1)[1]] for name, (k, _multi) in FILE_KINDS.items()}
LAYER_KINDS = tuple(LAYER_CLASSES)
LAYER_INPUTS = ("spikes", "pixels")
LAYER_OUTPUTS = ("spikes", "scores")


def _quote(text: str) -> str:
    """repr of a string from the file, cut short."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _show(value) -> str:
    """A short, one-line rendering of a JSON value from the file, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**30 else f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"
        return f"integer {text}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    return "list" if isinstance(value, list) else "object"


def _dims(shape: list[int]) -> str:
    """A shape from the file for an error message: [a, b], or its length if it is long."""
    return json.dumps(shape) if len(shape) <= 4 else f"[... {len(shape)} dimensions]"


def _one_line(msg: str) -> str:
    """Escape line breaks and other unprintable characters (names come from the file)."""
    if msg.isprintable():
        return msg
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)


def _parse(data: bytes, source: str) -> HardwareModel:
    def err(msg: str) -> HardwareModelError:
        return HardwareModelError(_one_line(f"{source}: {msg}"))

    data = bytes(data)
    if len(data) < 16 or data[:8] != MAGIC:
        raise err("not a bitsnn hardware-model file (bad magic)")
    version, hlen = struct.unpack("<II", data[8:16])
    if version not in READ_VERSIONS:
        raise err(f"hardware-model format version {version}; this bitsnn reads versions "
                  + ", ".join(map(str, READ_VERSIONS)))
    if hlen > _MAX_HEADER or 16 + hlen > len(data):
        raise err("truncated header")
    try:
        header = json.loads(data[16 : 16 + hlen].decode("utf-8"), object_pairs_hook=unique_keys)
    except DuplicateKeyError as e:
        raise err(f"corrupt header (duplicate key {_quote(e.args[0])})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise err(f"corrupt header ({e.__class__.__name__})") from None
    except ValueError:  # an integer literal longer than Python converts (sys.get_int_max_str_digits)
        raise err("corrupt header (an integer with too many digits)") from None
    payload = data[16 + hlen :]
    try:
        return _from_header(header, payload, err, version)
    except HardwareModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError) as e:
        # A safety net only: _from_header checks every field's type before using it.
        raise err(f"malformed header ({e.__class__.__name__})") from None


def _from_header(header, payload: bytes, err, version: int) -> HardwareModel:
    def expect(value, kind, where: str):
        """``value`` if its JSON type is ``kind`` (int: an int and not a bool), else an error."""
        if not (type(value) is int if kind is int else isinstance(value, kind)):
            what = {int: "an integer", str: "a string", list: "a list", dict: "an object"}[kind]
            raise err(f"{where} must be {what}, got {_show(value)}")
        return value

    def keys(obj: dict, where: str, required, optional=()):
        for k in required:
            if k not in obj:
                raise err(f"{where}: missing key {k!r}")
        for k in obj:
            if k not in required and k not in optional:
                raise err(f"{where}: unknown key {_quote(k)}")

    def int_list(value, where: str, length: int | None = None) -> list[int]:
        expect(value, list, where)
        if length is not None and len(value) != length:
            raise err(f"{where} must have {length} entries, got {len(value)}")
        return [expect(v, int, f"{where}[{j}]") for j, v in enumerate(value)]

    def choice(value, where: str, allowed, msg=None) -> str:
        expect(value, str, where)
        if value not in allowed:
            raise err(msg or f"{where} {_quote(value)} is not one of {allowed}")
        return value

    # -- header object, format, version, hash field
    if not isinstance(header, dict) or header.get("format") != "bitsnn-hardware-model":
        raise err("header does not describe a bitsnn hardware model")
    if "version" not in header:
        raise err("header: missing key 'version'")
    expect(header["version"], int, "version")
    if header["version"] != version:
        raise err(f"header version {header['version']!r} does not match the file version {version}")
    if "content_hash" not in header:
        raise err("missing content hash")
    expect(header["content_hash"], str, "content_hash")
    keys(header, "header", _HEADER_KEYS + (("time",) if version >= 5 else ()))

    # -- input
    inp = expect(header["input"], dict, "input")
    if "crop" in inp and version < 2:
        raise err("an input crop in a version 1 file")
    keys(inp, "input", _INPUT_KEYS, ("crop",))
    input_shape = int_list(inp["shape"], "input.shape")
    n_inputs = 1
    for d in input_shape:
        n_inputs *= d
        if not (0 < d <= MAX_DIM) or n_inputs > MAX_DIM:
            raise err(f"bad input shape {_dims(input_shape)} (1..{MAX_DIM} inputs)")
    if not input_shape:
        raise err("bad input shape ()")
    encoding = choice(inp["encoding"], "input.encoding", INPUT_ENCODINGS,
                      f"unknown input encoding {_quote(str(inp['encoding']))} (expected one of {INPUT_ENCODINGS})")
    threshold = expect(inp["threshold"], int, "input.threshold")
    crop = None
    if "crop" in inp:
        c = expect(inp["crop"], dict, "input.crop")
        keys(c, "input.crop", _CROP_KEYS)
        crop = (*int_list(c["image_shape"], "input.crop.image_shape", 2), *int_list(c["offset"], "input.crop.offset", 2))

    # -- layers
    layer_specs = expect(header["layers"], list, "layers")
    if not layer_specs:
        raise err("the model has no layers")
    expected: dict[str, tuple[str, list[int], int]] = {}  # array name -> (dtype, shape, layer index)
    geometry: list[dict] = []  # per layer: the kind's own fields
    layer_kinds: list = []  # per layer: its bitsnn.kinds.LayerKind
    prev = n_inputs
    for i, ls in enumerate(layer_specs):
        where = f"layers[{i}]"
        expect(ls, dict, where)
        if "kind" not in ls:
            raise err(f"{where}: missing key 'kind'")
        kind = expect(ls["kind"], str, f"{where}.kind")
        if kind not in FILE_KINDS:
            raise err(f"layer {i}: unsupported layer kind {_quote(kind)}")
        lk, multibit = FILE_KINDS[kind]
        neuron = choice(ls["neuron"], f"{where}.neuron", tuple(NEURONS)) if "neuron" in ls else "step"
        nm = NEURONS[neuron]
        keys(ls, where, _LAYER_KEYS + lk.header_keys + (_INT_KEYS if multibit else ()) + nm.header_keys,
             ("neuron",) if version >= 5 else ())
        name = expect(ls["name"], str, f"{where}.name")
        min_version = max(lk.min_version, 4 if multibit else 1, nm.min_version)
        if min_version > version:
            raise err(f"layer {i} ({name}): a {kind} layer in a version {version} file "
                      f"(the format holds it from version {min_version})")
        n_in, n_out = (expect(ls[k], int, f"{where}.{k}") for k in ("n_in", "n_out"))
        for k, n in (("n_in", n_in), ("n_out", n_out)):
            if not (0 < n <= MAX_DIM):
                raise err(f"layer {i} ({name}): bad {k} {n} (expected 1..{MAX_DIM})")
        if n_in != prev:
            raise err(f"layer {i} ({name}): takes {n_in} inputs but the previous stage gives {prev}")
        choice(ls["input"], f"{where}.input", LAYER_INPUTS)
        is_out = choice(ls["output"], f"{where}.output", LAYER_OUTPUTS) == "scores"
        if is_out != (i == len(layer_specs) - 1):
            raise err(f"layer {i}: only the last layer may output scores, and it must")
        if is_out and nm.stateful:
            raise err(f"layer {i} ({name}): the output layer has no neurons (its scores are summed over the steps), "
                      f"not {neuron!r} ones")
        fan_in, rows, geo = n_in, n_out, {}
        if nm.stateful:  # the neuron model's fields (its own checks run with the model's)
            geo["neuron"] = neuron
            if "reset" in nm.header_keys:
                geo["reset"] = choice(ls["reset"], f"{where}.reset", RESETS)
            if "leak" in nm.header_keys:
                geo["leak"] = expect(ls["leak"], int, f"{where}.leak")
            geo["shift"] = expect(ls["shift"], int, f"{where}.shift")
        if multibit:
            geo["bits"] = expect(ls["bits"], int, f"{where}.bits")
            if geo["bits"] not in WEIGHT_BITS:
                raise err(f"layer {i} ({name}): weight bits {geo['bits']} (expected "
                          f"{WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1})")
        if lk.input_is_map:  # a map layer's geometry (the kind's header keys: in_shape, then integers)
            geo.update({"in_shape": tuple(int_list(ls["in_shape"], f"{where}.in_shape", 3)),
                        **{k: expect(ls[k], int, f"{where}.{k}") for k in lk.header_keys if k != "in_shape"}})
            probe = lk.part("layer")(name, n_out=n_out, weight_bits=None,  # n_out: a head's classes; a
                                     **{k: v for k, v in geo.items() if k != "bits"})  # convolution derives its own
            if (why := probe.shape_problem()):
                raise err(f"layer {i} ({name}): {why}")
            if (probe.n_in, probe.n_out) != (n_in, n_out):
                raise err(f"layer {i} ({name}): n_in {n_in} and n_out {n_out} do not match its maps "
                          f"{list(probe.in_shape)} -> {list(probe.out_shape)}")
            fan_in, rows = probe.fan_in, probe.rows
        geometry.append(geo)
        layer_kinds.append(lk)
        for suffix, (dt, shape) in lk.part("layer").file_arrays(rows, fan_in, is_out, multibit, nm.stateful).items():
            expected[f"layers.{i}.{suffix}"] = (dt, list(shape), i)
        prev = n_out

    # -- meta: free-form, but an object
    meta = expect(header["meta"], dict, "meta")

    # -- time (version 5): the steps per inference, the input coding, a rate coding's seed
    time = {}
    if version >= 5:
        t = expect(header["time"], dict, "time")
        keys(t, "time", _TIME_KEYS, ("seed",))
        time = {"timesteps": expect(t["steps"], int, "time.steps"),
                "input_coding": choice(t["coding"], "time.coding", INPUT_CODINGS),
                "input_seed": expect(t["seed"], int, "time.seed") if "seed" in t else None}

    # -- the array table: exactly the arrays the layers need, in the format's dtypes and shapes
    table = expect(header["arrays"], dict, "arrays")
    spans = []  # (offset, end, name)
    for name, spec in table.items():
        if name not in expected:
            raise err(f"unexpected array {_quote(name)} (not one the layers need)")
        where = f"arrays[{name!r}]"
        expect(spec, dict, where)
        keys(spec, where, _ARRAY_KEYS)
        dt = expect(spec["dtype"], str, f"{where}.dtype")
        shape = int_list(spec["shape"], f"{where}.shape")
        off = expect(spec["offset"], int, f"{where}.offset")
        want_dt, want_shape, i = expected[name]
        if dt != want_dt:
            raise err(f"array {name}: bad dtype {_quote(dt)} (the format stores it as {want_dt!r})")
        if shape != want_shape:
            ls = layer_specs[i]
            raise err(f"array {name}: shape {_dims(shape)}, but layer {i} (n_in {ls['n_in']}, "
                      f"n_out {ls['n_out']}{', a convolution' if layer_kinds[i].output_is_map else ''}) implies {_dims(want_shape)}")
        if off < 0:
            raise err(f"array {name}: bad offset {off}")
        spans.append((off, off + math.prod(shape) * _DTYPES[dt].itemsize, name))
    for name in expected:
        if name not in table:
            raise err(f"missing array {name}")

    # -- layout: sorted by offset, the arrays tile the payload exactly
    spans.sort()
    for off, end, name in spans:
        if end > len(payload):
            raise err(f"truncated: array {name} needs bytes {off}..{end}, payload has {len(payload)}")
    for (a0, a1, a), (b0, b1, b) in zip(spans, spans[1:]):
        if b0 < a1:
            raise err(f"arrays {a} (bytes {a0}..{a1}) and {b} (bytes {b0}..{b1}) overlap")
    pos = 0
    for off, end, name in spans:
        if off > pos:
            n = off - pos
            raise err(f"{n} unused byte{'s' if n > 1 else ''} (a gap) at payload offset {pos}, before array {name}")
        pos = end
    if pos != len(payload):
        raise err(f"{len(payload) - pos} unexpected bytes after the arrays")

    if _content_hash(header, payload) != header["content_hash"]:
        raise err("content hash mismatch: the file is corrupt or was edited")

    # -- the model (its own validation checks values: padding bits, threshold range, compare, crop)
    arrays = {}
    for off, end, name in spans:
        dt, shape, _ = expected[name]
        arrays[name] = np.frombuffer(payload, dtype=_DTYPES[dt], count=math.prod(shape), offset=off).reshape(shape).copy()
    layers = []
    for i, ls in enumerate(layer_specs):
        is_out = ls["output"] == "scores"
        own = {suffix: arrays[f"layers.{i}.{suffix}"]
               for suffix in layer_kinds[i].part("layer").file_arrays(
                   1, 1, is_out, "bits" in geometry[i], NEURONS[geometry[i].get("neuron", "step")].stateful)}
        # a map layer derives n_in and n_out from its maps (checked equal above)
        layers.append(layer_kinds[i].part("layer")(
            name=ls["name"], n_in=ls["n_in"], n_out=ls["n_out"], thresholds=own.pop("thresholds", None),
            compare=own.pop("compare", None), input_kind=ls["input"], **own, **geometry[i]))
    try:
        return HardwareModel(
            input_shape=tuple(input_shape),
            input_encoding=encoding,
            input_threshold=threshold,
            layers=tuple(layers),
            meta=dict(meta),
            input_crop=crop,
            **time,
        )
    except HardwareModelError as e:
        raise err(str(e)) from None


def _random_thresholds(rng, n, fan_in, kind, spread, q=1):
    r = MAX_INPUT[kind] * fan_in * q
    scale = max(1, int(spread * math.sqrt(fan_in) * (64 if kind == "pixels" else 1) * q))
    th = rng.integers(-scale, scale + 1, size=n).astype(np.int64)
    cmp_ = np.where(rng.random(n) < 0.8, 1, -1).astype(np.int8)
    if n >= 4:
        th[0], th[1] = r + 1, -r - 1
    return np.clip(th, -r - 1, r + 1), cmp_


def random_model(
    rng: np.random.Generator,
    sizes: list[int],
    *,
    input_encoding: str = "spikes",
    input_threshold: int = 128,
    input_shape: tuple[int, ...] | None = None,
    threshold_spread: float = 0.3,
    input_crop: tuple[int, int, int, int] | None = None,
    convs: tuple[tuple[int, int, int], ...] = (),
    weight_bits: dict[int, int] | None = None,
    neurons: dict[int, dict] | None = None,
    timesteps: int = 1,
    input_coding: str | None = None,
    input_seed: int | None = None,
) -> HardwareModel:
    """A valid model with random weights and thresholds, for tests and benchmarks of later stages.

    Thresholds are drawn around each neuron's expected pre-activation so that layers spike at
    useful rates; a few land exactly on the range ends to exercise the never/always cases.
    ``convs``: (channels, kernel, pool) of convolutions before the dense layers (a 2-D
    ``input_shape`` needed); ``sizes`` then lists the input size, the dense layers' sizes after
    the flattened maps, and the class count. ``weight_bits``: layer index -> bits (2..8) for
    layers with multi-bit weights (``int_conv2d``/``int_dense``, uniform in the bits' range).
    ``neurons``: layer index -> the hidden layer's neuron fields (``neuron``, ``reset``, ``leak``)
    for stateful neurons, whose thresholds (1..) and biases are drawn around useful rates;
    ``timesteps``, ``input_coding``, ``input_seed``: the model's (format version 5).
    """
    nfields = dict(neurons or {})

    def neuron_fields(i, rows, fan_in, kind, th, cmp_):
        if i not in nfields:
            return {"thresholds": th, "compare": cmp_}
        scale = max(1, int(threshold_spread * math.sqrt(fan_in) * (64 if kind == "pixels" else 1) * weight_limit(wbits.get(i, 1))))
        th = rng.integers(1, 2 * scale + 2, size=rows).astype(np.int64)
        if NEURONS[nfields[i].get("neuron", "step")].signed:  # even: the membrane starts at theta/2
            th += th % 2
        return {"thresholds": th, "compare": cmp_,
                "bias": rng.integers(-scale, scale + 1, size=rows).astype(np.int64), **nfields[i]}
    wbits = dict(weight_bits or {})

    def weights(i, rows, fan_in) -> dict:
        if i in wbits:
            q = weight_limit(wbits[i])
            return weight_fields(wbits[i], rng.integers(-q, q + 1, size=(rows, fan_in)))
        return weight_fields(1, rng.integers(0, 2, size=(rows, fan_in), dtype=np.uint8).astype(np.int8) * 2 - 1)

    layers = []
    maps = None
    if convs:
        if not input_shape or len(input_shape) not in (2, 3):
            raise ValueError("random_model: convolutions need a 2-D (or, for given spikes, 3-D) input_shape")
        maps = (1, *input_shape) if len(input_shape) == 2 else tuple(input_shape)
    for i, (channels, kernel, pool) in enumerate(convs):
        kind = input_encoding if i == 0 else "spikes"
        fan_in = maps[0] * kernel * kernel
        w = weights(i, channels, fan_in)
        th, cmp_ = _random_thresholds(rng, channels, fan_in, kind, threshold_spread, weight_limit(wbits.get(i, 1)))
        layer = ConvLayer(
            f"conv{i + 1}", input_kind=kind, in_shape=maps, channels=channels,
            kernel=kernel, pool=pool, **w, **neuron_fields(i, channels, fan_in, kind, th, cmp_))
        layers.append(layer)
        maps = layer.out_shape
    dense_sizes = [layers[-1].n_out, *sizes[1:]] if layers else list(sizes)
    for i, (n_in, n_out) in enumerate(zip(dense_sizes[:-1], dense_sizes[1:])):
        kind = input_encoding if not layers and i == 0 else "spikes"
        li = len(convs) + i
        w = weights(li, n_out, n_in)
        last = i == len(dense_sizes) - 2
        th = cmp_ = None
        if not last:
            th, cmp_ = _random_thresholds(rng, n_out, n_in, kind, threshold_spread, weight_limit(wbits.get(li, 1)))
        fields = {"thresholds": th, "compare": cmp_} if last else neuron_fields(li, n_out, n_in, kind, th, cmp_)
        layers.append(Layer(f"fc{i + 1}", n_in, n_out, input_kind=kind, **w, **fields))
    return HardwareModel(
        input_shape=input_shape or (sizes[0],),
        input_encoding=input_encoding,
        input_threshold=input_threshold,
        layers=tuple(layers),
        meta={"source": "random_model"},
        input_crop=input_crop,
        timesteps=timesteps,
        input_coding=input_coding,
        input_seed=input_seed,
    )
