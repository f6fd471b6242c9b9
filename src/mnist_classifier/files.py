"""Writing a file so that a reader finds the old one or the new one, never half of either.

    write_atomically(Path("models/simple_cnn_best.onnx"), data)

The bytes go to a temporary file beside the target, are flushed to disk, and take the
target's name in one rename: a crash or `kill -9` leaves at most a `.NAME.*.tmp` file, never
a half-written NAME. `tempfile.mkstemp` creates that file readable by its owner only (0600,
right for a secret, wrong for a model or a dataset someone else on the machine may use), so
`shared_mode` gives it the mode an ordinary write would have: the replaced file's own, else
0666 less the process's umask (report.py's staging folder, from `mkdtemp`, gets 0777 less it).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def shared_mode(path: Path, directory: bool = False) -> int:
    """The permission bits `path` should get: those of the file it replaces, else what `open()`
    (or, for a `directory`, `mkdir()`) would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return (0o777 if directory else 0o666) & ~_umask()


def write_atomically(path: Path, data: bytes) -> Path:
    """An OSError names `path`, not the temporary file the user never asked for."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, shared_mode(path))
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    # Linux states it in /proc (since 4.7); elsewhere the only way to read it is to set it
    # and set it back, which a thread creating a file at that instant would see.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def not_a_file(path: Path, kind: str = "checkpoint", fix: str = "train one with `mnist-classifier train`") -> str:
    """Why `path`, which is no regular file (nor a folder), cannot be read as a `kind`, and what to do."""
    if path.is_dir():
        return f"{path} is a folder, not the {kind} file: name the file in it"
    if path.exists():  # /dev/zero, a pipe, a socket, or a link to one
        return f"{path} is not a regular file (a device, a pipe or a socket): name the {kind} file itself"
    if path.is_symlink():  # exists() follows the link: False for a loop or a missing target
        return f"{kind} {path} is a symbolic link to nothing readable (a missing file or a loop): point it at a file"
    return f"{kind} {path} not found: {fix}"


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (where it would be made)."""
    return next((folder for folder in (path, *path.parents) if folder.exists()), Path("."))


def write_probe(directory: Path) -> tuple[Path, OSError | None]:
    """(the folder `directory` is or would be made in, why no new file can be written there or
    None). A real try, not permission bits: they stop neither root nor a read-only mount or /proc.
    Creates nothing that stays, and no folder: a command refused later leaves none behind."""
    existing = nearest_existing(Path(directory))
    try:  # a probe of its own per process: torchrun ranks check the same folder at the same moment
        handle, name = tempfile.mkstemp(dir=existing, prefix=".write-test-")
    except OSError as error:
        return existing, error
    try:  # plain descriptors: a file object refused its bytes would try to close, and unlink, again when collected
        os.write(handle, b"ok")  # a full disk takes the name but not the bytes
    except OSError as error:
        return existing, error
    finally:
        os.close(handle)
        os.unlink(name)
    return existing, None


# A write that failed for want of room: a full disk, a quota, a limit on file sizes (ulimit -f).
OUT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
ROOM_FIX = "free some space (or raise the limit on file sizes, ulimit -f)"
