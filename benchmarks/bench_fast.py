"""Fast-SNN, measured in one run against #31's targets: for each exported ``signed_if`` model,
its MNIST test accuracy against the target at its steps, its spikes per inference (both signs,
all layers and steps, input included), the share of its -1 spikes, and per board the design the
board's logic holds, its latency, cycles against the bandwidth bound and FPGA energy (the rows of
``bench_time.py``), or the one line the hardware refuses it with.

    python benchmarks/bench_fast.py --model fast-tiny.bsnn [--model dense.bsnn ...] [--images N]

Each target line prints the measured value, the target and their ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402
from bench_time import _hardware_rows  # noqa: E402

#: #31's accuracy targets: the UP5K preset at T = 3, the ECP5 one at T <= 7
TARGETS = {3: 0.993, 7: 0.995}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="an exported signed_if hardware-model file")
    ap.add_argument("--images", type=int, default=10000, help="first N MNIST test images (default: all)")
    ap.add_argument("--ecp5-mhz", type=float, default=45.0, help="the ULX3S clock the latency is given at")
    args = ap.parse_args()
    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.hwplan import HardwarePlan, UnsupportedLayerError
    from bitsnn.sim import golden

    data = load_dataset(MNIST if MNIST.is_dir() else None)
    imgs, labels = data.test_images[: args.images], data.test_labels[: args.images]
    print(f"{len(imgs)} MNIST test images")
    print("| what | measured | target | ratio |")
    print("|---|---:|---:|---:|")
    for path in args.model:
        hw = HardwareModel.load(path)
        g = golden.run(hw, imgs)
        acc = float(np.mean(g.classes == labels))
        want = TARGETS.get(hw.timesteps)
        print(f"| {hw.describe()}: test accuracy | {100 * acc:.2f} % | "
              + (f"{100 * want:.1f} % | {acc / want:.4f} |" if want else "| |"))
        inputs = g.input_events[:, 0] // (hw.timesteps if hw.static_input else 1)
        per = g.spike_counts.sum(axis=1) + inputs
        print(f"| spikes per inference, both signs, all layers and steps, input included (mean) | {per.mean():,.0f} "
              f"| 1,700 | {per.mean() / 1700:.3f} |")
        neg = [float((s < 0).sum() / max(1, (s != 0).sum())) for s in g.step_spikes]
        print(f"| share of -1 spikes per hidden layer | {', '.join(f'{100 * v:.1f} %' for v in neg)} | | |")
        try:
            HardwarePlan.of(hw, lanes=8)
        except UnsupportedLayerError as e:
            print(f"| the hardware | refused: {e} | | MISSED |")
            continue
        _hardware_rows(hw, g, args.ecp5_mhz)
    return 0


if __name__ == "__main__":
    sys.exit(main())
