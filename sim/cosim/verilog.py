"""Amaranth components to Verilog for the cocotb benches (cached by model hash and parameters)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Const, _ast
from amaranth.lib import wiring

__all__ = ["component_ports", "convert_component", "accelerator_verilog", "harness_verilog"]


def _signal_members(component):
    """(Verilog port name, member, signal) for every signature member that is a signal
    (``always_ready`` streams hold constant ``ready`` members, which ``verilog.convert`` refuses
    as ports)."""
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, _ast.ValueCastable):
            value = value.as_value()
        if not isinstance(value, Const):
            yield "__".join(str(p) for p in path), member, value


def component_ports(component) -> dict:
    """name -> (signal, None) for every port of ``component`` (what ``verilog.convert`` takes)."""
    return {name: (value, None) for name, _member, value in _signal_members(component)}


def convert_component(component, name: str) -> str:
    return verilog.convert(component, name=name, ports=component_ports(component), emit_src=False)


def clocked_top(component, name: str, half_period: int = 5) -> str:
    """Verilog of a module ``<name>_tb`` that instantiates ``name`` and drives its ``clk`` from a
    free-running ``always #half_period`` generator (the bench's time unit: ns), every other port
    passed through. The simulator then clocks the design itself, with no callback into cocotb per
    edge (Verilator needs ``--timing``)."""
    ports = [(name, "input" if member.flow == wiring.In else "output", len(value))
             for name, member, value in _signal_members(component)]
    ports.append(("rst", "input", 1))
    decl = "\n".join(f"  {d} {f'[{w - 1}:0] ' if w > 1 else ''}{n};" for n, d, w in ports)
    conn = ",\n".join(f"    .{n}({n})" for n, _d, _w in [("clk", "", 1), *ports])
    return (f"module {name}_tb({', '.join(n for n, _d, _w in ports)});\n{decl}\n"
            f"  reg clk = 1'b0;\n  always #{half_period} clk = ~clk;\n"
            f"  {name} dut (\n{conn}\n  );\nendmodule\n")


@functools.cache
def generator_hash() -> str:
    """A hash of what generates the Verilog: the sources of hw/, the plan, the model file reader,
    this module and the harness, and the Amaranth version. Part of every cache key, so a changed
    generator never reuses an old design's Verilog or simulator build."""
    import amaranth

    import bitsnn.hw
    import bitsnn.hwmodel
    import bitsnn.hwplan
    import bitsnn.kinds

    h = hashlib.sha256(amaranth.__version__.encode())
    here = Path(__file__).resolve().parent
    srcs = sorted(Path(bitsnn.hw.__file__).resolve().parent.glob("*.py")) \
        + [Path(mod.__file__) for mod in (bitsnn.hwplan, bitsnn.hwmodel, bitsnn.kinds)] \
        + [here / "verilog.py", here / "harness.py"]
    for src in srcs:
        if src.is_file():
            h.update(src.name.encode())
            h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _cached(out_dir, name: str, key_parts, make, *, clocked: bool = False) -> tuple[Path, dict]:
    """``<out_dir>/<name>_<key>.v`` and its description, made by ``make() -> (component, meta)``
    unless present (the key hashes ``key_parts`` and :func:`generator_hash`). ``clocked``: the
    file also holds :func:`clocked_top`, and the description's ``toplevel`` is that module."""
    key = hashlib.sha256(json.dumps([name, generator_hash(), key_parts], default=str).encode()).hexdigest()[:16]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vpath, mpath = out_dir / f"{name}_{key}.v", out_dir / f"{name}_{key}.json"
    if vpath.is_file() and mpath.is_file():
        return vpath, json.loads(mpath.read_text())
    component, meta = make()
    meta = {"toplevel": f"{name}_tb" if clocked else name, "key": key, "clocked": clocked,
            "ports": ["clk", "rst", *component_ports(component)], **meta}
    text = convert_component(component, name)
    if clocked:
        text += "\n" + clocked_top(component, name)
    for path, body in ((vpath, text), (mpath, json.dumps(meta))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(body)
        tmp.replace(path)
    return vpath, meta


def _accel_meta(acc, params) -> dict:
    layout = acc.event_layout
    return {
        "params": dict(params),
        "layer_offset": layout["layer"].offset, "layer_width": layout["layer"].width,
        "addr_offset": layout["addr"].offset, "addr_width": layout["addr"].width,
        "n_words": acc.n_result_words,
    }


def accelerator_verilog(hwmodel, out_dir, *, name: str = "bitsnn_accel", **params) -> tuple[Path, dict]:
    """Write ``<out_dir>/<name>_<key>.v`` for ``Accelerator(hwmodel, **params)`` unless present;
    return its path and a description (event payload field offsets, result word count)."""
    from bitsnn.hw import Accelerator

    def make():
        acc = Accelerator(hwmodel, **params)
        return acc, _accel_meta(acc, params)

    return _cached(out_dir, name, [hwmodel.content_hash, sorted(params.items())], make)


def harness_verilog(hwmodel, out_dir, *, name: str = "bitsnn_harness", batch: int = 128, watchdog: int = 200_000,
                    **params) -> tuple[Path, dict]:
    """Write the Verilog of :class:`~bitsnn.sim.cosim.harness.CosimHarness` around
    ``Accelerator(hwmodel, **params)`` unless present; return its path and a description (the
    accelerator's, plus the batch depth, record width and tap offsets)."""
    from .harness import CosimHarness

    def make():
        h = CosimHarness(hwmodel, batch=batch, watchdog=watchdog, **params)
        return h, {**_accel_meta(h.accelerator, params), "batch": h.batch, "watchdog": h.watchdog,
                   "record_width": h.record.width, "tap_offsets": h.tap_offsets, "taps": h.taps,
                   "n_inputs": h.n_inputs}

    return _cached(out_dir, name, [hwmodel.content_hash, batch, watchdog, sorted(params.items())], make, clocked=True)
