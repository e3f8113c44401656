"""Amaranth components to Verilog for the cocotb benches (cached by model hash and parameters)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Const, _ast

__all__ = ["component_ports", "convert_component", "accelerator_verilog"]


def component_ports(component) -> dict:
    """name -> (signal, None) for every signature member that is a signal (``always_ready``
    streams hold constant ``ready`` members, which ``verilog.convert`` refuses as ports)."""
    ports = {}
    for path, _member, value in component.signature.flatten(component):
        if isinstance(value, _ast.ValueCastable):
            value = value.as_value()
        if isinstance(value, Const):
            continue
        ports["__".join(str(p) for p in path)] = (value, None)
    return ports


def convert_component(component, name: str) -> str:
    return verilog.convert(component, name=name, ports=component_ports(component), emit_src=False)


def accelerator_verilog(hwmodel, out_dir, *, name: str = "bitsnn_accel", **params) -> tuple[Path, dict]:
    """Write ``<out_dir>/<name>_<key>.v`` for ``Accelerator(hwmodel, **params)`` unless present;
    return its path and a description (event payload field offsets, result word count)."""
    from bitsnn.hw import Accelerator

    key = hashlib.sha256(json.dumps([hwmodel.content_hash, name, sorted(params.items())], default=str).encode())
    key = key.hexdigest()[:16]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vpath, mpath = out_dir / f"{name}_{key}.v", out_dir / f"{name}_{key}.json"
    if vpath.is_file() and mpath.is_file():
        return vpath, json.loads(mpath.read_text())
    acc = Accelerator(hwmodel, **params)
    layout = acc.event_layout
    meta = {
        "toplevel": name,
        "key": key,
        "params": {k: v for k, v in params.items()},
        "layer_offset": layout["layer"].offset, "layer_width": layout["layer"].width,
        "addr_offset": layout["addr"].offset, "addr_width": layout["addr"].width,
        "n_words": acc.n_result_words,
    }
    text = convert_component(acc, name)
    tmp = vpath.with_suffix(".v.tmp")
    tmp.write_text(text)
    tmp.replace(vpath)
    mpath.write_text(json.dumps(meta))
    return vpath, meta
