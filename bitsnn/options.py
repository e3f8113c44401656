"""Checks for numeric and named options, shared by the command line (as argparse types) and the
flow configuration (``bitsnn flow CONFIG``), so that both refuse the same values with the same
words. Standard library only.

Each checker takes a string (from the command line) or an already typed value (from a TOML or
JSON file) and returns the typed value, or raises :class:`OptionError` naming what is wrong.
"""

from __future__ import annotations

import argparse
import math
import re

from . import BitsnnError

__all__ = ["OptionError", "int_in", "float_in", "one_of", "MAX_SEED", "FLOAT32_MAX", "MAX_LR", "BOARDS", "SIMULATORS",
           "HDL_SIMULATORS", "SURROGATES"]

#: torch, numpy and the training code take seeds in this range
MAX_SEED = 2**63 - 1
#: the largest float32: a loss weight above it cannot even enter the loss
FLOAT32_MAX = 3.4028234663852886e38
#: the largest learning rate: Adam's first step is lr / (1 - beta1) = 10 lr, which must stay a float32
MAX_LR = FLOAT32_MAX * (1 - 0.9)
#: the boards ``bitsnn build`` targets
BOARDS = ("icebreaker", "ulx3s-85f")
#: the HDL simulators that run the generated Verilog (co-simulation with cocotb or the C++ harness)
HDL_SIMULATORS = ("icarus", "verilator")
#: what ``bitsnn sim`` runs the design on: those, Amaranth's simulator, or the golden model alone
SIMULATORS = (*HDL_SIMULATORS, "amaranth", "golden")
#: the surrogate gradients ``bitsnn train`` takes (bitsnn.model.surrogate implements each)
SURROGATES = ("box", "s2nn", "ste")


#: what a number on the command line or in a config string looks like: ASCII digits, no "_" separators
#: (Python's int() and float() also take "1_0" and other scripts' digits, such as Arabic-Indic ones)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


class OptionError(BitsnnError, argparse.ArgumentTypeError):
    """A value outside what an option allows (argparse prints its message as it is)."""


def int_in(lo: int, hi: int | None = None):
    """Checker: an integer in lo..hi (hi None: no upper bound); booleans are not integers."""

    def check(value) -> int:
        if isinstance(value, str):
            if not _INT_TEXT.fullmatch(value.strip()):
                raise OptionError(f"expected an integer of digits 0-9, got {value!r}")
            value = int(value.strip(), 10)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise OptionError(f"expected an integer, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise OptionError(f"must be in {lo}..{hi}, got {value}" if hi is not None
                              else f"must be at least {lo}, got {value}")
        return value

    check.__name__ = "integer"
    return check


def float_in(lo: float, hi: float = math.inf, *, lo_open: bool = False):
    """Checker: a finite number in [lo, hi] ((lo, hi] with ``lo_open``); nan and inf refused."""

    def check(value) -> float:
        text = value
        if isinstance(value, str):
            if not _FLOAT_TEXT.fullmatch(value.strip()):
                raise OptionError(f"expected a number of digits 0-9, got {text!r}")
            value = float(value.strip())
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise OptionError(f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise OptionError(f"must be a finite number, got {text}")
        if value < lo or (lo_open and value == lo) or value > hi:
            low = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise OptionError(f"must be {low}" + (f" and <= {hi:g}" if hi != math.inf else "") + f", got {text}")
        return value

    check.__name__ = "number"
    return check


def one_of(*choices: str):
    """Checker: one of the given strings."""

    def check(value) -> str:
        if not isinstance(value, str) or value not in choices:
            raise OptionError(f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    check.__name__ = "choice"
    return check
