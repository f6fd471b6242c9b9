"""What a training run prepares is kept on disk and read back only when it is still right."""
from __future__ import annotations

import functools
import hashlib
import os
import time

import numpy as np
import pytest

from mnist_classifier import prepared as prepared_module
from mnist_classifier.prepared import KEEP, Extra, make_all, prepare


def prepared(folder, name, inputs, settings, make, shape):
    """One extra, made in this process by the zero-argument `make`: (array, whether it came from disk)."""
    return prepare(folder, [Extra(name, lambda *_inputs: make(), inputs, settings, shape)])[0]


class Maker:
    """Counts how often the slow path ran."""

    def __init__(self, images: np.ndarray):
        self.images, self.calls = images, 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return 255 - self.images


@pytest.fixture
def digits(mnist_data, monkeypatch):
    monkeypatch.setattr(prepared_module, "MIN_IMAGES", 100)
    return mnist_data.train.images[:300].numpy()


def test_a_second_call_reads_what_the_first_kept(digits, tmp_path):
    make = Maker(digits)
    first, loaded_first = prepared(tmp_path, "inverse", (digits,), (1,), make, digits.shape)
    second, loaded_second = prepared(tmp_path, "inverse", (digits,), (1,), make, digits.shape)
    assert (loaded_first, loaded_second, make.calls) == (False, True, 1)
    np.testing.assert_array_equal(second, 255 - digits)
    assert second.dtype == np.uint8


def test_another_pixel_or_setting_prepares_afresh(digits, tmp_path):
    make = Maker(digits)
    prepared(tmp_path, "inverse", (digits,), (1,), make, digits.shape)
    prepared(tmp_path, "inverse", (digits,), (2,), make, digits.shape)
    changed = digits.copy()
    changed[5, 14, 14] ^= 1
    array, loaded = prepared(tmp_path, "inverse", (changed,), (1,), Maker(changed), changed.shape)
    assert make.calls == 2 and not loaded
    np.testing.assert_array_equal(array, 255 - changed)


def test_every_module_the_makers_import_is_in_the_files_fingerprint():
    """An edit to any module whose code a maker runs prepares afresh: images.py, which the paper
    digits go through, was once left off the hand-kept list and a stale file was read (helper-93)."""
    import subprocess
    import sys

    assert {"images", "errors", "paper", "ruled", "doodles", "exposure"} <= set(prepared_module.maker_modules())
    listing = "import sys; print(' '.join(sorted(name for name in sys.modules if name.startswith('mnist_classifier.'))))"
    imported = {}
    for roots in ((), prepared_module.MAKERS):
        code = "".join(f"import mnist_classifier.{root}; " for root in roots) or "import mnist_classifier; "
        probe = subprocess.run([sys.executable, "-c", code + listing], capture_output=True, text=True, check=True)
        imported[roots] = {name.split(".")[1] for name in probe.stdout.split()}
    makers_own = imported[prepared_module.MAKERS] - imported[()]  # less what the package itself imports
    assert makers_own and makers_own <= set(prepared_module.maker_modules()), makers_own


def test_small_splits_are_not_kept(mnist_data, tmp_path):
    images = mnist_data.train.images[:300].numpy()
    _, loaded = prepared(tmp_path, "inverse", (images,), (), Maker(images), images.shape)
    assert not loaded and not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "not an npz", "another array", "another shape",
                                    "another extra's file"])
def test_a_damaged_file_is_prepared_afresh_and_replaced(digits, tmp_path, damage):
    make = Maker(digits)
    prepared(tmp_path, "inverse", (digits,), (), make, digits.shape)
    (path,) = tmp_path.glob("*.npz")
    key = np.array(path.stem)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "one byte changed":
        middle = len(data) // 2  # inside the array's bytes: still loads, the digest tells
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "not an npz":
        path.write_text("hello")
    elif damage == "another array":  # a well-formed file whose array is not the one its digest was taken of
        with np.load(path) as stored:
            digest = stored["sha256"]
        with open(path, "wb") as file:
            np.savez(file, array=np.zeros_like(digits), key=key, sha256=digest)
    elif damage == "another shape":  # well-formed, its digest right, but not the shape the caller will index
        with np.load(path) as stored:
            short = stored["array"][:10]
        with open(path, "wb") as file:
            np.savez(file, array=short, key=key, sha256=np.array(hashlib.sha256(short.data).hexdigest()))
    else:  # a whole, good file of another extra of the same shape, copied to this one's name (helper-93)
        path.unlink()
        prepared(tmp_path, "copy", (digits,), (), digits.copy, digits.shape)
        (other,) = tmp_path.glob("*.npz")
        other.rename(path)
    array, loaded = prepared(tmp_path, "inverse", (digits,), (), make, digits.shape)
    assert not loaded and make.calls == 2
    np.testing.assert_array_equal(array, 255 - digits)
    assert prepared(tmp_path, "inverse", (digits,), (), make, digits.shape)[1]  # replaced by a good one


def test_a_folder_that_cannot_be_written_only_costs_the_time(digits, tmp_path):
    blocked = tmp_path / "a file"
    blocked.write_text("in the way")
    array, loaded = prepared(blocked / "prepared", "inverse", (digits,), (), Maker(digits), digits.shape)
    assert not loaded
    np.testing.assert_array_equal(array, 255 - digits)
    assert not list(tmp_path.glob("**/*.partial"))


def test_only_the_most_recently_used_files_stay(digits, tmp_path):
    for setting in range(KEEP + 3):
        prepared(tmp_path, "inverse", (digits,), (setting,), Maker(digits), digits.shape)
        time.sleep(0.01)  # distinct modification times
    assert len(list(tmp_path.glob("*.npz"))) == KEEP
    assert not prepared(tmp_path, "inverse", (digits,), (0,), Maker(digits), digits.shape)[1]  # the oldest went
    assert prepared(tmp_path, "inverse", (digits,), (KEEP + 2,), Maker(digits), digits.shape)[1]


def test_a_killed_writers_partial_file_goes_once_it_is_old(digits, tmp_path):
    old, fresh = tmp_path / ".inverse-x.npz.1.partial", tmp_path / ".inverse-y.npz.2.partial"
    for partial in (old, fresh):
        partial.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    prepared(tmp_path, "inverse", (digits,), (), Maker(digits), digits.shape)
    assert not old.exists() and fresh.exists()  # a fresh one may still be being written


def test_training_extras_come_back_identical_from_disk(mnist_data, tmp_path, monkeypatch):
    from mnist_classifier.config import resolve_config
    from mnist_classifier.data import Split
    from mnist_classifier.exposure import Exposure

    monkeypatch.setattr(prepared_module, "MIN_IMAGES", 500)
    train = Split(mnist_data.train.images[:600], mnist_data.train.labels[:600])
    config = resolve_config(None, {"data_dir": str(tmp_path)})
    lines = []
    made = Exposure.build(config, train, True, 20, lines.append)
    loaded = Exposure.build(config, train, True, 20, lines.append)
    assert lines[-1].startswith("loaded paper digits, skeletons, non-digits as an earlier run")
    assert not any(line.startswith("loaded") for line in lines[:-1])
    [announced] = [line for line in lines if line.startswith("preparing")]  # the first build only
    assert announced.startswith("preparing paper digits, skeletons, non-digits from 600 training digits")
    assert f"kept in {tmp_path / 'prepared'}" in announced and lines.index(announced) == 0
    for name in ("on_paper", "distances", "outliers"):
        assert getattr(made, name).shape[0] > 0
        assert getattr(made, name).equal(getattr(loaded, name)), name


def maker_pid(images: np.ndarray) -> np.ndarray:
    """Per image: the id of the process that made it (module level: it runs in the workers)."""
    time.sleep(0.2)  # long enough that every worker gets a chunk before the first has taken them all
    return np.full(len(images), os.getpid())


def dies_in_a_worker(images: np.ndarray, parent: int) -> np.ndarray:
    if os.getpid() != parent:
        os._exit(1)  # as the kernel's OOM killer would end it
    return 255 - images


def test_the_recipes_extras_made_in_processes_match_those_made_here(mnist_data, monkeypatch):
    from mnist_classifier.config import resolve_config
    from mnist_classifier.data import Split
    from mnist_classifier.exposure import extras_to_prepare

    monkeypatch.setattr(prepared_module, "MIN_IMAGES", 100)
    train = Split(mnist_data.train.images[:400], mnist_data.train.labels[:400])
    extras = extras_to_prepare(resolve_config(None, {}), train, 20)
    assert [extra.name for extra in extras] == ["paper digits", "skeletons", "non-digits"]
    here, in_processes = make_all(extras, workers=1), make_all(extras, workers=2)
    for extra, one, other in zip(extras, here, in_processes):
        assert one.shape == extra.shape and one.dtype == np.uint8, extra.name
        np.testing.assert_array_equal(one, other, err_msg=extra.name)


def test_the_recipes_makers_start_without_torch(mnist_data):
    """A worker imports only its maker's module: without torch it starts in ~0.3 s, not ~2 s."""
    import subprocess
    import sys

    from mnist_classifier.config import resolve_config
    from mnist_classifier.data import Split
    from mnist_classifier.exposure import extras_to_prepare

    train = Split(mnist_data.train.images[:100], mnist_data.train.labels[:100])
    extras = extras_to_prepare(resolve_config(None, {}), train, 20)
    makers = [getattr(extra.make, "func", extra.make) for extra in extras]
    imports = "; ".join(f"from {maker.__module__} import {maker.__name__}" for maker in makers)
    probe = subprocess.run([sys.executable, "-c", f"{imports}; import sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert len(makers) == 3 and probe.stdout.strip() == "False", (imports, probe.stdout)


def threads_given(images: np.ndarray, threads: int = 1) -> np.ndarray:
    return np.full(len(images), threads)


def test_a_threaded_extra_gets_the_threads_only_when_made_here(digits):
    """Workers already take every core; made here instead, a maker that releases the GIL uses them."""
    few, many = (Extra("threads", threads_given, (images,), (), (len(images),), per_image=True, threaded=True)
                 for images in (digits[:50], digits))
    [here] = make_all([few], workers=3)  # under MIN_IMAGES: made in this process
    [apart] = make_all([many], workers=2)
    assert set(here.tolist()) == {3} and set(apart.tolist()) == {1}


def test_per_image_extras_are_split_over_the_worker_processes(digits):
    [made] = make_all([Extra("pids", maker_pid, (digits,), (), (len(digits),), per_image=True)], workers=2)
    assert made.shape == (len(digits),)
    assert os.getpid() not in set(made.tolist()) and len(set(made.tolist())) == 2


def test_no_more_workers_than_the_cap_whatever_is_asked(digits):
    [made] = make_all([Extra("pids", maker_pid, (digits,), (), (len(digits),), per_image=True)],
                      workers=prepared_module.MAX_WORKERS + 2)
    assert 2 <= len(set(made.tolist())) <= prepared_module.MAX_WORKERS


def test_a_worker_that_dies_leaves_the_work_to_the_parent(digits):
    extra = Extra("inverse", functools.partial(dies_in_a_worker, parent=os.getpid()), (digits,), (), digits.shape,
                  per_image=True)
    [made] = make_all([extra], workers=2)
    np.testing.assert_array_equal(made, 255 - digits)
