"""IDX files on disk: read, verify by SHA-256, and write only once verified.

Every source ends here: a file gets its real name in `data/<folder>/raw/` only after
the SHA-256 of its uncompressed bytes matched the dataset registry.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shlex
import tempfile
import zlib
from contextlib import suppress
from pathlib import Path

import numpy as np

from ..datasets import DATASETS, DatasetSpec, IdxFile
from ..errors import DataError, NotFetchedYet, UserError
from ..files import OUT_OF_ROOM, ROOM_FIX, shared_mode

FIX = "delete it and run `mnist-classifier data`"
_CHUNK = 1 << 20
UBYTE = 0x08  # IDX type code of unsigned bytes, the only one these datasets use
_NDIMS = (1, 3)  # IDX labels (magic 0x801) and images (magic 0x803)


def find_idx_file(raw_dir: Path, f: IdxFile) -> Path | None:
    """The plain file if present (fastest to read), else its .gz, else None."""
    for path in (Path(raw_dir) / f.name, Path(raw_dir) / f"{f.name}.gz"):
        if path.is_file():
            return path
    return None


def fetch_hint(spec: DatasetSpec, raw_dir: Path) -> str:
    """The `data` command that fills raw_dir: its dataset and, unless it is the default, its folder."""
    raw_dir = Path(raw_dir)
    if raw_dir.name != "raw" or raw_dir.parent.name != spec.folder:  # not a folder `data` fills
        return spec.fetch_command
    data_dir = raw_dir.parent.parent  # <data_dir>/<folder>/raw
    return spec.fetch_command + ("" if data_dir == Path("data") else f" --data-dir {shlex.quote(str(data_dir))}")


def fix_for(path: Path) -> str:
    """How to replace a damaged file: the `data` command of the dataset whose folder holds it."""
    raw_dir = Path(path).parent
    spec = next((spec for spec in DATASETS.values() if raw_dir.parent.name == spec.folder), None)
    return FIX if spec is None or raw_dir.name != "raw" else f"delete it and run `{fetch_hint(spec, raw_dir)}`"


def verify_dataset(raw_dir: Path, spec: DatasetSpec) -> None:
    """Raise DataError unless all four files exist with the registry's SHA-256."""
    blocked = next((folder for folder in (raw_dir, *raw_dir.parents) if folder.is_file()), None)
    if blocked is not None:  # no fetch could fill it: say so rather than advise one
        raise UserError(f"{blocked} is a file, not a folder: choose another --data-dir, or move that file away")
    in_the_way = next((path for f in spec.files if find_idx_file(raw_dir, f) is None
                       for path in (raw_dir / f.name, raw_dir / f"{f.name}.gz") if path.is_dir()), None)
    if in_the_way is not None:  # no fetch could write the file there (helper-79)
        raise UserError(f"{in_the_way} is a folder, not an IDX file: move it away and run `{fetch_hint(spec, raw_dir)}`")
    missing = [f.name for f in spec.files if find_idx_file(raw_dir, f) is None]
    if missing:
        none = len(missing) == len(spec.files)
        what = "no files" if none else "no " + ", ".join(missing)
        raise (NotFetchedYet if none else DataError)(
            f"{what} in {raw_dir} yet: run `{fetch_hint(spec, raw_dir)}` to fetch {spec.name}")
    for f in spec.files:
        path = find_idx_file(raw_dir, f)
        digest = hash_file(path, f)
        if digest != f.sha256:
            raise DataError(f"{path} {_mismatch(path, f, digest)}: delete it and run `{fetch_hint(spec, raw_dir)}`")


def _mismatch(path: Path, f: IdxFile, digest: str) -> str:
    """What is wrong with a file whose hash is not the registry's: cut short (a copy or download
    stopped), or other bytes of the full length."""
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src:
            size = sum(len(chunk) for chunk in iter(lambda: src.read(_CHUNK), b""))
    except (OSError, EOFError, zlib.error):
        size = None  # a .gz cut short inside its stream: hash_file read what it could
    if size == 0:
        return "is empty"
    if size is not None and size < f.size:
        return f"is truncated ({size:,} of {f.size:,} bytes)"
    return f"is not the expected {f.name} (SHA-256 {digest[:12]}… instead of {f.sha256[:12]}…)"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or .gz) into a writable array."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} cannot be read ({err}): {fix_for(path)}") from None
    dims, start = _parse_header(data, path)
    expected = start + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path} {problem} ({len(data)} bytes, its header says {expected}): {fix_for(path)}")
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims).copy()


def load_arrays(raw_dir: Path, spec: DatasetSpec):
    """(train_x, train_y, test_x, test_y): images (N, H, W) uint8, labels int64."""
    arrays = []
    for images, labels in ((spec.train_images, spec.train_labels),
                           (spec.test_images, spec.test_labels)):
        arrays += _load_pair(_require(raw_dir, images, spec), _require(raw_dir, labels, spec), spec)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(f"train and test images in {raw_dir} differ in size "
                        f"({arrays[0].shape[1:]} vs {arrays[2].shape[1:]}): {fix_for(raw_dir / spec.test_images.name)}")
    return tuple(arrays)


def describe(raw_dir: Path, spec: DatasetSpec) -> str:
    """One line of counts from the file headers alone (cheap), e.g. for `data`."""
    counts = []
    for f in (spec.train_images, spec.test_images):
        path = _require(raw_dir, f, spec)
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as fh:
            dims, _ = _parse_header(fh.read(16), path)
        counts.append(dims)
    (n_train, *size), (n_test, *_) = counts
    return (f"{spec.name}: train {n_train}, test {n_test} images of "
            f"{'x'.join(map(str, size))}, {len(spec.class_names)} classes, in {raw_dir}")


def _require(raw_dir: Path, f: IdxFile, spec: DatasetSpec) -> Path:
    path = find_idx_file(raw_dir, f)
    if path is None:
        raise DataError(f"{Path(raw_dir) / f.name} is missing: run `{fetch_hint(spec, raw_dir)}`")
    return path


def _parse_header(data: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """Dimensions and header length; magic 0x00000801 (labels) or 0x00000803 (images)."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != UBYTE or data[3] not in _NDIMS:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{path} has the wrong magic number 0x{magic:08x} (expected "
                        f"0x00000801 labels or 0x00000803 images): {fix_for(path)}")
    start = 4 + 4 * data[3]
    if len(data) < start:
        raise DataError(f"{path} is truncated inside its header: {fix_for(path)}")
    dims = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(4, start, 4))
    return dims, start


def _load_pair(images_path: Path, labels_path: Path, spec: DatasetSpec):
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3:
        raise DataError(f"{images_path} holds labels, not images: {fix_for(images_path)}")
    if y.ndim != 1:
        raise DataError(f"{labels_path} holds images, not labels: {fix_for(labels_path)}")
    if len(x) != len(y):
        raise DataError(f"{labels_path} has {len(y)} labels but {images_path.name} has "
                        f"{len(x)} images: {fix_for(labels_path)}")
    if len(y) and int(y.max()) >= len(spec.class_names):
        raise DataError(f"{labels_path} holds label {int(y.max())}, outside 0-"
                        f"{len(spec.class_names) - 1}: {fix_for(labels_path)}")
    return x, y.astype(np.int64)


# ---------------------------------------------------------------- hashing and writing


def hash_file(path: Path, f: IdxFile) -> str:
    """SHA-256 of the uncompressed bytes of a plain or .gz file, at most f.size of them."""
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src:
        return copy_hashed(src, None, f.size, str(path), fix_for(path))


class _WriteFailed(Exception):
    """Writing the copy failed (a full disk, a size limit): the place's fault, not the source's."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def copy_hashed(src, dst, limit: int, where: str, fix: str = "") -> str:
    """Stream src (into dst if given) and return its SHA-256; stop past `limit` bytes
    so that a wrong or hostile file (a gzip bomb) cannot fill the memory or disk."""
    digest, total = hashlib.sha256(), 0
    tail = f": {fix}" if fix else ""
    try:
        while chunk := src.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise DataError(f"{where} is larger than the expected {limit} bytes{tail}")
            digest.update(chunk)
            if dst is not None:
                _write(dst, chunk)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{where} cannot be read ({err}){tail}") from None
    return digest.hexdigest()


def _write(dst, chunk: bytes) -> None:
    try:
        dst.write(chunk)
    except OSError as error:
        raise _WriteFailed(error) from None


def install_verified(raw_dir: Path, f: IdxFile, origin: str, fill) -> None:
    """Write f via fill(out) -> sha256 into a temp file beside its final place and give
    it the real name only once verified: a crash or a bad download leaves nothing."""
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{f.name}.", suffix=".part")
    except OSError as error:
        raise unwritable(raw_dir / f.name, error) from None
    try:
        out = os.fdopen(fd, "wb")
        try:
            digest = fill(out)
            _write_through(out)
        finally:
            with suppress(OSError):  # after a failed write, closing would flush into the same full disk
                out.close()
        os.chmod(tmp, shared_mode(raw_dir / f.name))  # mkstemp makes it private; the data is not secret
        if digest != f.sha256:
            raise DataError(f"{origin} gave a wrong {f.name} (SHA-256 {digest[:12]}…), refused")
        try:
            os.replace(tmp, raw_dir / f.name)
        except OSError as error:  # e.g. a folder of that name in the way
            raise unwritable(raw_dir / f.name, error) from None
    except _WriteFailed as failed:
        raise unwritable(raw_dir / f.name, failed.error) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_through(out) -> None:
    """What is still buffered, to the disk: where a full disk or a size limit shows."""
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as error:
        raise _WriteFailed(error) from None


def unwritable(target: Path, error: OSError) -> UserError:
    """Not a source's fault, so no other source is tried: every one would meet the same place."""
    if error.errno in OUT_OF_ROOM:
        return UserError(f"cannot write {target} ({error.strerror}): {ROOM_FIX}, or choose another --data-dir")
    return UserError(f"cannot write {target} ({error.strerror}): make {target.parent} a folder you may write to "
                     "with nothing else under that name, or choose another --data-dir")


def copy_gz_verified(src_path: Path, raw_dir: Path, f: IdxFile, origin: str) -> None:
    """Decompress a local plain or .gz copy of f into raw_dir, verified on the way."""
    opener = gzip.open if src_path.suffix == ".gz" else open
    with opener(src_path, "rb") as src:
        install_verified(raw_dir, f, origin, lambda out: copy_hashed(src, out, f.size, str(src_path)))


def write_idx(out, array: np.ndarray) -> str:
    """Write array as an IDX file of unsigned bytes; return the SHA-256 of what was written."""
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    body = np.ascontiguousarray(array).data
    digest = hashlib.sha256(header)
    digest.update(body)
    _write(out, header)
    _write(out, body)
    return digest.hexdigest()
