"""Data-parallel training, measured in one run against #34's target: ``conv-tiny``'s epoch time
in one process and in ``--nproc 2`` processes (one torch thread each, the same global batch),
with the test accuracy each reaches, at the preset's batch of 64 and at larger batches.

    python benchmarks/bench_ddp.py [--epochs 1] [--preset conv-tiny] [--batch 64 --batch 256]

Each run is a real ``bitsnn train`` on the MNIST training set; the epoch time is the training
loop's own (``epoch_seconds`` in the checkpoint's metrics: no start-up, no evaluation). With
``--epochs`` at the preset's, the accuracies compare with the preset's seed spread.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402

TARGET_SPEEDUP = 1.5


def _run(preset: str, epochs: int, nproc: int, out: Path, limit: int | None, batch: int) -> dict:
    from bitsnn.model.train import load_checkpoint

    cmd = [sys.executable, "-m", "bitsnn", "train", "--preset", preset, "--epochs", str(epochs), "--threads", "1",
           "-o", str(out), "--nproc", str(nproc), "--batch-size", str(batch)]
    if MNIST.is_dir():
        cmd += ["--data-dir", str(MNIST)]
    if limit:
        cmd += ["--limit-train", str(limit)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    _, _, metrics = load_checkpoint(out)
    return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="conv-tiny")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit-train", type=int, default=None, help="train on the first N images only")
    ap.add_argument("--batch", type=int, action="append", help="global batch sizes (default: 64 and 256)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch or [64, 256]:
            one = _run(args.preset, args.epochs, 1, Path(tmp) / "one.ckpt", args.limit_train, batch)
            two = _run(args.preset, args.epochs, 2, Path(tmp) / "two.ckpt", args.limit_train, batch)
            rows.append((batch, one, two))
    print(f"{args.preset}, {args.epochs} epoch(s), {rows[0][1]['train_images']} training images, one torch thread "
          "per process")
    print("| global batch | what | 1 process | 2 processes | ratio | target |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch, one, two in rows:
        t1 = sum(h["epoch_seconds"] for h in one["history"]) / len(one["history"])
        t2 = sum(h["epoch_seconds"] for h in two["history"]) / len(two["history"])
        print(f"| {batch} | epoch time (s, mean) | {t1:.1f} | {t2:.1f} | {t1 / t2:.2f}x faster | >= {TARGET_SPEEDUP}x "
              f"({'met' if t1 / t2 >= TARGET_SPEEDUP else 'MISSED'}) |")
        print(f"| {batch} | test accuracy | {100 * one['test_accuracy']:.2f} % | {100 * two['test_accuracy']:.2f} % | "
              f"{two['test_accuracy'] - one['test_accuracy']:+.4f} | within the seed spread |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
