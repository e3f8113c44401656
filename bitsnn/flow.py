"""The end-to-end flow behind ``bitsnn demo``: named steps, each writing into the run directory."""

from __future__ import annotations

import time

from .data import load_dataset


def demo_main(args) -> int:
    t0 = time.perf_counter()
    ds = load_dataset(args.data_dir)
    print(f"[data] {ds.summary()}")
    print(f"[data] loaded in {time.perf_counter() - t0:.1f} s")
    return 0
