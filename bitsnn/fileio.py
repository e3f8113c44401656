"""Output files: written atomically (a reader sees the old file or the whole new one, never
half), and output paths checked before any long work starts.

Two rules keep the user's files safe (:func:`check_output_file`, :func:`check_output_dir`):

- an output is never an input of the same command, compared as real paths (symbolic links,
  ``./x`` against ``/abs/x``, hard links);
- an existing file is replaced only when it is what the command writes (:class:`FileKind`: a
  hardware-model file for ``-o`` of export, a checkpoint for train, ...), or with ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import BitsnnError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "check_output_file", "check_output_dir",
           "FileKind", "same_path", "inside", "check_not_inputs", "clean_stale_temps", "magic_kind",
           "CHECKPOINT", "VCD", "DuplicateKeyError", "unique_keys"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so that ``os.replace`` is atomic.
    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=suffix or ".tmp", dir=path.parent)
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


def temp_prefix(name: str) -> str:
    """The prefix of a temporary file or folder staged beside ``name``: it carries this process's
    id, so that a later run can tell an orphan (its writer was killed) from a live one."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temps(directory, name: str) -> list[Path]:
    """Remove the temporaries (:func:`temp_prefix`) that a killed bitsnn process left for ``name``
    in ``directory``; those of a live process stay. Returns what was removed."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[A-Za-z0-9_]+(\.[A-Za-z0-9]+)?$")
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _alive(int(m[1])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


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


@dataclass(frozen=True)
class FileKind:
    """What a command writes, recognised in an existing file: such a file may be replaced without
    ``--force`` (it is the command's own kind of output); any other existing file may not."""

    name: str  #: as the refusal says it: "a bitsnn checkpoint"
    looks_like: Callable[[Path], bool]


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def magic_kind(name: str, magic: bytes, *, contains: bytes | None = None) -> FileKind:
    """A kind recognised by the first bytes of the file (and, optionally, a byte string anywhere in it)."""

    def looks_like(path: Path) -> bool:
        if _head(path, len(magic)) != magic:
            return False
        if contains is None:
            return True
        try:
            return contains in path.read_bytes()
        except OSError:
            return False

    return FileKind(name, looks_like)


def _is_checkpoint(path: Path) -> bool:
    """A torch.save archive holding bitsnn's {"config": {"arch": ...}, "state_dict": ...}."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                return False
            data = z.read(pkl[0])
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False
    return all(key in data for key in (b"config", b"state_dict", b"arch"))


def _is_vcd(path: Path) -> bool:
    head = _head(path, 256).lstrip()
    return any(head.startswith(k) for k in (b"$date", b"$version", b"$timescale", b"$comment", b"$scope"))


#: ``bitsnn train``'s output
CHECKPOINT = FileKind("a bitsnn checkpoint", _is_checkpoint)
#: a waveform (``bitsnn sim --wave``)
VCD = FileKind("a VCD waveform", _is_vcd)


class DuplicateKeyError(ValueError):
    """A JSON object that gives one key twice (its ``args[0]`` is the key)."""


def unique_keys(pairs):
    """``json.loads``'s ``object_pairs_hook`` that refuses a key given twice, where json would
    silently keep the last one (the model file's header and the flow's JSON configs use it)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(k)
        out[k] = v
    return out


def same_path(a, b) -> bool:
    """True when ``a`` and ``b`` name the same file: equal real paths, or the same inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def inside(path, directory) -> bool:
    """True when ``path`` is ``directory`` or lies under it (real paths)."""
    p, d = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return p == d or d in p.parents


def check_not_inputs(out, inputs: Iterable, what: str) -> None:
    """BitsnnError when the output ``out`` is one of the command's ``inputs`` (None entries skipped)."""
    for i in inputs:
        if i is not None and same_path(out, i):
            raise BitsnnError(f"{what} {out}: is an input of this command ({i}); give the output another name")


def check_output_file(path, what: str = "-o", *, kind: FileKind | None = None, inputs: Iterable = (),
                      force: bool = False) -> Path:
    """Refuse, before any work, an output file path that cannot or may not be written: empty, an
    existing directory or other non-regular file, one inside a folder that cannot be written, one
    of the command's ``inputs``, or an existing file that is not ``kind`` (the command's own kind
    of output) unless ``force``. ``what`` names the option in the one-line error."""
    if path is None or not str(path).strip():
        raise BitsnnError(f"{what}: the output path is empty")
    p = Path(path)
    if p.is_dir():
        raise BitsnnError(f"{what} {p}: is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise BitsnnError(f"{what} {p}: exists and is not a regular file")
    check_not_inputs(p, inputs, what)
    if p.exists() and not force and (kind is None or not kind.looks_like(p)):
        what_it_is = f"is not {kind.name}" if kind is not None else "was not written by this command"
        raise BitsnnError(f"{what} {p}: the file exists and {what_it_is}; pass --force to replace it")
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
