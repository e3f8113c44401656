"""IDX data sets (MNIST and any other set in the same four-file layout), NumPy only.

Where the files are looked for, in order:

1. the directory given by the caller (``--data-dir``),
2. ``$BITSNN_DATA``,
3. ``../shared/data/mnist`` beside the repository,
4. the user cache directory (``$XDG_CACHE_HOME/bitsnn/mnist``, default ``~/.cache/bitsnn/mnist``),

and, when none of them holds the files and downloading is allowed, MNIST is downloaded into the
cache directory from the standard mirrors. A directory holding the four standard file names
(gzipped or raw) is accepted: if its files match MNIST's official checksums it is MNIST; a file of
MNIST's exact size whose checksum differs but which still shares a part with the official file is a
damaged copy and is refused; anything else is a custom data set (Fashion-MNIST, say), accepted after
its headers, counts and shapes are validated.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import BitsnnError
from .fileio import atomic_path

__all__ = [
    "Dataset",
    "IDXError",
    "read_idx",
    "load_dataset",
    "find_data_dir",
    "dataset_files",
    "data_inputs",
    "download_mnist",
    "MNIST_FILES",
    "MNIST_MIRRORS",
]


class IDXError(BitsnnError):
    """A missing, truncated or malformed IDX file."""


#: The four standard names, each with the official gzip's md5/sha256/size and the
#: sha256 and size of its decompressed (raw) bytes.
MNIST_FILES = {
    "train-images-idx3-ubyte": dict(
        gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        gz_size=9_912_422,
        raw_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        raw_size=47_040_016,
    ),
    "train-labels-idx1-ubyte": dict(
        gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
        gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        gz_size=28_881,
        raw_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        raw_size=60_008,
    ),
    "t10k-images-idx3-ubyte": dict(
        gz_md5="9fb629c4189551a2d022fa330f9573f3",
        gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        gz_size=1_648_877,
        raw_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        raw_size=7_840_016,
    ),
    "t10k-labels-idx1-ubyte": dict(
        gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
        gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        gz_size=4_542,
        raw_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        raw_size=10_008,
    ),
}

#: Standard MNIST mirrors, tried in order (each serves the four ``.gz`` files).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class Dataset:
    """A four-part IDX image classification set, as uint8 arrays.

    ``train_images``/``test_images``: (N, H, W) uint8; ``*_labels``: (N,) uint8.
    ``name`` is ``"mnist"`` when every file matched MNIST's official checksums, else ``"custom"``.
    """

    name: str
    source: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def verified(self) -> bool:
        return self.name == "mnist"

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(initial=0), self.test_labels.max(initial=0))) + 1

    def summary(self) -> str:
        h, w = self.train_images.shape[1:]
        hist = np.bincount(self.test_labels, minlength=self.num_classes)
        return (
            f"{self.name} from {self.source}: train {len(self.train_images)} x {h}x{w}, "
            f"test {len(self.test_images)} x {h}x{w}, {self.num_classes} classes, "
            f"checksums {'verified' if self.verified else 'not MNIST (custom set)'}; "
            f"test labels per class {hist.tolist()}"
        )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise IDXError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Parse one IDX file (raw or ``.gz``) and return its array.

    The header must be two zero bytes, a known type code and a dimension count; the payload
    must hold exactly the number of items the header's sizes multiply to.
    """
    path = Path(path)
    if data is None:
        data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise IDXError(f"{path}: not an IDX file (magic 0x{int.from_bytes(data[:4], 'big'):08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python integers: a huge header cannot overflow
    actual = len(data) - header
    if actual < expected:
        raise IDXError(f"{path}: truncated: header promises {expected} data bytes, file has {actual}")
    if actual > expected:
        raise IDXError(f"{path}: {actual - expected} unexpected bytes after the data")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _locate(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    # Copies of MNIST found in the wild have "." for either or both of the last two "-"
    # ("train-images.idx3-ubyte", "train-images-idx3.ubyte", "train-images.idx3.ubyte").
    dotted_idx = stem.replace("-idx", ".idx")
    for alt in (dotted_idx, stem.replace("-ubyte", ".ubyte"), dotted_idx.replace("-ubyte", ".ubyte")):
        for name in (alt, alt + ".gz"):
            p = directory / name
            if p.is_file():
                return p
    return None


def _has_dataset(directory: Path) -> bool:
    return directory.is_dir() and all(_locate(directory, stem) is not None for stem in MNIST_FILES)


def _repo_shared_mnist() -> Path:
    # <repo>/bitsnn/data.py -> <repo>/../shared/data/mnist
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bitsnn" / "mnist"


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each with the reason it is searched."""
    places = []
    if data_dir is not None:
        places.append(("--data-dir", Path(data_dir)))
    env = os.environ.get("BITSNN_DATA")
    if env:
        places.append(("$BITSNN_DATA", Path(env)))
    places.append(("beside the repository", _repo_shared_mnist()))
    places.append(("user cache", cache_dir()))
    return places


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first searched directory holding all four files, or None.

    An explicitly given ``data_dir`` must hold them: if it does not, that is an error rather
    than a silent fallback to another place.
    """
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise IDXError(f"--data-dir {d}: no such directory")
        missing = [s for s in MNIST_FILES if _locate(d, s) is None]
        if missing:
            raise IDXError(f"--data-dir {d}: missing {', '.join(m + '[.gz]' for m in missing)}")
        return d
    for _, d in candidate_dirs():
        if _has_dataset(d):
            return d
    return None


#: SHA-256 (first 16 hex digits) of each eighth of every raw MNIST file. A file of MNIST's size
#: whose whole checksum differs but some eighth matches is a damaged MNIST copy and is refused; one
#: matching no eighth is another data set in MNIST's format (Fashion-MNIST, KMNIST) and is accepted.
_MNIST_PARTS = {
    "train-images-idx3-ubyte": ("8c591a6c3d622483", "18347f8e93ca765b", "acb8b4d2e55c524f", "91e977d8f2fe110f",
                                "77b83f0f9d4a57de", "8bb3d3d452d8e17d", "909aeb5cc3c65f78", "b08320be298bbf88"),
    "train-labels-idx1-ubyte": ("92eb305e23554d19", "fc037de95425b63a", "c805feb2bb9fe86b", "22b0d15a91c551b5",
                                "94467d0f73b67bcf", "0f175b3997f4652e", "3bed31ca5d9dcc43", "63e0572fc2fca11a"),
    "t10k-images-idx3-ubyte": ("deb1180ad7311c4f", "3de8a6cefc506f7a", "cb82caaac5cb8d96", "fe2a923b8114c5ef",
                               "4ccf7bdf13638727", "9070973ec8b2c7a9", "3b328c37b07cb414", "c7aa717562d1a924"),
    "t10k-labels-idx1-ubyte": ("9a53874f95586e40", "40b646187e1b8b55", "13d8adabdf3adfed", "2985730822cdfc0d",
                               "fd6ce439458b09dc", "073e06ffd36c9bb0", "46cfc4951f42bafd", "fa6e1da86871af1b"),
}


def dataset_files(data_dir: str | os.PathLike | None = None) -> list[Path] | None:
    """The four IDX files :func:`load_dataset` would read for ``data_dir`` (train images, train
    labels, test images, test labels), or None when none of the places it looks holds them."""
    directory = find_data_dir(data_dir)
    return None if directory is None else [_locate(directory, stem) for stem in MNIST_FILES]


def data_inputs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The IDX files a command may read for ``data_dir``, for checking that no output overwrites
    them: the four files :func:`dataset_files` finds and, in a given directory, every file named
    like one of them (raw or gzipped). Never raises: a bad ``data_dir`` is reported by the loader."""
    try:
        found = list(dataset_files(data_dir) or ())
    except BitsnnError:  # the loader says what is wrong with data_dir, when the command gets there
        found = []
    if data_dir is not None and Path(data_dir).is_dir():
        found += [p for p in Path(data_dir).iterdir() if p.name.removesuffix(".gz") in MNIST_FILES]
    return found


def _verify_mnist(path: Path, stem: str, data: bytes) -> bool:
    """True if ``data`` (the decompressed file) is the official MNIST file.

    False for another data set. Raises for a damaged MNIST copy: MNIST's size, a different
    checksum, yet some eighth of it identical to the official file.
    """
    ref = MNIST_FILES[stem]
    if len(data) != ref["raw_size"]:
        return False
    if hashlib.sha256(data).hexdigest() == ref["raw_sha256"]:
        return True
    n = len(data)
    parts = [hashlib.sha256(data[i * n // 8 : (i + 1) * n // 8]).hexdigest()[:16] for i in range(8)]
    differ = [i for i, (a, b) in enumerate(zip(parts, _MNIST_PARTS[stem])) if a != b]
    if len(differ) < 8:
        raise IDXError(
            f"{path}: a damaged copy of MNIST's {stem} (checksum mismatch; eighth(s) "
            f"{', '.join(str(i + 1) for i in differ)} of 8 differ from the official file)"
        )
    return False


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
    progress: bool | None = None,
) -> Dataset:
    """Load MNIST (or a custom IDX set) as uint8 arrays.

    ``download``: None means "download if nothing is found locally"; False never downloads.
    ``progress``: download bars (default: only when stderr is a terminal).
    """
    directory = find_data_dir(data_dir)
    if directory is None:
        if download is False:
            raise IDXError(_not_found_message(data_dir))
        try:
            directory = download_mnist(cache_dir(), mirrors=mirrors, progress=progress)
        except IDXError as e:
            raise IDXError(f"{_not_found_message(data_dir)}; download failed: {e}") from None

    arrays = {}
    verified = True
    for stem in MNIST_FILES:
        path = _locate(directory, stem)
        data = _read_bytes(path)
        arrays[stem] = read_idx(path, data)
        verified &= _verify_mnist(path, stem, data)

    tr_x, tr_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    te_x, te_y = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for stem, arr, nd in (
        ("train-images-idx3-ubyte", tr_x, 3),
        ("t10k-images-idx3-ubyte", te_x, 3),
        ("train-labels-idx1-ubyte", tr_y, 1),
        ("t10k-labels-idx1-ubyte", te_y, 1),
    ):
        if arr.ndim != nd or arr.dtype != np.uint8:
            raise IDXError(
                f"{_locate(directory, stem)}: expected {nd}-D unsigned bytes, got {arr.ndim}-D {arr.dtype}"
            )
    if len(tr_x) != len(tr_y):
        raise IDXError(f"{directory}: {len(tr_x)} training images but {len(tr_y)} training labels")
    if len(te_x) != len(te_y):
        raise IDXError(f"{directory}: {len(te_x)} test images but {len(te_y)} test labels")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise IDXError(f"{directory}: training images are {tr_x.shape[1:]} but test images {te_x.shape[1:]}")
    if len(tr_x) == 0 or len(te_x) == 0:
        raise IDXError(f"{directory}: empty training or test set")
    return Dataset("mnist" if verified else "custom", directory, tr_x, tr_y, te_x, te_y)


def _not_found_message(data_dir) -> str:
    looked = "; ".join(f"{why}: {p}" for why, p in candidate_dirs(data_dir))
    return f"MNIST not found (looked in {looked})"


def download_mnist(
    target: str | os.PathLike, *, mirrors: tuple[str, ...] = MNIST_MIRRORS, progress: bool | None = None
) -> Path:
    """Download the four MNIST ``.gz`` files into ``target``, verifying each checksum.

    Each file is written atomically, so an interrupted download leaves nothing half-written.
    ``progress``: a live bar per file on a terminal (default: when stderr is one); otherwise one
    line per file on stderr.
    """
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()

    target = Path(target)
    errors = []
    for stem, ref in MNIST_FILES.items():
        dest = target / (stem + ".gz")
        if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == ref["gz_sha256"]:
            continue
        for mirror in mirrors:
            url = mirror + stem + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    total = int(r.headers.get("Content-Length") or ref["gz_size"])
                    chunks = []
                    with tqdm(total=total, unit="B", unit_scale=True, desc=stem, disable=not progress) as bar:
                        while chunk := r.read(1 << 16):
                            chunks.append(chunk)
                            bar.update(len(chunk))
                blob = b"".join(chunks)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            if hashlib.sha256(blob).hexdigest() != ref["gz_sha256"]:
                errors.append(f"{url}: checksum mismatch")
                continue
            with atomic_path(dest) as tmp:
                tmp.write_bytes(blob)
            if not progress:
                print(f"downloaded {url} ({len(blob):,} bytes, checksum verified)", file=sys.stderr, flush=True)
            break
        else:
            raise IDXError("; ".join(errors[-len(mirrors):]) or f"no mirror served {stem}.gz")
    return target


def test_subset(n: int, model, data_dir: str | os.PathLike | None = None, *,
                data: Dataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test images of ``data`` (default: loaded from ``data_dir``) as a hardware
    model's first-layer pixels ((n, model.n_inputs) uint8: its input crop applied), and their
    labels (int64)."""
    n = int(n)
    if n < 1:
        raise BitsnnError(f"--images must be at least 1, got {n}")
    data = data if data is not None else load_dataset(data_dir)
    if n > len(data.test_images):
        raise BitsnnError(f"--images {n}: the test set has {len(data.test_images)} images")
    images, labels = data.test_images[:n], data.test_labels[:n].astype(np.int64)
    try:
        images = model.prepare_images(images)
    except ValueError as e:
        raise BitsnnError(f"the data set's images do not suit the model: {e}") from None
    return images, labels


def load_spikes(path: str | os.PathLike, model, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``given``-coded model's inputs from a user's file: every step's spikes, (N, T,
    *input_shape) or (N, T, inputs) uint8 0/1, in a ``.npy`` file or as ``spikes`` in a ``.npz``
    (with its labels, (N,) integers, as ``labels`` when it has them). Returns the first ``n``
    (all by default, or when it holds fewer) and their labels (None without). Anything else is a :class:`BitsnnError`
    naming what is wrong, before any work."""
    p = Path(path)
    if not p.is_file():
        raise BitsnnError(f"--spikes {p}: no such file")
    try:
        with open(p, "rb") as fh:
            f = np.load(fh, allow_pickle=False)
            if isinstance(f, np.lib.npyio.NpzFile):
                with f:
                    if "spikes" not in f.files:
                        raise BitsnnError(f"--spikes {p}: the .npz holds {', '.join(f.files) or 'nothing'}, "
                                          "not 'spikes'")
                    spikes, labels = f["spikes"], (f["labels"] if "labels" in f.files else None)
            else:
                spikes, labels = f, None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BitsnnError(f"--spikes {p}: not a .npy array or an .npz with 'spikes' ({e})") from None
    spikes = np.asarray(spikes)
    T, shape = model.timesteps, tuple(model.input_shape)
    if spikes.ndim < 3 or spikes.shape[1] != T or (spikes.shape[2:] != shape and spikes.shape[2:] != (model.n_inputs,)):
        raise BitsnnError(f"--spikes {p}: the array is {list(spikes.shape)}; the model takes "
                          f"[N, {T}, {', '.join(map(str, shape))}] (images, steps, input)")
    if spikes.dtype.kind not in "biu" or (spikes.size and (spikes.min() < 0 or spikes.max() > 1)):
        raise BitsnnError(f"--spikes {p}: spikes must be integers 0 or 1 (the array is {spikes.dtype})")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(spikes),) or labels.dtype.kind not in "iu":
            raise BitsnnError(f"--spikes {p}: labels must be {len(spikes)} integers, one per input, not "
                              f"{labels.dtype} {list(labels.shape)}")
        labels = labels.astype(np.int64)
    if not len(spikes):
        raise BitsnnError(f"--spikes {p}: the array holds no inputs")
    if n is not None:
        n = int(n)
        if n < 1:
            raise BitsnnError(f"--images must be at least 1, got {n}")
        spikes, labels = spikes[:n], (labels[:n] if labels is not None else None)
    return np.ascontiguousarray(spikes, dtype=np.uint8), labels


def model_inputs(n: int | None, model, data_dir: str | os.PathLike | None = None, *, spikes=None,
                 data: Dataset | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """What ``bitsnn sim``, ``run`` and ``report`` feed ``model``: the first ``n`` test images
    (:func:`test_subset`; all with None), or for a ``given``-coded model the user's spikes file
    (:func:`load_spikes`, labels None when it has none). A spikes file for a model that takes
    images, or none for one that takes spikes, is a one-line :class:`BitsnnError`."""
    if model.input_coding == "given":
        if spikes is None:
            raise BitsnnError("the model takes given spikes at every step (an event sensor's), not images: "
                              "give them with --spikes FILE (.npy or .npz, [N, steps, *input_shape] of 0/1)")
        return load_spikes(spikes, model, n)
    if spikes is not None:
        raise BitsnnError(f"--spikes: the model takes images ({model.input_coding} coding); only a model with given "
                          "input coding takes spikes")
    if n is None:
        data = data if data is not None else load_dataset(data_dir)
        n = len(data.test_images)
    return test_subset(n, model, data_dir, data=data)
