"""How long the resource estimate takes, against a build's synthesis, place and route.

    python benchmarks/bench_estimate.py [--repeat 20]

``bitsnn build`` and ``bitsnn report`` run the estimate many times (lane fitting, SPRAM choice)
before any tool starts, so it must stay far cheaper than a build. This prints the estimate's time
per call on the presets' shapes (random weights: the estimate reads shapes, not values), measured
here, and how many times longer the 108 s of the 4-bit conv-tiny iCEBreaker build recorded in
docs/hardware.md is.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

#: the 4-bit conv-tiny iCEBreaker build at 30 MHz, seconds (docs/hardware.md)
BUILD_S = 108.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)

    from bitsnn.hw.estimate import estimate_resources
    from bitsnn.hwmodel import random_model

    rng = np.random.default_rng(0)
    shapes = {
        "tiny 576-160-10": random_model(rng, [576, 160, 10], input_shape=(24, 24)),
        "conv-tiny 784-c8w4-c32-10w4": random_model(rng, [784, 10], input_shape=(28, 28), input_encoding="pixels",
                                                    convs=((8, 3, 2), (32, 3, 2)), weight_bits={0: 4, 2: 4}),
        "conv 784-c32-c64-256-10": random_model(rng, [3136, 256, 10], input_shape=(28, 28), input_encoding="pixels",
                                                convs=((32, 3, 2), (64, 3, 2))),
    }
    for name, m in shapes.items():
        estimate_resources(m, lanes=16)  # warm-up: imports, caches
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            r = estimate_resources(m, lanes=16)
        per = (time.perf_counter() - t0) / args.repeat
        print(f"{name}: {per * 1e3:.2f} ms per estimate ({r['logic']} LC at 16 lanes); "
              f"a build takes {BUILD_S / per:,.0f}x as long")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
