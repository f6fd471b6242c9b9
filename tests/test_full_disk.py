"""A read-only or full checkpoint folder: refused before training, or reported mid-run with nothing lost.

    .venv/bin/python -m pytest tests/test_full_disk.py -q      # needs root (mounts tmpfs)

Real file systems, not mocks: each test mounts a small tmpfs (read-only, full, or too
small for the second epoch's checkpoints) as --save-dir. Running as root, chmod would not
stop a write, so a read-only mount is the honest way to get EROFS; a size-limited tmpfs
gives a real ENOSPC. Without permission to mount, the tests are skipped.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from mnist_classifier import cli
from mnist_classifier.checkpoint import load_checkpoint
from mnist_classifier.files import ROOM_FIX

from .conftest import DATA_DIR

RECIPE = dict(model_name="simple_cnn", limit_train=500, val_size=500, epochs=2, batch_size=100, seed=5)
CHECKPOINT_MB = 4.8  # one SimpleCNN checkpoint with its AdamW state is 4.71 MB


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def one_thread(monkeypatch):
    """Training sets one thread per core; on a shared 2-core machine these tests take one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda _n: None)
    yield
    monkeypatch.undo()
    torch.set_num_threads(before)


def train_argv(tmp_path: Path, save_dir: Path, *extra: str) -> list[str]:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    return ["train", "--config", str(recipe), "--data-dir", str(DATA_DIR), "--save-dir", str(save_dir),
            "--log-dir", str(tmp_path / "runs"), *extra]


def fill_after_first_epoch(mount: Path, first_file: Path, timeout: float = 120.0) -> None:
    """Once `first_file` is saved, fill the disk up to half a checkpoint's room, as another program might."""
    deadline = time.monotonic() + timeout
    while not first_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    room = shutil.disk_usage(mount).free - int(CHECKPOINT_MB * 1e6 / 2)
    (mount / "filler").write_bytes(b"\0" * max(0, room))


def one_error_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0], captured.out


def assert_no_training_started(tmp_path: Path, out: str) -> None:
    assert "training simple_cnn" not in out and "epoch" not in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("subfolder", ["", "models"], ids=["mount-point", "folder-to-create"])
def test_read_only_save_dir_is_refused_before_training(tmp_path, capsys, subfolder, mnist_raw_dir):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as mount:
        save_dir = mount / subfolder
        assert cli.main(train_argv(tmp_path, save_dir)) == 2
        line, out = one_error_line(capsys)
    assert f"cannot write to {save_dir}" in line and line.endswith("(Read-only file system): choose another folder")
    assert_no_training_started(tmp_path, out)


def test_full_save_dir_is_refused_before_training(tmp_path, capsys, mnist_raw_dir):
    with tmpfs(tmp_path / "full", "256k") as mount:
        filler = mount / "filler.bin"
        with open(filler, "wb", buffering=0) as file:  # fill it to the last byte
            try:
                while True:
                    file.write(b"\0" * 4096)
            except OSError:
                pass
        assert cli.main(train_argv(tmp_path, mount)) == 2
        line, out = one_error_line(capsys)
    assert f"cannot write to {mount}" in line and "No space left on device" in line
    assert line.endswith(f"choose another folder or {ROOM_FIX}")  # not "fix its permissions"
    assert_no_training_started(tmp_path, out)


def test_save_dir_without_room_for_a_checkpoint_is_refused_before_training(tmp_path, capsys, one_thread,
                                                                          mnist_raw_dir):
    with tmpfs(tmp_path / "small", "3m") as mount:
        assert cli.main(train_argv(tmp_path, mount)) == 2
        line, out = one_error_line(capsys)
        assert list(mount.iterdir()) == []
    assert f"free in {mount}" in line and "checkpoints need about 14.1 MB" in line  # best, its replacement, last
    assert_no_training_started(tmp_path, out)


def test_disk_filling_mid_run_is_reported_and_loses_nothing(tmp_path, capsys, one_thread, mnist_raw_dir):
    # Room for the three checkpoint files a run needs at once, until another writer fills the disk
    # after epoch 1: then not for epoch 2's next temporary file.
    size_mb = round(CHECKPOINT_MB * 3.5)
    with tmpfs(tmp_path / "filling", f"{size_mb}m") as mount:
        filler = threading.Thread(target=fill_after_first_epoch, args=(mount, mount / "simple_cnn_last.pth"))
        filler.start()
        assert cli.main(train_argv(tmp_path, mount)) == 2
        filler.join()
        line, out = one_error_line(capsys)
        assert "epoch  1/2" in out and "epoch  2/2" not in out
        assert "could not save checkpoint" in line and "No space left on device" in line
        assert "checkpoints already on disk are intact" in line
        # helper-80: and how to go on once there is room
        assert line.endswith(f"; then resume with `mnist-classifier train --resume {mount / 'simple_cnn_last.pth'}`")
        # Nothing half-written, and what epoch 1 saved still loads.
        assert sorted(p.name for p in mount.iterdir()) == ["filler", "simple_cnn_best.pth", "simple_cnn_last.pth"]
        last = load_checkpoint(mount / "simple_cnn_last.pth")
        assert last["epoch"] == 1 and load_checkpoint(mount / "simple_cnn_best.pth")["epoch"] == 1
        # Space freed: the run resumes from epoch 1 and finishes; nothing was lost.
        (mount / "filler").unlink()
        assert cli.main(["train", "--resume", str(mount / "simple_cnn_last.pth")]) == 0
        out = capsys.readouterr().out
        assert "epoch  2/2" in out and "epoch  1/2" not in out and "test accuracy" in out
        assert load_checkpoint(mount / "simple_cnn_last.pth")["epoch"] == 2



def test_a_full_tensorboard_folder_is_one_line_and_the_run_resumes(tmp_path, capsys, one_thread, mnist_raw_dir):
    """TensorBoard's writer thread printed its traceback, then the run ended with "cannot use: No space
    left on device" naming no folder and no way on."""
    with tmpfs(tmp_path / "runs", "48k") as mount:  # the epochs' points fit; the test's figures do not
        save_dir = tmp_path / "models"
        assert cli.main(train_argv(tmp_path, save_dir, "--log-dir", str(mount))) == 2
        line, _ = one_error_line(capsys)  # the thread's traceback is not printed
        assert line.startswith(f"error: cannot write TensorBoard's log in {mount}/simple_cnn_") and \
            "(No space left on device): free some space" in line, line
        assert f"`mnist-classifier train --resume {save_dir / 'simple_cnn_last.pth'}`" in line
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)
        assert cli.main(["train", "--resume", str(save_dir / "simple_cnn_last.pth")]) == 0
        assert "test accuracy" in capsys.readouterr().out
        assert "test_accuracy" in load_checkpoint(save_dir / "simple_cnn_best.pth")

def test_a_report_folder_that_is_a_mount_point_takes_the_report(tmp_path):
    """A Docker volume or a mounted disk as `evaluate --out`: staged beside it, the files could not
    be renamed into it (EXDEV), so every report there failed."""
    from mnist_classifier.report import install_files

    with tmpfs(tmp_path / "volume", "1m") as mount:
        install_files({"metrics.json": b"{}", "report.html": b"<html>"}, mount)
        assert sorted(path.name for path in mount.iterdir()) == ["metrics.json", "report.html"]


def test_a_read_only_report_folder_is_refused_before_any_work(tmp_path):
    from mnist_classifier.errors import UserError
    from mnist_classifier.report import check_report_dir

    with tmpfs(tmp_path / "reports", "1m", read_only=True) as mount:
        with pytest.raises(UserError, match=f"^cannot write the report to {mount}: {mount} is not writable"):
            check_report_dir(mount)  # evaluate calls it first: it ran its minute of work, then failed


def test_calibrate_in_a_read_only_folder_is_refused_before_the_fit(small_checkpoint, tmp_path):
    from mnist_classifier.errors import UserError
    from mnist_classifier.honesty import calibrate_checkpoint

    with tmpfs(tmp_path / "models", "8m") as mount:
        shutil.copy(small_checkpoint, mount / "mine.pth")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(UserError, match=r"^cannot calibrate .*mine\.pth: its folder .* takes no new file"):
            calibrate_checkpoint(mount / "mine.pth", DATA_DIR, log=lambda _line: None)


def test_a_full_data_folder_names_the_file_and_no_other_source_is_tried(tmp_path):
    """helper-63's sweep: a full disk while `data` wrote MNIST said "cannot use: File too large" with no
    path, or blamed the source file ("cannot be read"), after which `--source auto` tried the next one."""
    from mnist_classifier.datasets import DATASETS
    from mnist_classifier.errors import DataError, UserError
    from mnist_classifier.sources.idx import copy_gz_verified

    images = DATASETS["mnist"].train_images  # 47 MB uncompressed
    with tmpfs(tmp_path / "data", "4m") as mount:
        with pytest.raises(UserError) as refused:
            copy_gz_verified(DATA_DIR / "MNIST" / "raw" / images.name, mount, images, "a local copy")
        assert not isinstance(refused.value, DataError)  # DataError is what makes `auto` try another source
        assert str(refused.value) == (f"cannot write {mount / images.name} (No space left on device): free some space "
                                      "(or raise the limit on file sizes, ulimit -f), or choose another --data-dir")
        assert list(mount.iterdir()) == []  # the partial copy is gone
        # the pypi source writes the arrays it rebuilt (write_idx), not a copy: the same (helper-65)
        from mnist_classifier.sources.idx import install_verified, write_idx
        import numpy as np

        with pytest.raises(UserError, match=rf"^cannot write {mount / images.name} \(No space left on device\)"):
            install_verified(mount, images, "pypi", lambda out: write_idx(out, np.zeros((60_000, 28, 28), np.uint8)))
        assert list(mount.iterdir()) == []
