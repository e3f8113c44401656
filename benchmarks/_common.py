"""What the benchmark scripts share: the repository paths and where to find a trained model."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"


def find_model(path):
    """(HardwareModel, where) from ``path``, else the cached tiny test model or a demo run's; (None, None)."""
    from bitsnn.hwmodel import HardwareModel

    if path:
        return HardwareModel.load(path), str(path)
    for cand in sorted(REPO.glob(".cache/**/tiny-*.bsnn")) + sorted(REPO.glob("runs/**/*.bsnn")):
        return HardwareModel.load(cand), str(cand)
    return None, None
