"""Trained-and-exported test models (``tiny``, ``conv-tiny``, ``lif-tiny``), cached on disk for tests and benchmarks.

The cache key is a hash of the training config and of every ``model/*.py`` source file, so any
change to the training or export code retrains. A file lock makes concurrent callers (pytest-xdist
workers) train once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

__all__ = ["TEST_TINY_CONFIG", "TEST_CONV_TINY_CONFIG", "TEST_LIF_TINY_CONFIG", "TEST_CONFIGS", "cached_model", "cached_tiny_model"]

#: The cached test model: the ``tiny`` architecture (576-160-10 on the central 24x24 window, spike
#: input at 64) with the box surrogate, 3 epochs, Adam lr 5e-3, batch 64, no augmentation. Pinned
#: here in full so that changing the preset's training defaults does not change it.
TEST_TINY_CONFIG = dict(preset="tiny", spec="576-160-10", crop=24, epochs=3, lr=5e-3, batch_size=64, shift=0,
                        surrogate="box", sparsity=0.0, input_encoding="spikes", input_threshold=64,
                        seed=0, device="cpu")


#: The cached convolutional test model: the ``conv-tiny`` architecture (784-c8-c32-10, 8-bit pixel
#: input) trained for 2 epochs without shifts: a real network of the conv preset's shape, cheap
#: enough for every CI run.
TEST_CONV_TINY_CONFIG = dict(preset="conv-tiny", spec="784-c8-c32-10", epochs=2, lr=5e-3, batch_size=64, shift=0,
                             surrogate="box", sparsity=0.0, input_encoding="pixels", input_threshold=64,
                             seed=0, device="cpu")

#: The cached test model over time: the same layers with lif neurons (leak V >> 3, reset by
#: subtraction) over 3 steps of direct input, one epoch: the membranes of both convolutions run
#: in the hardware's timed stages.
TEST_LIF_TINY_CONFIG = dict(preset="lif-tiny", spec="784-c8-c32-10", epochs=1, lr=5e-3, batch_size=64, shift=0,
                            surrogate="box", sparsity=0.0, input_encoding="pixels", input_threshold=64,
                            seed=0, device="cpu", timesteps=3, neuron="lif", leak=3, reset="subtract")

TEST_CONFIGS = {"tiny": TEST_TINY_CONFIG, "conv-tiny": TEST_CONV_TINY_CONFIG, "lif-tiny": TEST_LIF_TINY_CONFIG}


def _key(config: dict) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def cached_tiny_model(cache_dir, data_dir, *, log=print) -> tuple[Path, Path]:
    """(path of the .bsnn, path of the checkpoint) of the test tiny model, training it if needed."""
    return cached_model("tiny", cache_dir, data_dir, log=log)


def cached_model(name: str, cache_dir, data_dir, *, log=print) -> tuple[Path, Path]:
    """(path of the .bsnn, path of the checkpoint) of test model ``name`` (:data:`TEST_CONFIGS`),
    training and exporting it if needed."""
    from filelock import FileLock

    from bitsnn.data import load_dataset

    from .export import export_checkpoint
    from .train import resolve_config, save_checkpoint, train_model

    cfg = resolve_config(**TEST_CONFIGS[name])
    key = _key(asdict(cfg))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    bsnn, ckpt = cache_dir / f"{name}-{key}.bsnn", cache_dir / f"{name}-{key}.ckpt"
    with FileLock(str(cache_dir / f"{name}-{key}.lock")):
        if not (bsnn.is_file() and ckpt.is_file()):
            ds = load_dataset(data_dir, download=False, progress=False)
            model, metrics = train_model(cfg, ds, progress=False, log=log)
            save_checkpoint(ckpt, model, cfg, metrics)
            export_checkpoint(ckpt, bsnn, data_dir, log=log)
    return bsnn, ckpt
