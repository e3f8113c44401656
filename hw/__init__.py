"""bitsnn.hw: Amaranth generators (popcount layer cores, spike routers, UART top level).

Reads a loaded hardware model; never imports torch, bitsnn.sim or bitsnn.model.
"""

from .accelerator import Accelerator  # noqa: E402

__all__ = ["Accelerator"]
