"""NIR interoperability, measured in one run: each model written as a NIR graph, read back
(the content hash must not change), and loaded in each NIR-reading library (snnTorch, Norse),
which then runs every test image at one time step; every hidden layer's spikes, the class
scores and the class are compared with the golden model's.

    python benchmarks/bench_nir.py [--model a.bsnn ...] [--images N]

Default models: the cached tiny and conv-tiny test models (``.cache/test-models``).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST, REPO  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", help="hardware-model files (default: the cached test models)")
    ap.add_argument("--images", type=int, default=10000, help="first N MNIST test images (default: all)")
    args = ap.parse_args()
    import nir
    import torch

    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.model.nirlibs import LIBRARIES, load_in, run_graph, spike_nodes
    from bitsnn.nirgraph import from_nir, to_nir
    from bitsnn.sim import golden

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # Norse warns once per IF node about r, which is 1 here
    cached = sorted(REPO.glob(".cache/test-models/*.bsnn"), key=lambda p: p.stat().st_mtime)
    newest = {p.name.rsplit("-", 1)[0]: str(p) for p in cached}  # one per kind: tiny, conv-tiny
    paths = args.model or sorted(newest.values())
    if not paths:
        print("no models: pass --model, or run the tests once to cache the test models")
        return 1
    data = load_dataset(MNIST if MNIST.is_dir() else None)
    imgs = data.test_images[: args.images]
    print(f"{len(imgs)} MNIST test images; nir {nir.version}")
    print("| model | graph bytes | round trip | library | layers' spikes | scores | classes | s |")
    print("|---|---:|---|---|---|---|---|---:|")
    bad = 0
    for path in paths:
        hw = HardwareModel.load(path)
        graph = to_nir(hw)
        buf = io.BytesIO()
        nir.write(buf, graph)
        back = from_nir(nir.read(io.BytesIO(buf.getvalue())))
        same = back.content_hash == hw.content_hash
        bad += not same
        g = golden.run(hw, imgs)
        for lib in LIBRARIES:
            t0 = time.perf_counter()
            spikes, scores = run_graph(load_in(lib, graph), graph.nodes["input"].input_type["input"],
                                       hw.encode_input(imgs), spike_nodes(hw))
            dt = time.perf_counter() - t0
            layer_bad = [int(np.any(s.astype(np.uint8) != gs, axis=1).sum()) for s, gs in zip(spikes, g.spikes)]
            score_bad = int(np.any(scores != g.scores, axis=1).sum())
            class_bad = int((scores.argmax(1) != g.classes).sum())
            bad += sum(layer_bad) + score_bad + class_bad
            print(f"| {hw.describe().split(', ')[0]} | {len(buf.getvalue()):,} | {'same hash' if same else 'DIFFERS'} | "
                  f"{lib} | {' / '.join(map(str, layer_bad))} mismatches | {score_bad} | {class_bad} | {dt:.1f} |")
    print("all exact" if bad == 0 else f"{bad} mismatches")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
