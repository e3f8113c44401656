"""Time steps, measured in one run against #30's targets that need no hardware yet:

- a Norse IAFCell graph over 8 steps, imported: mismatches against Norse's own run (every hidden
  spike of every step, the summed scores, the classes);
- an snnTorch Leaky graph over 25 steps, imported with ``--reset subtract-next``: agreement with
  snnTorch's own run (hidden spikes of every step, classes);
- a multi-step model file (``--model``): MNIST test accuracy, and spikes per inference over all
  steps and layers, input included, from the golden model.

    python benchmarks/bench_time.py [--model lif.bsnn] [--images N]

Each target line prints the measured value, the target and their ratio. The hardware targets
(latency, energy, co-simulation, the UP5K build) wait for the multi-step hardware.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a multi-step hardware-model file to measure on the test set")
    ap.add_argument("--images", type=int, default=10000, help="first N MNIST test images (default: all)")
    args = ap.parse_args()
    import torch

    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.model.nirlibs import norse_if_reference, snntorch_leaky_reference
    from bitsnn.nirgraph import from_nir
    from bitsnn.sim import golden

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    data = load_dataset(MNIST if MNIST.is_dir() else None)
    imgs, labels = data.test_images[: args.images], data.test_labels[: args.images]
    print(f"{len(imgs)} MNIST test images")
    print("| what | measured | target | ratio |")
    print("|---|---:|---:|---:|")

    t0 = time.perf_counter()
    _net, graph, run = norse_if_reference()
    hw = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=8)
    x = (np.random.default_rng(0).random((len(imgs), 100)) < 0.15).astype(np.float32)
    spikes, total = run(x, 8)
    g = golden.run(hw, (x * 255).astype(np.uint8))
    bad = int(np.any(g.step_spikes[0] != spikes, axis=(1, 2)).sum() + np.any(g.scores != total, axis=1).sum()
              + (g.classes != total.argmax(1)).sum())
    print(f"| Norse IF graph over 8 steps, {len(x)} random inputs: images with any spike, score or class unequal "
          f"| {bad} | 0 | {'ok' if bad == 0 else 'MISSED'} |")

    _net, graph, run = snntorch_leaky_reference(data.train_images[:6000], data.train_labels[:6000])
    hw = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=25, reset="subtract-next")
    spikes, total = run(imgs)
    g = golden.run(hw, imgs)
    s_ok, c_ok = float((g.step_spikes[0] == spikes).mean()), float((g.classes == total.argmax(1)).mean())
    print(f"| snnTorch Leaky graph over 25 steps: hidden spikes equal to snnTorch's run | {100 * s_ok:.2f} % | 99 % "
          f"| {s_ok / 0.99:.4f} |")
    print(f"| the same: classes equal | {100 * c_ok:.2f} % | 99 % | {c_ok / 0.99:.4f} |")
    print(f"(NIR checks: {time.perf_counter() - t0:.1f} s)")

    if args.model:
        hw = HardwareModel.load(args.model)
        g = golden.run(hw, imgs)
        acc = float(np.mean(g.classes == labels))
        per = g.input_events.sum(axis=1)  # every layer's input events, all steps: the input's spikes included
        print(f"| {hw.describe()}: test accuracy | {100 * acc:.2f} % | 99.2 % | {acc / 0.992:.4f} |")
        print(f"| spikes per inference, all steps and layers, input events included (mean) | {per.mean():,.0f} | 1,700 "
              f"| {per.mean() / 1700:.3f} |")
        print(f"| hidden spikes per inference (mean) | {g.spike_counts.sum(axis=1).mean():,.0f} | | |")
        from bitsnn.hwplan import membrane_bits, membranes

        total = 0
        for layer in hw.hidden_layers:
            if layer.neuron_model.stateful:
                n, w = membranes(layer), membrane_bits(layer, hw.timesteps)
                total += n * w
                print(f"| {layer.name}: membranes x bits (never saturating) | {n:,} x {w} = {n * w:,} bits | | |")
        if total:
            print(f"| all membranes, against the iCE40UP5K's 4 SPRAM of 256 kbit | {total:,} bits | 1,048,576 "
                  f"| {total / (1 << 20):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
