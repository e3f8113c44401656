"""The IDX loader (bitsnn.data): real MNIST, custom sets, every refusal, search order, downloads."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import shutil
import socket
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import bitsnn.data
from bitsnn import BitsnnError
from bitsnn.data import MNIST_FILES, IDXError, download_mnist, find_data_dir, load_dataset, read_idx

STEMS = tuple(MNIST_FILES)
ARRAY_FIELD = {
    "train-images-idx3-ubyte": "train_images",
    "train-labels-idx1-ubyte": "train_labels",
    "t10k-images-idx3-ubyte": "test_images",
    "t10k-labels-idx1-ubyte": "test_labels",
}
TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def flip_bytes(path: Path, offset: int, count: int = 1) -> None:
    blob = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def assert_arrays(ds, arrays) -> None:
    for stem, field in ARRAY_FIELD.items():
        got = getattr(ds, field)
        assert got.dtype == np.uint8, field
        np.testing.assert_array_equal(got, arrays[stem], err_msg=field)


def test_idx_error_is_a_bitsnn_error():
    assert issubclass(IDXError, BitsnnError)


# --- the real MNIST -----------------------------------------------------------------------------


def test_mnist_shapes_and_dtypes(mnist):
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_labels.shape == (10000,)
    for arr in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
        assert arr.dtype == np.uint8
    assert mnist.num_classes == 10


def test_mnist_label_histograms(mnist):
    assert np.bincount(mnist.test_labels, minlength=10).tolist() == TEST_HISTOGRAM
    train = np.bincount(mnist.train_labels, minlength=10)
    assert len(train) == 10
    assert train.sum() == 60000
    assert all(5400 <= c <= 6800 for c in train), train.tolist()


def test_mnist_checksums_verified(mnist, mnist_dir):
    assert mnist.name == "mnist"
    assert mnist.verified
    assert mnist.source == mnist_dir
    assert "verified" in mnist.summary()
    assert str(TEST_HISTOGRAM) in mnist.summary()


def test_mnist_decompressed_copies_verify(mnist, mnist_dir, tmp_path):
    for stem in STEMS:
        (tmp_path / stem).write_bytes(gzip.decompress((mnist_dir / (stem + ".gz")).read_bytes()))
    ds = load_dataset(tmp_path, download=False)
    assert ds.name == "mnist"
    assert ds.source == tmp_path
    assert_arrays(ds, {stem: getattr(mnist, field) for stem, field in ARRAY_FIELD.items()})


# --- a custom IDX set ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True, ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]],
                         ids=["raw", "gz", "mixed"])
def test_custom_set_loads_exactly(tmp_path, custom_arrays, write_set, gz):
    write_set(tmp_path, custom_arrays, gz=gz)
    ds = load_dataset(tmp_path, download=False)
    assert ds.name == "custom"
    assert not ds.verified
    assert ds.source == tmp_path
    assert ds.train_images.shape == (50, 5, 7)
    assert ds.test_images.shape == (20, 5, 7)
    assert ds.num_classes == 4
    assert_arrays(ds, custom_arrays)
    assert "custom" in ds.summary()


@pytest.mark.parametrize("sep", [(".", "-"), ("-", "."), (".", ".")], ids=["dot-idx", "dot-ubyte", "dot-both"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_custom_set_with_dotted_names(tmp_path, custom_arrays, write_set, sep, gz):
    # e.g. "train-images.idx3-ubyte", the names of widespread MNIST copies
    names = {s: s.replace("-idx", sep[0] + "idx").replace("-ubyte", sep[1] + "ubyte") for s in STEMS}
    write_set(tmp_path, custom_arrays, gz=gz, names=names)
    assert find_data_dir(tmp_path) == tmp_path
    ds = load_dataset(tmp_path, download=False)
    assert ds.name == "custom"
    assert_arrays(ds, custom_arrays)


def test_read_idx_other_types(tmp_path, to_idx):
    arr = (np.arange(-6, 6).reshape(3, 4) * 1000).astype(">i4")
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(to_idx(arr))
    got = read_idx(path)
    assert got.dtype == np.dtype(np.int32)
    np.testing.assert_array_equal(got, arr)


# --- refusals -----------------------------------------------------------------------------------


def _load_error(directory) -> str:
    with pytest.raises(IDXError) as info:
        load_dataset(directory, download=False)
    return str(info.value)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_truncated_file(tmp_path, custom_arrays, write_set, gz):
    paths = write_set(tmp_path, custom_arrays, gz=gz)
    victim = paths["train-images-idx3-ubyte"]
    blob = victim.read_bytes()
    victim.write_bytes(blob[: len(blob) // 2])
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "truncated" in msg


def test_truncated_header(tmp_path, custom_arrays, write_set):
    victim = write_set(tmp_path, custom_arrays)["t10k-labels-idx1-ubyte"]
    victim.write_bytes(b"\0\0")
    msg = _load_error(tmp_path)
    assert str(victim) in msg and "too short" in msg
    victim.write_bytes(b"\0\0\x08\x01\0\0")  # promises one 4-byte size, has 2 bytes of it
    msg = _load_error(tmp_path)
    assert str(victim) in msg and "truncated IDX header" in msg


def test_corrupt_gzip(tmp_path, custom_arrays, write_set):
    paths = write_set(tmp_path, custom_arrays, gz=True)
    victim = paths["train-labels-idx1-ubyte"]
    flip_bytes(victim, victim.stat().st_size // 2, count=4)
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "gzip" in msg


def test_corrupt_real_mnist_gzip(tmp_path, mnist_dir):
    for stem in STEMS:
        shutil.copyfile(mnist_dir / (stem + ".gz"), tmp_path / (stem + ".gz"))
    victim = tmp_path / "t10k-images-idx3-ubyte.gz"
    flip_bytes(victim, victim.stat().st_size // 2, count=8)
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "gzip" in msg


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_wrong_magic(tmp_path, custom_arrays, write_set, gz):
    paths = write_set(tmp_path, custom_arrays)
    victim = paths["train-labels-idx1-ubyte"]
    data = b"\x12\x34\x08\x01" + victim.read_bytes()[4:]
    if gz:
        victim.unlink()
        victim = victim.with_name(victim.name + ".gz")
        victim.write_bytes(gzip.compress(data))
    else:
        victim.write_bytes(data)
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "not an IDX file" in msg and "0x12340801" in msg


def test_unknown_type_code(tmp_path, custom_arrays, write_set):
    paths = write_set(tmp_path, custom_arrays)
    victim = paths["t10k-images-idx3-ubyte"]
    victim.write_bytes(b"\0\0\x07\x03" + victim.read_bytes()[4:])
    msg = _load_error(tmp_path)
    assert str(victim) in msg and "not an IDX file" in msg


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_trailing_bytes(tmp_path, custom_arrays, write_set, to_idx, gz):
    paths = write_set(tmp_path, custom_arrays, gz=gz)
    victim = paths["t10k-images-idx3-ubyte"]
    data = to_idx(custom_arrays["t10k-images-idx3-ubyte"]) + b"\0\1\2"
    victim.write_bytes(gzip.compress(data) if gz else data)
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "3 unexpected bytes" in msg


def test_mnist_sized_file_with_flipped_byte_is_refused(tmp_path, mnist_dir):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        shutil.copyfile(mnist_dir / (stem + ".gz"), tmp_path / (stem + ".gz"))
    raw = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert len(raw) == MNIST_FILES["t10k-labels-idx1-ubyte"]["raw_size"]
    raw[8 + 1234] = (raw[8 + 1234] + 1) % 10  # still a valid label: only the checksum can tell
    victim = tmp_path / "t10k-labels-idx1-ubyte"
    victim.write_bytes(bytes(raw))
    msg = _load_error(tmp_path)
    assert str(victim) in msg
    assert "damaged copy of MNIST" in msg and "eighth(s) 1 of 8 differ" in msg


def test_mnist_sized_other_dataset_is_custom(tmp_path, write_set):
    """A set in MNIST's exact sizes but with other contents (Fashion-MNIST's case) is accepted as custom."""
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(60000, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=60000, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(10000, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=10000, dtype=np.uint8),
    }
    write_set(tmp_path, arrays)
    for stem, arr in arrays.items():
        assert (tmp_path / stem).stat().st_size == MNIST_FILES[stem]["raw_size"]
    ds = load_dataset(tmp_path, download=False)
    assert ds.name == "custom"
    assert np.array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize(
    "stem, count, words",
    [("train-labels-idx1-ubyte", 49, "50 training images but 49 training labels"),
     ("t10k-labels-idx1-ubyte", 21, "20 test images but 21 test labels")],
)
def test_image_label_count_mismatch(tmp_path, custom_arrays, write_set, stem, count, words):
    arrays = dict(custom_arrays)
    arrays[stem] = (np.arange(count) % 4).astype(np.uint8)
    write_set(tmp_path, arrays, gz=True)
    msg = _load_error(tmp_path)
    assert str(tmp_path) in msg
    assert words in msg


def test_image_shape_mismatch(tmp_path, custom_arrays, write_set):
    arrays = dict(custom_arrays)
    arrays["t10k-images-idx3-ubyte"] = np.zeros((20, 7, 5), np.uint8)
    write_set(tmp_path, arrays)
    msg = _load_error(tmp_path)
    assert str(tmp_path) in msg and "(5, 7)" in msg and "(7, 5)" in msg


def test_wrong_dtype_or_rank(tmp_path, custom_arrays, write_set):
    arrays = dict(custom_arrays)
    arrays["train-images-idx3-ubyte"] = custom_arrays["train-images-idx3-ubyte"].view(np.int8)
    paths = write_set(tmp_path, arrays)
    msg = _load_error(tmp_path)
    assert str(paths["train-images-idx3-ubyte"]) in msg and "unsigned bytes" in msg

    arrays["train-images-idx3-ubyte"] = custom_arrays["train-images-idx3-ubyte"].reshape(50, 35)
    paths = write_set(tmp_path, arrays)
    msg = _load_error(tmp_path)
    assert str(paths["train-images-idx3-ubyte"]) in msg and "expected 3-D" in msg


def test_missing_file_in_explicit_data_dir(tmp_path, custom_arrays, write_set, monkeypatch):
    # Even with a complete set elsewhere in the search order, an explicit directory must hold the files.
    write_set(tmp_path / "complete", custom_arrays)
    monkeypatch.setenv("BITSNN_DATA", str(tmp_path / "complete"))
    paths = write_set(tmp_path / "given", custom_arrays, gz=True)
    paths["t10k-labels-idx1-ubyte"].unlink()
    msg = _load_error(tmp_path / "given")
    assert str(tmp_path / "given") in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert "train-images" not in msg


def test_nonexistent_data_dir(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    msg = _load_error(missing)
    assert str(missing) in msg
    assert "no such directory" in msg


# --- search order -------------------------------------------------------------------------------


@pytest.fixture
def isolated_search(tmp_path, monkeypatch):
    """Point every searched place into tmp_path: returns (env dir, repo-shared dir, cache dir)."""
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    shared = tmp_path / "beside-repo"
    monkeypatch.setenv("BITSNN_DATA", str(env_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(bitsnn.data, "_repo_shared_mnist", lambda: shared)
    return env_dir, shared, tmp_path / "xdg" / "bitsnn" / "mnist"


def test_bitsnn_data_env_is_used(isolated_search, custom_arrays, write_set):
    env_dir, shared, cache = isolated_search
    write_set(env_dir, custom_arrays, gz=True)
    write_set(shared, custom_arrays)  # later in the search order: must not win
    assert find_data_dir() == env_dir
    ds = load_dataset(download=False)
    assert ds.name == "custom"
    assert ds.source == env_dir
    assert_arrays(ds, custom_arrays)


def test_explicit_data_dir_beats_env(isolated_search, custom_arrays, write_set, tmp_path):
    env_dir, _, _ = isolated_search
    write_set(env_dir, custom_arrays)
    explicit = tmp_path / "explicit"
    other = {k: v.copy() for k, v in custom_arrays.items()}
    other["train-images-idx3-ubyte"] ^= 0xFF
    write_set(explicit, other)
    ds = load_dataset(explicit, download=False)
    assert ds.source == explicit
    assert_arrays(ds, other)


def test_search_falls_through_in_order(isolated_search, custom_arrays, write_set):
    env_dir, shared, cache = isolated_search
    write_set(env_dir, {k: v for k, v in custom_arrays.items() if k != "t10k-labels-idx1-ubyte"})  # incomplete
    write_set(cache, custom_arrays, gz=True)
    assert load_dataset(download=False).source == cache
    write_set(shared, custom_arrays)
    assert load_dataset(download=False).source == shared


def test_nothing_found_names_every_place(isolated_search):
    env_dir, shared, cache = isolated_search
    with pytest.raises(IDXError) as info:
        load_dataset(download=False)
    msg = str(info.value)
    assert "not found" in msg
    for place in (env_dir, shared, cache):
        assert str(place) in msg
    assert msg.index(str(env_dir)) < msg.index(str(shared)) < msg.index(str(cache))
    assert find_data_dir() is None


# --- downloads from a local mirror --------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL (ending in "/")."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def good_mirror(tmp_path_factory, mnist_dir, no_proxy):
    root = tmp_path_factory.mktemp("good-mirror")
    for stem in STEMS:
        shutil.copyfile(mnist_dir / (stem + ".gz"), root / (stem + ".gz"))
    with serve(root) as url:
        yield url


def corrupted_mirror_dir(tmp_path_factory, mnist_dir, corrupt=STEMS) -> Path:
    root = tmp_path_factory.mktemp("bad-mirror")
    for stem in STEMS:
        dest = root / (stem + ".gz")
        shutil.copyfile(mnist_dir / (stem + ".gz"), dest)
        if stem in corrupt:
            flip_bytes(dest, dest.stat().st_size // 2)
    return root


def assert_official(target: Path) -> None:
    assert sorted(p.name for p in target.iterdir()) == sorted(s + ".gz" for s in STEMS)
    for stem, ref in MNIST_FILES.items():
        assert hashlib.sha256((target / (stem + ".gz")).read_bytes()).hexdigest() == ref["gz_sha256"]


def test_download_from_local_mirror(tmp_path, good_mirror):
    target = tmp_path / "dl"
    assert download_mnist(target, mirrors=(good_mirror,), progress=False) == target
    assert_official(target)
    ds = load_dataset(target, download=False)
    assert ds.name == "mnist"
    assert np.bincount(ds.test_labels, minlength=10).tolist() == TEST_HISTOGRAM


def test_download_skips_files_already_verified(tmp_path, mnist_dir, no_proxy):
    target = tmp_path / "dl"
    target.mkdir()
    for stem in STEMS:
        shutil.copyfile(mnist_dir / (stem + ".gz"), target / (stem + ".gz"))
    # No mirror is reachable, yet nothing needs fetching.
    assert download_mnist(target, mirrors=(closed_port_url(),), progress=False) == target
    assert_official(target)


def test_download_corrupt_mirror_leaves_nothing(tmp_path, tmp_path_factory, mnist_dir, no_proxy):
    target = tmp_path / "dl"
    target.mkdir()
    with serve(corrupted_mirror_dir(tmp_path_factory, mnist_dir)) as url:
        with pytest.raises(IDXError) as info:
            download_mnist(target, mirrors=(url,), progress=False)
    assert "checksum" in str(info.value)
    assert url in str(info.value)
    assert list(target.iterdir()) == []


def test_download_one_corrupt_file_is_not_written(tmp_path, tmp_path_factory, mnist_dir, no_proxy):
    target = tmp_path / "dl"
    bad = corrupted_mirror_dir(tmp_path_factory, mnist_dir, corrupt=("t10k-images-idx3-ubyte",))
    with serve(bad) as url:
        with pytest.raises(IDXError, match="checksum"):
            download_mnist(target, mirrors=(url,), progress=False)
    # The files before it were verified and kept; the bad one and any temporary file are gone.
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_download_falls_through_a_down_mirror(tmp_path, good_mirror):
    target = tmp_path / "dl"
    download_mnist(target, mirrors=(closed_port_url(), good_mirror), progress=False)
    assert_official(target)


def test_download_falls_through_a_mirror_without_the_files(tmp_path, good_mirror):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    target = tmp_path / "dl"
    with serve(empty) as url:
        download_mnist(target, mirrors=(url, good_mirror), progress=False)
    assert_official(target)


def test_download_all_mirrors_down(tmp_path, no_proxy):
    target = tmp_path / "dl"
    urls = (closed_port_url(), closed_port_url())
    with pytest.raises(IDXError) as info:
        download_mnist(target, mirrors=urls, progress=False)
    for url in urls:
        assert url in str(info.value)
    assert not target.exists() or list(target.iterdir()) == []


def test_load_dataset_downloads_into_the_cache(isolated_search, monkeypatch, good_mirror):
    env_dir, shared, cache = isolated_search
    monkeypatch.delenv("BITSNN_DATA")
    ds = load_dataset(mirrors=(good_mirror,), progress=False)
    assert ds.name == "mnist"
    assert ds.source == cache
    assert_official(cache)


def test_load_dataset_download_failure_names_places(isolated_search, no_proxy):
    env_dir, shared, cache = isolated_search
    with pytest.raises(IDXError) as info:
        load_dataset(mirrors=(closed_port_url(),), progress=False)
    msg = str(info.value)
    assert "download failed" in msg
    for place in (env_dir, shared, cache):
        assert str(place) in msg


def test_read_idx_header_parsing(tmp_path):
    # A hand-written header: 2 x 3 uint8, then the six bytes.
    path = tmp_path / "tiny"
    path.write_bytes(struct.pack(">HBBII", 0, 8, 2, 2, 3) + bytes(range(6)))
    np.testing.assert_array_equal(read_idx(path), np.arange(6, dtype=np.uint8).reshape(2, 3))
