"""torchrun with two CPU processes (gloo) against one process: same job, same results."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mnist_classifier.checkpoint import load_checkpoint
from mnist_classifier.reader import load_predictor
from mnist_classifier.training import train

from .conftest import DATA_DIR, REPO_ROOT
from .test_full_disk import CHECKPOINT_MB, fill_after_first_epoch, tmpfs
from .test_training import quiet, small_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun_train(tmp_path, *flags, timeout=300):
    command = [*TORCHRUN, "-m", "mnist_classifier", "train", "--limit-train", "5000", "--epochs", "2",
               "--batch-size", "100", "--seed", "7", "--data-dir", str(DATA_DIR),
               "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs"), *flags]
    # A rank that aborts in native code prints where its Python stood.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def failure_text(done) -> str:
    """Each rank's own error line comes early; torchrun's summary of who failed comes last."""
    return done.stderr[:1500] + "\n...\n" + done.stderr[-1000:]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, mnist_raw_dir):
    folder = tmp_path_factory.mktemp("ddp")
    done = torchrun_train(folder)
    assert done.returncode == 0, failure_text(done)
    return folder, done


def test_two_processes_train_and_write_one_set_of_outputs(two_process_run):
    folder, done = two_process_run
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["simple_cnn_best.pth", "simple_cnn_last.pth"]
    assert len(list((folder / "runs").iterdir())) == 1
    assert done.stdout.count("test accuracy") == 1  # only rank 0 reports
    payload = load_checkpoint(folder / "models" / "simple_cnn_last.pth")
    assert payload["world_size"] == 2
    checksums = payload["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_two_processes_match_one_process_within_a_point(two_process_run, tmp_path):
    folder, _ = two_process_run
    ddp = load_checkpoint(folder / "models" / "simple_cnn_last.pth")
    single = train(small_config(tmp_path, limit_train=5000, epochs=2, batch_size=100, seed=7), log=quiet)
    single_accuracy = load_checkpoint(single.last_path)["accuracy"]
    assert abs(ddp["accuracy"] - single_accuracy) <= 0.01
    assert ddp["accuracy"] > 0.85


def test_torchrun_checkpoint_loads_in_one_process(two_process_run, mnist_data):
    folder, _ = two_process_run
    predictor = load_predictor(folder / "models" / "simple_cnn_best.pth")
    images = mnist_data.test.images[:200].numpy()
    accuracy = (predictor.predict(images).argmax(1) == mnist_data.test.labels[:200].numpy()).mean()
    assert accuracy > 0.85


def test_torchrun_resumes_a_single_process_run(tmp_path, mnist_raw_dir):
    partial = train(small_config(tmp_path, limit_train=5000, epochs=2, batch_size=100, seed=7), log=quiet,
                    stop_after_epochs=1)
    done = torchrun_train(tmp_path, "--resume", str(partial.last_path))
    assert done.returncode == 0, failure_text(done)
    resumed = load_checkpoint(tmp_path / "models" / "simple_cnn_last.pth")
    assert resumed["epoch"] == 2 and resumed["world_size"] == 2
    assert len(resumed["history"]["val_acc"]) == 2
    assert "note: this resume runs with processes 1 -> 2, so its weights will differ slightly" in done.stdout


@pytest.mark.parametrize("killed", [1, 0])
def test_a_rank_killed_mid_run_leaves_one_line_and_a_resume_point(tmp_path, mnist_raw_dir, killed):
    """helper-56: the survivor printed gloo's 30-line traceback; now one line naming the resume.
    helper-87: with rank 0 killed, torchrun's SIGTERM reached rank 1 first, which said nothing."""
    command = [*TORCHRUN, "-m", "mnist_classifier", "train", "--limit-train", "3000", "--epochs", "30",
               "--batch-size", "100", "--data-dir", str(DATA_DIR), "--save-dir", str(tmp_path / "models"),
               "--log-dir", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = tmp_path / "models" / "simple_cnn_last.pth"
    deadline = time.monotonic() + 240
    while not last.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.is_file(), job.communicate(timeout=60)
    # Rank 1 meets the broken connection or torchrun's SIGTERM first, as it happens to be in a collective
    # or computing. (Frozen with SIGSTOP to force the SIGTERM, it once sat in the epoch's closing
    # collective until torchrun killed it: gloo had not seen the peer go. distributed.main_rank_gone is
    # tested with real processes below.)
    os.kill(rank_pid(job.pid, killed), signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    # rank 0 meets the broken connection first, or torchrun stops it (SIGTERM) first: either way one line
    # gloo says "reset" or "closed" by peer, as the connection happened to end
    lost = (r"error: another process of this run ended \((connection (?:reset|closed) by peer|rank 0 died)\): "
            r"epoch (\d+) of 30 is "
            r"saved; resume with `torchrun <the same options> -m mnist_classifier train --resume "
            rf"{re.escape(str(last))}`")
    stopped = rf"interrupted: the last finished epoch is saved;.*train --resume {re.escape(str(last))}`"
    # only rank 0 names an interrupt: the survivor of a killed rank 0 says that it is lost
    said = [re.fullmatch(pattern, row) for row in stderr.splitlines() for pattern in (lost, stopped)[:1 + killed]]
    assert sum(match is not None for match in said) == 1, stderr[-3000:]
    named = [int(match[2]) for match in said if match is not None and match.re.pattern == lost]
    # helper-73: it counted an epoch still being validated, one the file did not hold yet
    assert all(epoch == torch.load(last, weights_only=True)["epoch"] for epoch in named), (named, stderr[-3000:])
    assert not re.search(r"\[rank\d\]: ?Traceback", stderr), stderr[-3000:]


def rank_pid(launcher: int, rank: int) -> int:
    """The process torchrun (`launcher`) started as `rank`: its child whose environment says so."""
    for task in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((task / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (task / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(task.name)
    raise AssertionError(f"no rank {rank} process under torchrun {launcher}")


def test_a_job_on_checkpoints_another_train_is_saving_stops_every_rank_in_one_line(tmp_path, mnist_raw_dir):
    """The claim was rank 0's alone: the other rank went on and then reported rank 0 as a lost peer."""
    from mnist_classifier.config import resolve_config
    from mnist_classifier.run_files import CheckpointClaim

    held = CheckpointClaim(resolve_config(None, {"save_dir": str(tmp_path / "models")}))  # as a running train holds it
    try:
        done = torchrun_train(tmp_path, timeout=120)
    finally:
        held.release()
    assert done.returncode != 0
    errors = [row for row in done.stderr.splitlines() if "error:" in row]
    assert len(errors) == 1 and "another `train` is saving" in errors[0], failure_text(done)
    assert "another process of this run ended" not in done.stderr
    assert "training simple_cnn on" not in done.stdout  # refused before the first step
    assert not (tmp_path / "models" / "simple_cnn_last.pth").exists()


def test_a_save_failing_on_rank_0_is_one_line_naming_the_epoch_on_disk(tmp_path, mnist_raw_dir):
    """The other rank saved nothing, yet went on to report rank 0 as a lost peer, naming an epoch
    one past the one on disk."""
    # The recipe keeps the weights' moving average too: its three files take ~19 MB
    with tmpfs(tmp_path / "models", f"{round(CHECKPOINT_MB * 4.5)}m") as mount:
        last = mount / "simple_cnn_last.pth"
        filler = threading.Thread(target=fill_after_first_epoch, args=(mount, last))
        filler.start()
        done = torchrun_train(tmp_path, "--limit-train", "1000", timeout=180)
        filler.join()
        assert done.returncode != 0
        errors = [row for row in done.stderr.splitlines() if "error:" in row]
        assert len(errors) == 1, failure_text(done)
        assert "No space left on device" in errors[0] and errors[0].endswith(
            f"then resume with `torchrun <the same options> -m mnist_classifier train --resume {last}`"), errors[0]
        assert "another process of this run ended" not in done.stderr
        assert "training.py" not in done.stderr and "Connection closed by peer" not in done.stderr, failure_text(done)
        assert load_checkpoint(last)["epoch"] == 1


def test_global_batch_must_split_evenly(tmp_path, mnist_raw_dir):
    done = torchrun_train(tmp_path, "--batch-size", "101", timeout=120)
    assert done.returncode != 0
    assert "must divide evenly over 2 processes" in done.stderr


def test_sync_batchnorm_on_cpu_processes_is_one_line_not_a_traceback(tmp_path, mnist_raw_dir):
    recipe = tmp_path / "sync.yaml"
    recipe.write_text("model_name: simple_cnn\nsync_batchnorm: true\n")
    done = torchrun_train(tmp_path, "--config", str(recipe), timeout=120)
    assert done.returncode != 0
    assert "error: sync_batchnorm works across GPUs only, and these processes train on the cpu" in done.stderr
    # torchrun's own summary of the failed ranks has a traceback of its own; the ranks print one line
    assert "SyncBatchNorm layers only work" not in done.stderr and "training.py" not in done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_clear_line(tmp_path, capsys):
    from mnist_classifier.cli import main

    status = main(["train", "--device", "cuda", "--save-dir", str(tmp_path / "m"), "--log-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("error: device cuda asked for (--device, or device in the config), but this machine "
                          "has no CUDA GPU")
    assert err.endswith("use cpu or auto") and "\n" not in err


def test_rank_0_counts_as_gone_once_ended_even_before_torchrun_reaps_it():
    from mnist_classifier.distributed import Context, main_rank_gone

    def rank_1_beside(pid: int) -> Context:
        return Context(rank=1, local_rank=1, world_size=2, device=torch.device("cpu"), main_pid=pid)

    living = subprocess.Popen(["sleep", "30"])
    ended = subprocess.Popen(["true"])
    try:
        while Path(f"/proc/{ended.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)  # ended, not yet waited for: a zombie still answers kill(pid, 0)
        assert main_rank_gone(rank_1_beside(ended.pid))
        assert not main_rank_gone(rank_1_beside(living.pid))
        assert not main_rank_gone(Context(0, 0, 2, torch.device("cpu"), main_pid=ended.pid))  # rank 0 asks of nobody
    finally:
        living.kill()
        living.wait()
        ended.wait()
    assert main_rank_gone(rank_1_beside(ended.pid))  # reaped
