"""Training survives kill -9 (anywhere, including mid-checkpoint-write) and Ctrl-C."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_classifier.checkpoint import load_checkpoint
from mnist_classifier.training import train

from .conftest import DATA_DIR, REPO_ROOT
from .test_training import quiet, small_config

RUN = dict(limit_train=2000, epochs=3, batch_size=100, seed=11)
FLAGS = ["--limit-train", "2000", "--epochs", "3", "--batch-size", "100", "--seed", "11"]


def cli_train(folder, *extra, env_extra=None):
    command = [sys.executable, "-m", "mnist_classifier", "train", *FLAGS, "--data-dir", str(DATA_DIR),
               "--save-dir", str(folder / "models"), "--log-dir", str(folder / "runs"), *extra]
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def resume_flags(folder):
    last = folder / "models" / "simple_cnn_last.pth"
    return ["--resume", str(last)] if last.exists() else []


def assert_every_checkpoint_loads(folder):
    for path in (folder / "models").glob("*.pth"):
        load_checkpoint(path)  # raises on a torn file


def assert_same_weights(path_a, path_b):
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a["epoch"] == b["epoch"]
    for key, tensor in a["model_state_dict"].items():
        assert torch.equal(tensor, b["model_state_dict"][key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_raw_dir):
    folder = tmp_path_factory.mktemp("reference")
    return train(small_config(folder, **RUN), log=quiet).last_path


def test_ten_random_kill_9s_lose_nothing(tmp_path, reference):
    chance = random.Random(20261124)
    kills = 0
    while kills < 10:
        process = cli_train(tmp_path, *resume_flags(tmp_path))
        # A process takes ~4 s to start (torch, the data, the set-up) before its ~0.4 s epochs and
        # its closing calibration and test: the first kills come before any process could finish,
        # so that at least three land whatever the machine's speed; later ones reach further.
        time.sleep(chance.uniform(1.5, 3.5) if kills < 3 else chance.uniform(1.5, 6.0))
        if process.poll() is not None:  # it finished first: the run is complete
            break
        process.send_signal(signal.SIGKILL)
        process.communicate()
        kills += 1
        assert_every_checkpoint_loads(tmp_path)
    finish = cli_train(tmp_path, *resume_flags(tmp_path))
    _, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err[-1500:]
    print(f"kill -9 landed {kills} times; every checkpoint loaded after each; resumed run equals the reference")
    assert kills >= 3  # the run is long enough for the kills to land mid-training
    assert_same_weights(reference, tmp_path / "models" / "simple_cnn_last.pth")


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, reference):
    injector = str(REPO_ROOT / "tests" / "fault_injection")
    # the 2nd write of the resume point is epoch 2's (an epoch that improves also writes best first)
    process = cli_train(tmp_path, env_extra={"PYTHONPATH": injector, "MNIST_FAULT_KILL_ON_SAVE": "2",
                                             "MNIST_FAULT_KILL_SAVES_OF": "_last.pth"})
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    last = load_checkpoint(tmp_path / "models" / "simple_cnn_last.pth")
    assert last["epoch"] == 1  # the torn write never replaced it
    assert list((tmp_path / "models").glob(".*.tmp"))  # the torn temporary file is there...
    finish = cli_train(tmp_path, *resume_flags(tmp_path))
    _, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err[-1500:]
    assert not list((tmp_path / "models").glob(".*.tmp"))  # ...and is cleaned up on resume
    assert_same_weights(reference, tmp_path / "models" / "simple_cnn_last.pth")


def test_a_run_killed_between_its_best_and_last_saves_is_not_passed_off_as_the_finished_one(tmp_path, reference):
    """A new run in a folder holding a finished run replaces _best.pth first; killed before _last.pth,
    resuming the old _last.pth calibrated, tested and reported the new run's epoch-1 model (helper-44)."""
    shutil.copytree(reference.parent, tmp_path / "models")
    injector = str(REPO_ROOT / "tests" / "fault_injection")
    started = cli_train(tmp_path, env_extra={"PYTHONPATH": injector, "MNIST_FAULT_KILL_ON_SAVE": "1",
                                             "MNIST_FAULT_KILL_SAVES_OF": "_last.pth"})
    started.communicate(timeout=300)
    assert started.returncode == -signal.SIGKILL
    best, last = (load_checkpoint(tmp_path / "models" / f"simple_cnn_{name}.pth") for name in ("best", "last"))
    assert (best["epoch"], last["epoch"]) == (1, 3) and best["run_id"] != last["run_id"]
    resumed = cli_train(tmp_path, *resume_flags(tmp_path))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 2
    assert "come from two different runs" in err and "start a new run without --resume" in err
    assert load_checkpoint(tmp_path / "models" / "simple_cnn_best.pth")["epoch"] == 1  # nothing rewritten
    elsewhere = cli_train(tmp_path, *resume_flags(tmp_path), "--save-dir", str(tmp_path / "elsewhere"))
    _, err = elsewhere.communicate(timeout=300)
    assert elsewhere.returncode == 2 and "come from two different runs" in err
    assert not (tmp_path / "elsewhere").exists()  # refused before the pair was copied there


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, mnist_raw_dir):
    process = cli_train(tmp_path)
    last = tmp_path / "models" / "simple_cnn_last.pth"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert f"--resume {last}" in err
    assert load_checkpoint(last)["epoch"] >= 1


def test_ctrl_c_while_preparing_the_set_up_is_one_line(tmp_path, mnist_raw_dir):
    data = data_folder_of_its_own(tmp_path, mnist_raw_dir)  # this run makes its extras afresh
    command = [sys.executable, "-m", "mnist_classifier", "train", "--limit-train", "20000", "--data-dir", str(data),
               "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("preparing "):  # seconds of work on 20,000 digits
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted before the first epoch finished: nothing to resume, start again"
    assert not list((tmp_path / "models").glob("*.pth"))


def test_ctrl_c_while_a_resumed_run_sets_up_points_back_at_its_resume_point(small_checkpoint, monkeypatch, capsys,
                                                                           tmp_path):
    """It said "nothing to resume, start again" of a run whose resume point was right there (helper-44)."""
    from mnist_classifier import training
    from mnist_classifier.cli import main

    last = small_checkpoint.parent / "simple_cnn_last.pth"

    def interrupted_while_preparing(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted_while_preparing)
    assert main(["train", "--resume", str(last)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: the last finished epoch is saved; resume with `mnist-classifier train --resume {last}`")
    moved = tmp_path / "moved"  # --save-dir copied the run there before its set-up: that copy goes on
    assert main(["train", "--resume", str(last), "--save-dir", str(moved)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: the last finished epoch is saved; resume with `mnist-classifier train --resume "
        f"{moved / last.name}`")


def test_ctrl_c_in_a_new_runs_first_epoch_points_at_no_earlier_run(tmp_path, mnist_raw_dir, small_checkpoint):
    """An earlier run's resume point in the same --save-dir is not this run's: nothing to resume,
    that file untouched, and no half run left in TensorBoard's folder."""
    models, runs, data = tmp_path / "models", tmp_path / "runs", data_folder_of_its_own(tmp_path, mnist_raw_dir)
    models.mkdir()
    earlier = models / "simple_cnn_last.pth"
    shutil.copyfile(small_checkpoint, earlier)
    command = [sys.executable, "-m", "mnist_classifier", "train", "--limit-train", "20000", "--data-dir",
               str(data), "--save-dir", str(models), "--log-dir", str(runs)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("config: "):  # printed as the first epoch starts: its TensorBoard folder is open
            break
    assert list(runs.iterdir()), "the run's TensorBoard folder should exist by now"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted before the first epoch finished: nothing to resume, start again"
    assert earlier.read_bytes() == small_checkpoint.read_bytes()
    assert list(runs.iterdir()) == []


def data_folder_of_its_own(tmp_path: Path, mnist_raw_dir: Path) -> Path:
    """MNIST's files without data/prepared/: a run there prepares its extras afresh, and keeps them out of data/."""
    data = tmp_path / "data"
    (data / "MNIST").mkdir(parents=True)
    (data / "MNIST" / "raw").symlink_to(mnist_raw_dir)
    return data
