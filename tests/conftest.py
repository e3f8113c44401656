"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The repository root (the folder holding pyproject.toml).
REPO = Path(__file__).resolve().parents[1]

#: The shared MNIST copy beside the repository: <repo>/../shared/data/mnist.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

MNIST_GZ_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The directory with the four official MNIST ``.gz`` files; the test is skipped without it."""
    missing = [n for n in MNIST_GZ_NAMES if not (SHARED_MNIST / n).is_file()]
    if missing:
        pytest.skip(f"real MNIST files not available at {SHARED_MNIST} (missing {', '.join(missing)})")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """MNIST loaded once per session from the shared copy."""
    from bitsnn.data import load_dataset

    return load_dataset(mnist_dir, download=False)
