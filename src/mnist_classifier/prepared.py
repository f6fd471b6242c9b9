"""Training's prepared extras, kept on disk so that the next run on the same digits starts at once.

Before its first step a training run on digits prepares three arrays from its training split
(exposure.py): the skeleton distances the pen re-drawing needs (skeletons.py), the digits as
the preprocessing returns them (`preprocess.digits_on_paper`) and a pool of generated non-digits
(outliers.py). For MNIST's 55,000 that is 10-15 s of work on 2 cores (the CPU decides), made
in as many processes as training has threads (`make_all`; benchmarks/setup_speed.py): the
digit-by-digit Python and OpenCV work holds the GIL, so threads would not share it. Each is a
pure function of the split's pixels, a few settings and the code that makes it, so it is
kept in `<data_dir>/prepared/` under a hash of all three: change a pixel, a setting, a line of
the generating modules or a library version and the hash changes, so a stale file is never
read, only pruned (the newest KEEP stay).

A kept file is an array, the SHA-256 of its bytes and its own name; one that fails to load or to match is
prepared afresh and replaced. Writing is best effort (a read-only or full disk only costs the
time), through a temporary file and a rename, so a killed run never leaves half a file behind
under a real name.

    from mnist_classifier.prepared import Extra, prepare
    [(distances, loaded)] = prepare(Path("data/prepared"), [Extra("skeletons", slow, (images,), (), images.shape,
                                                                  per_image=True)], workers=2)
"""
from __future__ import annotations

import ast
import hashlib
import os
import time
import zipfile
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
from joblib import Parallel, delayed

from .parent import end_with_the_parent

# The modules of the makers (exposure.py's recipe); with every module of this package they import
# (`maker_modules`), their code decides what is prepared: any edit to one prepares afresh.
MAKERS = ("skeletons", "preprocess", "outliers")
RECIPE = "exposure"  # chooses the makers' settings; its own imports (torch's side) make nothing
LIBRARIES = ("numpy", "cv2", "skimage", "scipy")
KEEP = 6  # kept files, newest by use first: the full split's three, and room for another run's
MIN_IMAGES = 10_000  # smaller splits prepare in a second or two: not worth the disk, nor the processes
IDLE_WORKERS_SECONDS = 10  # then the workers exit: training needs the cores and memory
# Each worker holds numpy, OpenCV and scikit-image (no torch: the makers' modules do not import it)
# and its inputs: up to ~250 MB apiece for MNIST. Four make the set-up in a few seconds; more
# would cost a laptop's memory for little.
MAX_WORKERS = 4
CHUNKS_PER_WORKER = 4  # per-image extras are split finer than the workers: the last chunks even out the end


@dataclass(frozen=True)
class Extra:
    """One array a run prepares: `make(*inputs)`, a uint8 array of `shape`.

    `per_image`: the array holds one row per image of `inputs[0]` (its only input), so the
    images may be split into chunks made apart. `threaded`: made in this process rather than
    in workers, `make` is given the workers' number as `threads`. `make` may run in another
    process: a module-level function, or a `functools.partial` of one.
    """

    name: str
    make: Callable[..., np.ndarray]
    inputs: tuple[np.ndarray, ...]
    settings: tuple
    shape: tuple[int, ...]
    per_image: bool = False
    threaded: bool = False  # make takes `threads=N`: its work releases the GIL, so here it may use N


def prepare(folder: Path | None, extras: list[Extra], workers: int = 1,
            log: Callable[[str], None] = lambda _line: None) -> list[tuple[np.ndarray, bool]]:
    """Each extra's array and whether it came from disk. Those not kept are made together,
    split over `workers` processes (the parent waits; `log` says so first, as it may take
    seconds), and kept in `folder` if their split is large enough."""
    paths = [_path(folder, extra) for extra in extras]
    found = [_load_matching(path, extra.shape) if path is not None else None for path, extra in zip(paths, extras)]
    missing = [index for index, array in enumerate(found) if array is None]
    if missing:
        log(_announcement([extras[index] for index in missing], workers,
                          kept_in=folder if any(paths[index] is not None for index in missing) else None))
    made = dict(zip(missing, make_all([extras[index] for index in missing], workers)))
    for index, array in made.items():
        if paths[index] is not None:
            _store(paths[index], array)
    return [(array, True) if array is not None else (made[index], False) for index, array in enumerate(found)]


def make_all(extras: list[Extra], workers: int = 1) -> list[np.ndarray]:
    """Each extra made: split over `workers` processes (at most MAX_WORKERS) when there is enough
    to make, else here. The same bytes either way (tests/test_prepared.py)."""
    processes = _processes(extras, workers)
    if processes == 0:
        return make_here(extras, threads=min(workers, MAX_WORKERS))
    # Whole extras first, then the chunks: the pool hands out work in order, so the long
    # tasks start early and the short chunks even out the end.
    tasks = [(index, extra.make, extra.inputs) for index, extra in enumerate(extras) if not extra.per_image]
    tasks += [(index, extra.make, (chunk,)) for index, extra in enumerate(extras) if extra.per_image
              for chunk in np.array_split(extra.inputs[0], processes * CHUNKS_PER_WORKER)]
    try:
        # joblib's loky workers are fresh interpreters that import only what the tasks need: a
        # fork would inherit OpenCV's and OpenMP's thread pools without their threads (and hang),
        # multiprocessing's spawn would run the caller's script again in each worker.
        parts = Parallel(n_jobs=processes, backend="loky", idle_worker_timeout=IDLE_WORKERS_SECONDS,
                         initializer=end_with_the_parent,
                         max_nbytes=None)(  # pickled, not memory-mapped: a container's /dev/shm may be small
            delayed(make)(*inputs) for _, make, inputs in tasks)
    except (BrokenProcessPool, OSError):  # a worker was killed (out of memory?) or none could start
        return make_here(extras, threads=processes)
    pieces: list[list[np.ndarray]] = [[] for _ in extras]
    for (index, _, _), part in zip(tasks, parts):  # in submission order: chunks stay in image order
        pieces[index].append(part)
    return [np.concatenate(own) if extra.per_image else own[0] for extra, own in zip(extras, pieces)]


def _processes(extras: list[Extra], workers: int) -> int:
    """How many worker processes make_all starts for `extras`: 0 when they are made here."""
    images, workers = sum(len(extra.inputs[0]) for extra in extras), min(workers, MAX_WORKERS)
    return 0 if workers <= 1 or images < MIN_IMAGES else workers


def _announcement(extras: list[Extra], workers: int, kept_in: Path | None) -> str:
    processes = _processes(extras, workers)
    where = f"in {processes} worker processes" if processes else "in this process"
    after = f"; kept in {kept_in} for the next run on these digits" if kept_in is not None else ""
    return (f"preparing {', '.join(extra.name for extra in extras)} from {len(extras[0].inputs[0]):,} "
            f"training digits before the first step, {where}{after}")


def make_here(extras: list[Extra], threads: int = 1) -> list[np.ndarray]:
    """Each extra made in this process, the threaded ones on `threads` threads."""
    return [extra.make(*extra.inputs, threads=threads) if extra.threaded else extra.make(*extra.inputs)
            for extra in extras]


def _path(folder: Path | None, extra: Extra) -> Path | None:
    """Where `extra` is kept, or None: no folder, or a split too small to be worth the disk."""
    if folder is None or len(extra.inputs[0]) < MIN_IMAGES:
        return None
    stem = extra.name.replace(" ", "-")
    return folder / f"{stem}-{_fingerprint(stem, extra.inputs, extra.settings)}.npz"


def _load_matching(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    kept = _load(path)
    if kept is not None and kept.shape == tuple(shape) and kept.dtype == np.uint8:  # else not what make() returns
        return kept
    return None


def _fingerprint(name: str, inputs: tuple[np.ndarray, ...], settings: tuple) -> str:
    digest = hashlib.sha256(f"{name}|{settings!r}|{_code_version()}".encode())
    for array in inputs:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:32]


@cache
def maker_modules() -> tuple[str, ...]:
    """MAKERS and every module of this package they import, directly or not, with RECIPE: read
    from their source, so that a helper module (images.py, say) cannot be left off by hand."""
    here, found, waiting = Path(__file__).parent, {RECIPE}, list(MAKERS)
    while waiting:
        module = waiting.pop()
        if module in found:
            continue
        found.add(module)
        if (here / f"{module}.py").is_file():  # a subpackage is hashed by its __init__.py alone
            waiting += _package_imports((here / f"{module}.py").read_text())
    return tuple(sorted(found))


def _package_imports(source: str) -> list[str]:
    """The modules of this package that `source` imports (relative imports, at any depth of the code)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names += [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
    return names


@cache
def _code_version() -> str:
    from importlib import import_module

    digest = hashlib.sha256()
    for module in maker_modules():
        digest.update(module.encode())
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
            array, expected, key = stored["array"], str(stored["sha256"]), str(stored["key"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, damaged or not ours
        return None
    # The file's own name is in it: another extra's file copied or renamed to this name is not this one
    if key != path.stem or hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() != expected:
        return None
    with suppress(OSError):  # a read-only folder: still a good file
        os.utime(path)  # recently used: pruned last
    return array


def _store(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            np.savez(file, array=array, key=np.array(path.stem),
                     sha256=np.array(hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()))
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
