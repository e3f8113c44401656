"""Golden model (NumPy, integer) vs torch fp32 eval of the same trained tiny network.

torch runs the standard float path in eval mode (BinaryLinear -> BN -> hardtanh + bias -> spike,
fp32, torch.no_grad), the golden model the integer path of the exported hardware model; both on
the same batches of MNIST test images. Prints images/s of each and golden/torch at batch 1
(per-image latency over 500 images) and at batch 100 and 1000 (the whole test set). Target: >= 5x.

Usage: .venv/bin/python benchmarks/bench_golden.py [--data-dir D] [--images-b1 500] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bitsnn.data import load_dataset
from bitsnn.hwmodel import HardwareModel
from bitsnn.model.cache import cached_tiny_model
from bitsnn.model.train import load_checkpoint
from bitsnn.sim import golden

REPO = Path(__file__).resolve().parents[1]


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--images-b1", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the golden model's NumPy popcount is single-threaded, "
                    "and on a shared 2-core machine more threads thrash)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_dataset(args.data_dir, progress=False)
    data_dir = args.data_dir or ds.source
    bsnn, ckpt = cached_tiny_model(REPO / ".cache" / "test-models", data_dir, log=lambda m: None)
    hw = HardwareModel.load(bsnn)
    model, _, _ = load_checkpoint(ckpt)
    model.eval()
    plans = [golden.DenseEvaluator(l) for l in hw.layers]
    images = ds.test_images
    timages = torch.as_tensor(images)
    print(f"model {hw.describe()}; torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"numpy {np.__version__}")

    # sanity: both compute the same network (classes agree except float-vs-exact boundary cases)
    with torch.no_grad():
        agree = float(np.mean(model.run(timages[:1000], "float").logits.argmax(1).numpy()
                              == golden.run(hw, images[:1000], plans=plans).classes))
    print(f"float torch vs golden classes agree on {agree:.2%} of 1000 images")

    rows = []
    n1 = min(args.images_b1, len(images))

    def golden_b1():
        for i in range(n1):
            golden.run(hw, images[i : i + 1], plans=plans)

    def torch_b1():
        with torch.no_grad():
            for i in range(n1):
                model.run(timages[i : i + 1], "float")

    rows.append(("batch 1", n1, _best(golden_b1, args.repeats), _best(torch_b1, args.repeats)))

    for bs in (100, 1000):
        def golden_batched(bs=bs):
            for lo in range(0, len(images), bs):
                golden.run(hw, images[lo : lo + bs], plans=plans)

        def torch_batched(bs=bs):
            with torch.no_grad():
                for lo in range(0, len(images), bs):
                    model.run(timages[lo : lo + bs], "float")

        rows.append((f"batch {bs}", len(images), _best(golden_batched, args.repeats), _best(torch_batched, args.repeats)))

    print(f"{'':12}{'images':>8}{'golden img/s':>15}{'torch img/s':>14}{'golden/torch':>14}")
    for name, n, tg, tt in rows:
        print(f"{name:12}{n:>8}{n / tg:>15,.0f}{n / tt:>14,.0f}{tt / tg:>13.2f}x")
    print("target: golden/torch >= 5x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
