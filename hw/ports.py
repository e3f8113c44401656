"""The one read-port signature every stage of the design uses to read a word store.

A reader drives ``addr``; the store answers with ``data`` one cycle later (a synchronous read, as
block RAM gives it). Routers read spike vectors through it, dense cores their input words, event
cores their pixel values, and a layer stage serves its output spikes through it to the next
stage (see :mod:`bitsnn.hw.stage`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["read_port", "serve_memory", "serve_register"]


def read_port(depth: int, width: int) -> wiring.Signature:
    """A reader's side of a read port of ``depth`` words of ``width`` bits (data 1 cycle after addr)."""
    return wiring.Signature({"addr": Out(range(max(2, depth))), "data": In(width)})


def serve_memory(m, port, mem_read_port) -> None:
    """Answer ``port`` (a reader's read port, flipped or not) from an ``amaranth.lib.memory`` read port."""
    m.d.comb += [mem_read_port.addr.eq(port.addr), port.data.eq(mem_read_port.data)]


def serve_register(m, port, value, width: int) -> None:
    """Answer ``port`` with ``width``-bit word ``addr`` of the signal ``value`` (zero padded),
    registered: the same 1-cycle latency as a memory."""
    padded = Cat(value, Const(0, (-len(value)) % width)) if len(value) % width else value
    r = Signal(width)
    m.d.sync += r.eq(padded.word_select(port.addr, width))
    m.d.comb += port.data.eq(r)
