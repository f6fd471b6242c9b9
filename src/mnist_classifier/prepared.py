"""Training's prepared extras, kept on disk so that the next run on the same digits starts at once.

Before its first step a training run on digits prepares three arrays from its training split
(exposure.py): the skeleton distances the pen re-drawing needs (strokes.py), the digits as
the preprocessing returns them (`on_paper_digits`) and a pool of generated non-digits
(outliers.py). For MNIST's 55,000 that is ~13 s on 2 cores, a third of `make train`. Each is
a pure function of the split's pixels, a few settings and the code that makes it, so it is
kept in `<data_dir>/prepared/` under a hash of all three: change a pixel, a setting, a line of
the generating modules or a library version and the hash changes, so a stale file is never
read, only pruned (the newest KEEP stay).

A kept file is an array and the SHA-256 of its bytes; one that fails to load or to match is
prepared afresh and replaced. Writing is best effort (a read-only or full disk only costs the
time), through a temporary file and a rename, so a killed run never leaves half a file behind
under a real name.

    from mnist_classifier.prepared import prepared
    distances, loaded = prepared(Path("data/prepared"), "skeletons", (images,), (), lambda: slow(images), images.shape)
"""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np

# The modules whose code decides what is prepared: any edit to them prepares afresh.
MAKERS = ("strokes", "preprocess", "outliers", "doodles", "exposure")
LIBRARIES = ("numpy", "cv2", "skimage", "scipy")
KEEP = 6  # kept files, newest by use first: the full split's three, and room for another run's
MIN_IMAGES = 10_000  # smaller splits prepare in a second or two: not worth the disk


def prepared(folder: Path | None, name: str, inputs: tuple[np.ndarray, ...], settings: tuple,
             make: Callable[[], np.ndarray], shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """(`make()`'s uint8 array of `shape`, whether it came from disk); kept in `folder` if the split is large enough."""
    if folder is None or len(inputs[0]) < MIN_IMAGES:
        return make(), False
    path = folder / f"{name}-{_fingerprint(name, inputs, settings)}.npz"
    kept = _load(path)
    if kept is not None and kept.shape == tuple(shape) and kept.dtype == np.uint8:  # else not what make() returns
        return kept, True
    array = make()
    _store(path, array)
    return array, False


def _fingerprint(name: str, inputs: tuple[np.ndarray, ...], settings: tuple) -> str:
    digest = hashlib.sha256(f"{name}|{settings!r}|{_code_version()}".encode())
    for array in inputs:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:32]


@cache
def _code_version() -> str:
    from importlib import import_module

    digest = hashlib.sha256()
    for module in MAKERS:
        digest.update(Path(import_module(f"{__package__}.{module}").__file__).read_bytes())
    for library in LIBRARIES:
        try:
            digest.update(str(getattr(import_module(library), "__version__", "-")).encode())
        except ImportError:
            digest.update(b"-")
    return digest.hexdigest()


def _load(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            array, expected = stored["array"], str(stored["sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, damaged or not ours
        return None
    if hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() != expected:
        return None
    with suppress(OSError):  # a read-only folder: still a good file
        os.utime(path)  # recently used: pruned last
    return array


def _store(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            np.savez(file, array=array, sha256=np.array(hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()))
        os.replace(temporary, path)
    except OSError:  # read-only, full, or no folder there
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    """Keep the KEEP most recently used files; partial ones an hour old (their run was killed) go too."""
    try:
        for partial in folder.glob(".*.partial"):
            if partial.stat().st_mtime < time.time() - 3600:
                partial.unlink(missing_ok=True)
        kept = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:  # another process pruned the same file first
        pass
