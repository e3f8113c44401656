"""ALBSNN's targets (#32), measured in one run on exported models: a ``--precision auto`` model's
weight bits against the same network with every layer at its widest width and the accuracy it
gives up, and a global-sum-pooling head against a dense head of the same body. Accuracy is the
golden model's on the MNIST test images; each target line prints the measured value, the target
and their ratio, and each model the one line the hardware refuses it with, if it does.

    python benchmarks/bench_precision.py --auto auto.bsnn --widest all8.bsnn [--gap gap.bsnn --dense dense.bsnn]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402

#: #32: at least 20 % fewer weight bits at no more than 0.1 pt accuracy loss; a GAP head within 0.2 pt
BITS_SAVING, LOSS_PT, GAP_PT = 0.20, 0.1, 0.2


def _measure(path: str, imgs, labels) -> dict:
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.hwplan import UnsupportedLayerError, check_supported
    from bitsnn.sim import golden

    m = HardwareModel.load(path)
    g = golden.run(m, imgs)
    try:
        check_supported(m)
        hw = "has a hardware stage"
    except UnsupportedLayerError as e:
        hw = f"refused by the hardware: {e}"
    widest = max((l.bits for l in m.weight_layers), default=0)  # a global sum pool holds none
    at_widest = sum(l.rows * l.fan_in * widest for l in m.weight_layers)
    return {"path": path, "spec": m.spec, "accuracy": float(np.mean(g.classes == labels)),
            "bits": m.weight_bits_total, "widest": widest, "at_widest": at_widest, "hardware": hw}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--auto", help="a model trained with --precision auto")
    ap.add_argument("--widest", help="the same network with every layer at the auto model's widest width")
    ap.add_argument("--gap", help="a model with a gap head")
    ap.add_argument("--dense", help="the same body with a dense head")
    ap.add_argument("--images", type=int, default=10000, help="first N MNIST test images (default: all)")
    args = ap.parse_args()
    if not (args.auto and args.widest) and not (args.gap and args.dense):
        ap.error("give --auto and --widest, or --gap and --dense, or all four")
    from bitsnn.data import load_dataset

    data = load_dataset(MNIST if MNIST.is_dir() else None)
    imgs, labels = data.test_images[: args.images], data.test_labels[: args.images]
    rows = {k: _measure(getattr(args, k), imgs, labels) for k in ("auto", "widest", "gap", "dense") if getattr(args, k)}
    for k, r in rows.items():
        print(f"{k:>6}: {r['spec']}: {100 * r['accuracy']:.2f} % on {len(labels)} images, {r['bits']:,} weight bits "
              f"({r['at_widest']:,} with every layer at {r['widest']} bits); {r['hardware']}")
    if "auto" in rows:
        a, w = rows["auto"], rows["widest"]
        saving = 1 - a["bits"] / w["bits"]
        loss = 100 * (w["accuracy"] - a["accuracy"])
        print(f"precision auto: {100 * saving:.1f} % fewer weight bits than {w['spec']} (target >= "
              f"{100 * BITS_SAVING:.0f} %: ratio {saving / BITS_SAVING:.2f}), accuracy {loss:+.2f} pt lower "
              f"(target <= {LOSS_PT} pt: {'met' if loss <= LOSS_PT + 1e-9 else 'missed'}); against its own widest "
              f"width ({a['at_widest']:,} bits): {100 * (1 - a['bits'] / a['at_widest']):.1f} % fewer")
    if "gap" in rows:
        g, d = rows["gap"], rows["dense"]
        diff = 100 * (d["accuracy"] - g["accuracy"])
        print(f"gap head: {diff:+.2f} pt below the dense head (target within {GAP_PT} pt: "
              f"{'met' if abs(diff) <= GAP_PT + 1e-9 else 'missed'}), {g['bits']:,} against {d['bits']:,} weight bits "
              f"({100 * (1 - g['bits'] / d['bits']):.1f} % fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
