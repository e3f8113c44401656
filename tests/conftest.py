"""Fixtures shared by the test suite."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable
import os
from pathlib import Path

import numpy as np
import pytest

#: The repository root (the folder holding pyproject.toml).
REPO = Path(__file__).resolve().parents[1]

#: The shared MNIST copy beside the repository: <repo>/../shared/data/mnist.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The directory with the four official MNIST ``.gz`` files; the test is skipped without it."""
    missing = [s + ".gz" for s in IDX_STEMS if not (SHARED_MNIST / (s + ".gz")).is_file()]
    if missing:
        pytest.skip(f"real MNIST files not available at {SHARED_MNIST} (missing {', '.join(missing)})")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """MNIST loaded once per session from the shared copy."""
    from bitsnn.data import load_dataset

    return load_dataset(mnist_dir, download=False)


@pytest.fixture(scope="session")
def mnist_digits(tmp_path_factory, mnist) -> Path:
    """A data directory of real digits: MNIST's first 800 training and 200 test images."""
    d = tmp_path_factory.mktemp("digits")
    write_idx_set(d, {"train-images-idx3-ubyte": mnist.train_images[:800],
                      "train-labels-idx1-ubyte": mnist.train_labels[:800],
                      "t10k-images-idx3-ubyte": mnist.test_images[:200],
                      "t10k-labels-idx1-ubyte": mnist.test_labels[:200]})
    return d


# --- small IDX sets written by the tests themselves -------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr`` (uint8, int8 or big-endian int32)."""
    code = _IDX_CODES[arr.dtype]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def small_arrays(n_train=50, n_test=20, h=5, w=7, classes=4, seed=0) -> dict[str, np.ndarray]:
    """A tiny custom set, ``stem -> uint8 array``, with every class in both splits."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % classes).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.permutation(np.arange(n_test) % classes).astype(np.uint8),
    }


def write_idx_set(directory, arrays: dict, gz: bool | Iterable[str] = False, names: dict | None = None):
    """Write ``arrays`` as IDX files into ``directory``; return ``stem -> written path``.

    ``gz``: True gzips every file, an iterable of stems gzips just those.
    ``names``: optional ``stem -> file name`` (without ``.gz``) for non-standard names.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gz_stems = set(arrays) if gz is True else set(gz or ())
    written = {}
    for stem, arr in arrays.items():
        data = idx_bytes(arr)
        name = (names or {}).get(stem, stem)
        if stem in gz_stems:
            path = directory / (name + ".gz")
            path.write_bytes(gzip.compress(data, mtime=0))
        else:
            path = directory / name
            path.write_bytes(data)
        written[stem] = path
    return written


@pytest.fixture
def custom_arrays() -> dict[str, np.ndarray]:
    """50 train / 20 test images of 5x7, labels 0..3."""
    return small_arrays()


@pytest.fixture
def write_set():
    """The :func:`write_idx_set` helper, for tests in any module."""
    return write_idx_set


@pytest.fixture
def data_dir(tmp_path, custom_arrays, write_set) -> Path:
    """A data directory of 50 train / 20 test images of 5x7, 4 classes, written as IDX files."""
    write_set(tmp_path / "data", custom_arrays)
    return tmp_path / "data"


@pytest.fixture
def model_file(tmp_path) -> Path:
    """A small valid hardware model of 5x7 images (the custom IDX set's shape): 35-8-4, random."""
    from bitsnn.hwmodel import random_model

    path = tmp_path / "m.bsnn"
    random_model(np.random.default_rng(0), [35, 8, 4], input_shape=(5, 7)).save(path)
    return path


@pytest.fixture
def checkpoint(tmp_path, data_dir) -> Path:
    """A real checkpoint: 35-8-4 trained one epoch on ``data_dir`` by ``bitsnn train``."""
    pytest.importorskip("torch")
    from bitsnn.cli import main

    out = tmp_path / "t.ckpt"
    assert main(["train", "--preset", "35-8-4", "--epochs", "1", "--data-dir", str(data_dir), "-o", str(out)]) == 0
    return out


@pytest.fixture
def to_idx():
    """The :func:`idx_bytes` helper, for tests in any module."""
    return idx_bytes


#: Where trained test models are cached between runs (keyed by config and model/ source hash).
TEST_MODEL_CACHE = REPO / ".cache" / "test-models"


@pytest.fixture(scope="session")
def tiny_model_files(mnist_dir):
    """(.bsnn path, checkpoint path) of the cached test tiny model; see ``tiny_hwmodel``."""
    pytest.importorskip("torch")
    from bitsnn.model.cache import cached_tiny_model

    return cached_tiny_model(TEST_MODEL_CACHE, mnist_dir, log=lambda m: None)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model_files) -> Path:
    """Path of the cached test tiny model's hardware-model file (.bsnn); see ``tiny_hwmodel``."""
    return tiny_model_files[0]


@pytest.fixture(scope="session")
def tiny_hwmodel(tiny_model_path):
    """A real trained BitSNN as a loaded :class:`bitsnn.hwmodel.HardwareModel`.

    The ``tiny`` architecture (576-160-10 on the central 24x24 window, spike input at 64, box
    surrogate, seed 0) trained for 3 epochs on all of MNIST without augmentation
    (``meta["test_accuracy"]``), then exported; export checked it against the golden model on all
    10,000 test images. Trained once and cached under ``<repo>/.cache/test-models/``, keyed by a
    hash of the training config and the model/ source (a file lock keeps xdist workers from
    training twice); the first run takes about half a minute.
    """
    from bitsnn.hwmodel import HardwareModel

    return HardwareModel.load(tiny_model_path)


@pytest.fixture(scope="session")
def conv_tiny_hwmodel(mnist_dir):
    """A real trained convolutional BitSNN: the ``conv-tiny`` architecture (784-c8-c32-10, 8-bit
    pixel input, box surrogate, seed 0) trained for 2 epochs without shifts, then exported (checked
    against the golden model on all 10,000 test images). Cached like ``tiny_hwmodel``; the first
    run takes about a minute."""
    pytest.importorskip("torch")
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.model.cache import cached_model

    return HardwareModel.load(cached_model("conv-tiny", TEST_MODEL_CACHE, mnist_dir, log=lambda m: None)[0])


@pytest.fixture(scope="session")
def lif_tiny_hwmodel(mnist_dir):
    """A real trained BitSNN over time: ``conv-tiny``'s layers (784-c8-c32-10, 8-bit pixel input)
    with lif neurons over 3 steps of direct input, one epoch (``TEST_LIF_TINY_CONFIG``), exported
    (checked against the golden model on every spike of every step of all 10,000 test images).
    Cached like ``tiny_hwmodel``; the first run takes about two minutes."""
    pytest.importorskip("torch")
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.model.cache import cached_model

    return HardwareModel.load(cached_model("lif-tiny", TEST_MODEL_CACHE, mnist_dir, log=lambda m: None)[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``make test`` (and so CI), which installs every extra and has the MNIST files, a test
    that skips (a missing torch, nir or data set) is a failure: an ``importorskip`` may not hide a
    broken install. A bare ``pytest`` elsewhere still skips with its reason."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("BITSNN_NO_SKIPS") and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under make test (BITSNN_NO_SKIPS): {reason}"
