"""bitsnn.hw: Amaranth generators (popcount layer cores, spike routers, UART top level).

Reads a loaded hardware model; never imports torch, bitsnn.sim or bitsnn.model. The package
imports amaranth only when a generator is used: the resource estimate (:mod:`bitsnn.hw.estimate`)
is NumPy only, so that ``bitsnn report`` can size a design without it.
"""

__all__ = ["Accelerator"]


def __getattr__(name):
    if name == "Accelerator":
        from .accelerator import Accelerator

        return Accelerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
