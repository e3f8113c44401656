"""The build report (``report.json`` of ``bitsnn build``): read and check the fields the report uses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import BitsnnError

__all__ = ["check_build_report", "load_build_report"]


def check_build_report(report, source: str = "build report") -> dict:
    """Check the fields this report reads (``fmax_mhz``, ``utilisation``); raise BitsnnError."""
    if not isinstance(report, dict):
        raise BitsnnError(f"{source}: not a JSON object")
    fmax = report.get("fmax_mhz")
    if isinstance(fmax, bool) or not isinstance(fmax, (int, float)):
        raise BitsnnError(f"{source}: missing or non-numeric field 'fmax_mhz'")
    if not fmax > 0:
        raise BitsnnError(f"{source}: 'fmax_mhz' is {fmax}: the build has no timed clock")
    util = report.get("utilisation")
    if not isinstance(util, dict) or not util:
        raise BitsnnError(f"{source}: missing field 'utilisation'")
    for name, entry in util.items():
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                                                and entry.get(k) >= 0 for k in ("used", "available"))):
            raise BitsnnError(f"{source}: utilisation of {name!r} needs non-negative integers 'used' and 'available'")
    return report


def load_build_report(build_dir: str | os.PathLike) -> dict:
    """``report.json`` of a ``bitsnn build`` output directory, checked."""
    path = Path(build_dir) / "report.json"
    try:
        text = path.read_text()
    except OSError as e:
        raise BitsnnError(f"cannot read build report {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BitsnnError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return check_build_report(data, str(path))
