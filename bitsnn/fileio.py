"""Output files: written atomically (a reader sees the old file or the whole new one, never
half), and output paths checked before any long work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from . import BitsnnError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "check_output_file", "check_output_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so that ``os.replace`` is atomic.
    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the result the mode an ordinary new file would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_parent(path: Path, what: str) -> None:
    """BitsnnError unless ``path``'s folder exists as a writable folder, or can be made inside one."""
    anc = _nearest_existing(path.absolute().parent)
    if not anc.is_dir():
        raise BitsnnError(f"{what} {path}: {anc} is not a directory")
    try:  # os.access says yes to root on read-only or virtual file systems: try it for real
        fd, probe = tempfile.mkstemp(prefix=".bitsnn-write-test.", dir=anc)
    except OSError as e:
        raise BitsnnError(f"{what} {path}: cannot write in {anc} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path, what: str = "-o") -> Path:
    """Refuse, before any work, an output file path that cannot be written: empty, an existing
    directory or other non-regular file, or one inside a folder that cannot be written.
    ``what`` names the option in the one-line error. An existing regular file may be replaced."""
    if path is None or not str(path).strip():
        raise BitsnnError(f"{what}: the output path is empty")
    p = Path(path)
    if p.is_dir():
        raise BitsnnError(f"{what} {p}: is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise BitsnnError(f"{what} {p}: exists and is not a regular file")
    _check_writable_parent(p, what)
    return p


def check_output_dir(path, what: str = "-o") -> Path:
    """Refuse, before any work, an output directory that cannot be written: empty path, an existing
    non-directory, or a folder that cannot be written (or made)."""
    if path is None or not str(path).strip():
        raise BitsnnError(f"{what}: the output path is empty")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BitsnnError(f"{what} {p}: exists and is not a directory")
    _check_writable_parent(p / "x", what)
    return p
