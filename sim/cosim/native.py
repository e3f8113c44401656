"""The harness on Verilator without cocotb: a C++ driver (``harness_main.cpp``) clocks the model.

Under cocotb, Verilator's time-slot bookkeeping (two time slots per clock, VPI callbacks in each)
costs as much as the model itself; the harness already does the per-image work, so the driver
only moves batches. Same harness, same records, same checks as :mod:`.batch_bench`; the host
decodes the records with NumPy (:func:`decode_records`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bitsnn import BitsnnError

from .checks import tap_order
from .harness import RecordLayout

__all__ = ["DRIVER", "build_native", "run_native", "decode_records"]

DRIVER = Path(__file__).resolve().parent / "harness_main.cpp"
EXE = "bitsnn_harness_sim"


def build_native(vpath: Path, meta: dict, bdir: Path, opts, *, make_env) -> None:
    """Compile the harness (module ``meta["toplevel"]`` minus its ``_tb`` wrapper, which the driver
    replaces) and the driver into ``bdir/bitsnn_harness_sim``; ``make_env``: a context manager
    that sets the make variables (``runner._verilator_make``). The runner decides when to build
    (its recipe stamp)."""
    top = meta["toplevel"].removesuffix("_tb")
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "--top-module", top, "--prefix", "Vharness",
           "-Mdir", str(bdir), "-o", EXE, "-Wno-fatal", "-Wno-lint", "-Wno-style", *opts, str(DRIVER), str(vpath)]
    log = bdir / "build.log"
    with make_env():
        with open(log, "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=bdir)
    if r.returncode != 0 or not (bdir / EXE).is_file():
        raise BitsnnError(f"the Verilator build of the harness failed; see {log}")


def decode_records(raw: np.ndarray, meta: dict, hidden: list[int], taps: dict) -> dict:
    """(B, record words + spike words) uint32 -> the bench's output arrays (see batch_bench)."""
    n_words = meta["n_words"]
    rec = RecordLayout(n_words)
    rw = -(-rec.width // 32)
    recs, spk = raw[:, :rw], raw[:, rw:]
    H = len(hidden)
    w = recs[:, :n_words].astype(np.int64)
    flags = recs[:, rec.early // 32] >> (rec.early % 32)
    out = {
        "classes": w[:, 0], "cycles": w[:, 1], "spike_counts": w[:, 2:2 + H],
        "scores": np.where(w[:, 2 + H:] >= 1 << 31, w[:, 2 + H:] - (1 << 32), w[:, 2 + H:]),
        "measured_cycles": recs[:, rec.measured // 32].astype(np.int64),
        "sim_cycles": recs[:, rec.cycles // 32].astype(np.int64),
        "early": (flags & 1).astype(bool), "hung": (flags >> 1 & 1).astype(bool),
    }
    bits = np.unpackbits(np.ascontiguousarray(spk).view(np.uint8), axis=1, bitorder="little")
    for l in range(H):
        o = meta["tap_offsets"][l]
        s = bits[:, o:o + hidden[l]]
        out[f"spikes{l}"] = tap_order(taps, l, s)
    return out


def run_native(bdir: Path, images: np.ndarray, meta: dict, hidden: list[int], taps: dict, *,
               progress: int = 0, out=None) -> tuple[dict, float]:
    """Run ``images`` ((B, n_inputs) uint8) through the built driver; (arrays, seconds clocking)."""
    B, n = images.shape
    run_id = f"{os.getpid()}_{time.time_ns()}"
    inp, outp = bdir / f"in_{run_id}.bin", bdir / f"out_{run_id}.bin"
    try:
        with open(inp, "wb") as f:
            f.write(b"BSNNIMG1")
            f.write(np.array([B, n, meta["batch"]], "<u4").tobytes())
            f.write(np.ascontiguousarray(images, np.uint8).tobytes())
        lines = []
        with subprocess.Popen([str(bdir / EXE), str(inp), str(outp), str(progress)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                lines.append(line)
                if progress and line.startswith("[cosim]"):
                    print(line.rstrip(), file=out or sys.stdout, flush=True)
        if proc.returncode != 0 or not outp.is_file():
            tail = "".join(lines[-5:]).strip()
            raise BitsnnError(f"the harness driver failed (exit {proc.returncode})" + (f": {tail}" if tail else ""))
        data = outp.read_bytes()
    finally:
        inp.unlink(missing_ok=True)
        outp.unlink(missing_ok=True)
    if data[:8] != b"BSNNREC1":
        raise BitsnnError("the harness driver wrote an unreadable result file")
    nb, rw, sw = np.frombuffer(data, "<u4", 3, 8)
    clocked = float(np.frombuffer(data, "<f8", 1, 20)[0])
    raw = np.frombuffer(data, "<u4", int(nb) * int(rw + sw), 28).reshape(int(nb), int(rw + sw))
    out = decode_records(raw, meta, hidden, taps)
    for b in np.flatnonzero(out["hung"])[:1]:
        raise BitsnnError(f"image {b}: no result after {out['sim_cycles'][b]} cycles (the design hung)")
    for b in np.flatnonzero(out["early"])[:1]:
        raise BitsnnError(f"image {b}: result before the last pixel went in")
    return out, clocked

