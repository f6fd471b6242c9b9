"""Short real training runs on small slices of real MNIST."""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import sys

import pytest
import torch

from mnist_classifier.checkpoint import check_writable, load_checkpoint, save_checkpoint
from mnist_classifier.cli import main
from mnist_classifier.config import resolve_config
from mnist_classifier import training
from mnist_classifier.errors import UserError
from mnist_classifier.run_files import new_run_folder, resume_config
from mnist_classifier.optimization import build_scheduler
from mnist_classifier.training import train

from .conftest import DATA_DIR, REPO_ROOT


def small_config(tmp_path, **changes):
    values = dict(limit_train=1200, epochs=2, batch_size=100, seed=7, data_dir=str(DATA_DIR),
                  save_dir=str(tmp_path / "models"), log_dir=str(tmp_path / "runs"))
    values.update(changes)
    return resolve_config(None, values)


def quiet(_line):
    pass


def test_short_run_learns_far_above_chance(tmp_path, mnist_raw_dir):
    seen = []  # (epochs done, the weights the hook was shown)

    def after_epoch(epochs_done, model):
        seen.append((epochs_done, {key: value.clone() for key, value in model.state_dict().items()}))

    result = train(small_config(tmp_path, limit_train=3000, epochs=2), log=quiet, after_epoch=after_epoch)
    assert result.best_val_accuracy > 0.90
    assert result.test_accuracy > 0.90
    assert len(result.history["val_acc"]) == 2
    # The hook (benchmarks/seed_loop.py tests there) sees each epoch's model as it was checkpointed
    assert [epochs_done for epochs_done, _ in seen] == [1, 2]
    last = load_checkpoint(result.last_path)["model_state_dict"]
    assert all(torch.equal(seen[-1][1][key], tensor) for key, tensor in last.items())
    assert not all(torch.equal(seen[0][1][key], tensor) for key, tensor in last.items())


def test_resume_continues_exactly_beside_the_file_it_resumes(tmp_path, mnist_raw_dir):
    straight = train(small_config(tmp_path / "a"), log=quiet)
    partial = train(small_config(tmp_path / "b"), log=quiet, stop_after_epochs=1)
    assert partial.epochs_done == 1
    original = partial.last_path.parent
    before = {path.name: path.stat().st_mtime_ns for path in original.iterdir()}
    copy = tmp_path / "copied"  # a run copied (or moved) continues in its new folder
    shutil.copytree(original, copy)
    # the folders and the hardware may change on resume (an AVX2 laptop has no fast bf16)
    config, payload = resume_config(copy / partial.last_path.name, {"device": "cpu"})
    assert config.save_dir == str(copy) and payload["run_dir"] is None
    resumed = train(config, resume_payload=payload, log=quiet)
    assert resumed.last_path == copy / partial.last_path.name and resumed.run_dir != partial.run_dir
    assert {path.name: path.stat().st_mtime_ns for path in original.iterdir()} == before  # left alone
    a = load_checkpoint(straight.last_path)
    b = load_checkpoint(resumed.last_path)
    assert a["epoch"] == b["epoch"] == 2
    assert a["config"]["weight_average"] > 0  # the recipe's: the average resumes too
    for weights in ("model_state_dict", "trained_state_dict"):
        for key, tensor in a[weights].items():
            assert torch.equal(tensor, b[weights][key]), (weights, key)
    assert a["weight_average"] == b["weight_average"] == {"updates": 2 * 12}
    assert not torch.equal(a["model_state_dict"]["fc1.weight"], a["trained_state_dict"]["fc1.weight"])
    assert a["history"]["val_acc"] == b["history"]["val_acc"]
    same, kept = resume_config(partial.last_path, {"save_dir": f"{original}/.", "precision": "fp32"})
    assert (same.save_dir, same.precision) == (f"{original}/.", "fp32")
    assert kept["run_dir"] == str(partial.run_dir)  # the same folder spelt otherwise: the same TensorBoard run
    # helper-80: the run's own --log-dir given again is the same TensorBoard run; another one is a new run there
    _, again = resume_config(partial.last_path, {"log_dir": str(partial.run_dir.parent) + "/."})
    assert again["run_dir"] == str(partial.run_dir)
    _, elsewhere = resume_config(partial.last_path, {"log_dir": str(tmp_path / "other-runs")})
    assert elsewhere["run_dir"] is None
    moved = tmp_path / "moved"  # --save-dir elsewhere: the run's two checkpoints go there first
    resume_config(partial.last_path, {"save_dir": str(moved)})
    assert sorted(path.name for path in moved.iterdir()) == sorted((partial.best_path.name, partial.last_path.name))
    resume_config(partial.last_path, {"save_dir": str(moved)})  # a copy of this run: replaced
    # ...unless it holds this run further on: the command run again from history rewound a finished run (helper-94)
    finished_there = {path.name: path.read_bytes() for path in copy.glob("*.pth")}
    with pytest.raises(UserError, match=rf"holds this run further on \(epoch \d, [\d.]+% test\) than .*: --resume "
                                        rf"--save-dir would take it back; resume with --resume {copy / partial.last_path.name}$"):
        resume_config(partial.last_path, {"save_dir": str(copy)})
    assert {path.name: path.read_bytes() for path in copy.glob("*.pth")} == finished_there
    others = straight.best_path.parent  # another run's models: never replaced (helper-56)
    kept_there = {path.name: path.read_bytes() for path in others.glob("*.pth")}
    with pytest.raises(UserError, match=f"^{straight.best_path} holds another run's model, .*% test: --resume "):
        resume_config(partial.last_path, {"save_dir": str(others)})
    assert {path.name: path.read_bytes() for path in others.glob("*.pth")} == kept_there
    older = tmp_path / "older"  # a model saved before run ids (the bundled one's files): told by its weights
    older.mkdir()
    save_checkpoint({key: value for key, value in load_checkpoint(straight.best_path).items() if key != "run_id"},
                    older / partial.best_path.name)
    with pytest.raises(UserError, match="holds another run's model"):
        resume_config(partial.last_path, {"save_dir": str(older)})
    assert not list(moved.glob(".*.tmp")) and not list(others.glob(".*.tmp"))  # copies are written whole, then renamed
    alone = tmp_path / "only-last"
    alone.mkdir()
    shutil.copy(partial.last_path, alone)
    with pytest.raises(UserError, match=f"^{alone / partial.best_path.name} is missing: --resume needs"):
        resume_config(alone / partial.last_path.name, {})


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, mnist_raw_dir):
    folder = tmp_path_factory.mktemp("one_epoch")
    return folder, train(small_config(folder, epochs=1, save_interval=1), log=quiet)


def test_checkpoints_are_plain_weights_only_dicts(one_epoch):
    tmp_path, result = one_epoch
    best = torch.load(result.best_path, weights_only=True)
    for key in ("model_state_dict", "optimizer_state_dict", "epoch", "accuracy", "loss", "model_name",
                "config", "history", "normalization", "format_version", "test_accuracy"):
        assert key in best, key
    assert best["normalization"] == {"mean": 0.1307, "std": 0.3081}
    assert best["config"]["model_name"] == "simple_cnn"
    stamped = [p for p in (tmp_path / "models").glob("simple_cnn_*.pth") if p.stem[-1].isdigit()]
    assert len(stamped) == 1
    assert not list((tmp_path / "models").glob("*.tmp"))


def test_tensorboard_run_has_the_seed_tags(one_epoch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, result = one_epoch
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("Train/Loss_batch", "Train/Acc_batch", "Train/Loss_epoch", "Train/Acc_epoch",
                "Val/Loss_epoch", "Val/Acc_epoch", "LR"):
        assert tag in tags, tag
    assert (result.run_dir / "config.yaml").read_text().startswith("model_name: simple_cnn")
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["augment"].string_value == "true" and hparams["sync_batchnorm"].string_value == "false"
    assert hparams["model_options.pool_first"].string_value == "true"  # on/off as words, not 1.0 and 0.0
    assert hparams["weight_average"].number_value == 0.99 and hparams["epochs"].number_value == 1


def test_a_resumed_run_of_one_step_epochs_keeps_every_finished_epoch_in_tensorboard(tmp_path, mnist_raw_dir):
    """helper-56: with one step an epoch, the resume's purge (from the unfinished epoch's first step)
    fell on the last finished epoch's point, and its curves lost it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(tmp_path, limit_train=150, epochs=3, batch_size=100)  # 1 step an epoch
    partial = train(config, log=quiet, stop_after_epochs=2)
    resumed_config, payload = resume_config(partial.last_path, {})
    resumed = train(resumed_config, resume_payload=payload, log=quiet)
    events = EventAccumulator(str(resumed.run_dir))
    events.Reload()
    assert [event.step for event in events.Scalars("Val/Acc_epoch")] == [1, 2, 3]
    assert "Train/Loss_batch" not in events.Tags()["scalars"]  # one point an epoch: the epoch's says it


@pytest.mark.parametrize("flags,message", [
    (["--model", "lenet"], "unknown model 'lenet'"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "-3"], "batch_size must be a positive integer"),
    (["--resume", "models/nowhere_last.pth"], "not found"),
    (["--seed", "-1"], "seed must be >= 0"),
])
def test_bad_train_flags_fail_before_any_work(tmp_path, capsys, flags, message):
    status = main(["train", "--save-dir", str(tmp_path / "m"), "--log-dir", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags,message", [
    (["--limit-train", "10"], "10 training images make no full batch of 128: train on at least 128"),
    (["--limit-train", "500", "--batch-size", "1000"], "500 training images make no full batch of 1000"),
    # the whole split is too small: no --limit-train can help (helper-63's sweep, helper-65's review)
    (["--batch-size", "100000"], "55,000 training images make no full batch of 100000: lower --batch-size to at "
                                 "most 55,000"),
    (["--limit-train", "55000", "--batch-size", "60000"], "55,000 training images make no full batch of 60000: "
                                                          "lower --batch-size to at most 55,000"),
])
def test_fewer_images_than_a_batch_is_one_line_not_a_crash(tmp_path, capsys, mnist_raw_dir, flags, message):
    status = main(["train", "--data-dir", str(DATA_DIR), "--save-dir", str(tmp_path / "m"),
                   "--log-dir", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "m").glob("*.pth"))


def test_a_validation_split_as_large_as_the_training_set_is_refused(tmp_path):
    from mnist_classifier.data import load_data
    from mnist_classifier.errors import UserError

    with pytest.raises(UserError, match="val_size 60,000 leaves no room in mnist's 60,000 training images"):
        load_data(DATA_DIR, val_size=60_000, log=quiet)


def test_unwritable_save_dir_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = main(["train", "--save-dir", str(blocker / "models"), "--log-dir", str(tmp_path / "r")])
    assert status == 2
    assert "cannot write to" in capsys.readouterr().err
    # a folder that exists yet takes no files: the reason said plainly, not "No such file or directory"
    assert main(["train", "--save-dir", "/proc", "--log-dir", str(tmp_path / "r")]) == 2
    assert "cannot write to /proc (it takes no new files)" in capsys.readouterr().err
    assert main(["train", "--save-dir", str(blocker), "--log-dir", str(tmp_path / "r")]) == 2
    assert f"cannot write to {blocker} (it is a file, not a folder)" in capsys.readouterr().err


def test_a_run_refused_after_the_folder_checks_leaves_no_empty_folders(tmp_path, capsys):
    status = main(["train", "--data-dir", str(DATA_DIR), "--limit-train", "50", "--batch-size", "100",
                   "--save-dir", str(tmp_path / "m" / "deep"), "--log-dir", str(tmp_path / "r")])
    assert status == 2 and "make no full batch of 100" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_the_usual_permissions_not_owner_only(tmp_path):
    from mnist_classifier.files import write_atomically

    umask = os.umask(0o022)
    os.umask(umask)
    checkpoint = save_checkpoint({"epoch": 1}, tmp_path / "a.pth")
    model = write_atomically(tmp_path / "a.onnx", b"bytes")
    for path in (checkpoint, model):  # mkstemp's 0600 would lock out everyone else on the machine
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    checkpoint.chmod(0o640)  # a file replaced in place (calibrate) keeps the mode its owner gave it
    assert stat.S_IMODE(save_checkpoint({"epoch": 2}, checkpoint).stat().st_mode) == 0o640


def test_a_symlinked_checkpoint_is_replaced_by_train_and_rewritten_through_by_calibrate(tmp_path):
    """calibrate through a link replaced the link with a file and left the real checkpoint as it
    was (helper-43); train must still never write through one (into the package, a read-only file)."""
    target = save_checkpoint({"epoch": 1}, tmp_path / "real" / "a.pth")
    link = tmp_path / "link.pth"
    link.symlink_to(target)
    assert save_checkpoint({"epoch": 2}, link, through_link=True) == link
    assert link.is_symlink() and torch.load(target, weights_only=True)["epoch"] == 2
    save_checkpoint({"epoch": 3}, link)  # train's saves: the link goes, the file it named stays
    assert not link.is_symlink() and torch.load(target, weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp")) and not list(target.parent.glob(".*.tmp"))


def test_cleaning_up_leaves_a_write_in_progress_alone(tmp_path):
    """Every `train` removes what killed saves left in its folder; a run saving there at that moment
    lost its temporary file and crashed (helper-44). A write holds a lock on its file until the rename."""
    from mnist_classifier.checkpoint import remove_partial_writes

    running, killed = tmp_path / ".improved_cnn_best.pth.r4n5cd.tmp", tmp_path / ".simple_cnn_last.pth.q8w7e6.tmp"
    for path in (running, killed):
        path.write_bytes(b"partial")
    writer = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(running)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        assert remove_partial_writes(tmp_path) == [killed]
        assert running.exists() and not killed.exists()
    finally:
        writer.kill()
        writer.wait()
    assert remove_partial_writes(tmp_path) == [running]  # its writer gone, the lock went with it


def test_processes_checking_one_folder_at_once_do_not_trip_each_other(tmp_path):
    # torchrun starts every rank at the same moment, and each checks the shared save dir.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: check_writable(tmp_path), range(400)))
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_finished_run_does_nothing_and_says_so(one_epoch, capsys):
    _, result = one_epoch
    before = {path: path.stat().st_mtime_ns for path in (result.best_path, result.last_path)}
    config, finished = resume_config(result.last_path, {})
    lines = []
    again = train(config, resume_payload=finished, log=lines.append)
    assert lines == [f"this run already trained all 1 epochs and was calibrated and tested "
                     f"({result.test_accuracy:.2%}): nothing to do; start a new run without --resume to train afresh"]
    assert (again.best_path, again.test_accuracy) == (result.best_path, result.test_accuracy)
    assert {path: path.stat().st_mtime_ns for path in before} == before  # nothing rewritten, nothing logged twice


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    first, second = new_run_folder(str(tmp_path), "simple_cnn"), new_run_folder(str(tmp_path), "simple_cnn")
    assert first != second and first.is_dir() and second.is_dir()


def test_ctrl_c_in_the_closing_test_names_the_resume_that_finishes_it(one_epoch, tmp_path, capsys, monkeypatch):
    _, result = one_epoch
    save_dir = tmp_path / "models"
    shutil.copytree(result.last_path.parent, save_dir)
    earlier = load_checkpoint(save_dir / result.best_path.name)["test_accuracy"]

    def interrupted(_trainer):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "test_best", interrupted)
    status = main(["train", "--limit-train", "1200", "--epochs", "1", "--batch-size", "100", "--data-dir",
                   str(DATA_DIR), "--save-dir", str(save_dir), "--log-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert status == 130
    assert f"note: {save_dir / result.best_path.name} holds an earlier run's model, {earlier:.2%} test" in out
    last = save_dir / result.last_path.name
    assert err.strip() == f"interrupted: the last finished epoch is saved; resume with `mnist-classifier train " \
                          f"--resume {last}`"


def test_ctrl_c_after_the_test_leaves_its_figures_in_tensorboard(tmp_path, monkeypatch, mnist_raw_dir, mnist_data):
    """Stopped once the best checkpoint held its test result, a resume had nothing to do and the test
    figures were never written (helper-44): they are now on disk before that file says the run is done.
    Their confidences are calibrated, as evaluate's report shows them (helper-81: TensorBoard's most
    confident mistakes read 97%, 94% ... where the report, from the same model, read 100%, 99.8% ...)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mnist_classifier import run_log
    from mnist_classifier.checkpoint import model_from_checkpoint, stored_normalization
    from mnist_classifier.evaluation import compute_logits

    drawn = []
    real_figures = run_log.log_test_figures
    monkeypatch.setattr(run_log, "log_test_figures",
                        lambda writer, logits, *rest: drawn.append(logits) or real_figures(writer, logits, *rest))
    real_save = training.save_checkpoint

    def stopped_at_the_closing_save(payload, path):
        if "test_accuracy" in payload:
            raise KeyboardInterrupt
        return real_save(payload, path)

    monkeypatch.setattr(training, "save_checkpoint", stopped_at_the_closing_save)
    flags = ["--limit-train", "300", "--epochs", "1", "--batch-size", "100", "--data-dir", str(DATA_DIR),
             "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")]
    assert main(["train", *flags]) == 130
    [run_dir] = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"Test/confusion_matrix", "Test/misclassified"} <= set(events.Tags()["images"])
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert main(["train", "--resume", str(tmp_path / "models" / "simple_cnn_last.pth")]) == 0
    payload = load_checkpoint(tmp_path / "models" / "simple_cnn_best.pth")
    assert isinstance(payload["test_accuracy"], float)
    raw = compute_logits(model_from_checkpoint(payload), mnist_data.test, stored_normalization(payload))
    assert payload["temperature"] != 1.0 and len(drawn) == 2
    assert torch.allclose(drawn[-1], raw / payload["temperature"], atol=1e-3)


def test_resume_refuses_a_contradicting_flag(one_epoch, capsys):
    _, result = one_epoch
    status = main(["train", "--resume", str(result.last_path), "--model", "improved_cnn"])
    assert status == 2
    assert "model_name is 'simple_cnn'" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["no history", "no optimizer state", "a word for an epoch", "no config",
                                    "a word for a precision", "a word for an accuracy", "a number for a history"])
def test_a_damaged_resume_point_is_one_line_not_a_traceback(one_epoch, tmp_path, capsys, damage):
    _, result = one_epoch
    payload = load_checkpoint(result.last_path)
    changes = {"no history": {"history": None}, "no optimizer state": {"optimizer_state_dict": "lost"},
               "a word for an epoch": {"epoch": "one"}, "no config": {"config": None},
               "a word for a precision": {"precision": "bf16"}, "a word for an accuracy": {"best_accuracy": "n/a"},
               "a number for a history": {"history": {"train_loss": 0.5}}}[damage]
    damaged = tmp_path / "models" / result.last_path.name
    save_checkpoint({key: value for key, value in {**payload, **changes}.items() if value is not None}, damaged)
    shutil.copy(result.best_path, damaged.parent)
    assert main(["train", "--resume", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    expected = ("stores no config (made by the original project?)" if damage == "no config" else
                f"is no usable resume point (its {next(iter(changes))} missing or damaged)")
    assert expected in err


def test_snapshots_of_epochs_ending_in_the_same_second_are_all_kept(tmp_path, mnist_raw_dir):
    result = train(small_config(tmp_path, limit_train=300, epochs=3, save_interval=1), log=quiet)
    snapshots = sorted(set(result.last_path.parent.glob("simple_cnn_2*.pth")))
    assert sorted(load_checkpoint(path)["epoch"] for path in snapshots) == [1, 2, 3]


def test_resume_from_another_folder_keeps_the_projects_data_and_runs(one_epoch, tmp_path, monkeypatch):
    _, result = one_epoch
    project = tmp_path / "project"  # started here with the default relative folders
    (project / "runs" / "simple_cnn_1").mkdir(parents=True)
    (project / "data").symlink_to(DATA_DIR)
    for source in (result.best_path, result.last_path):
        payload = load_checkpoint(source)
        stored = {**payload["config"], "save_dir": "models", "data_dir": "data", "log_dir": "runs"}
        save_checkpoint({**payload, "config": stored, "run_dir": "runs/simple_cnn_1"}, project / "models" / source.name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config, payload = resume_config(project / "models" / result.last_path.name, {})
    assert (config.data_dir, config.log_dir) == (str(project / "data"), str(project / "runs"))
    assert payload["run_dir"] == str(project / "runs" / "simple_cnn_1")  # its TensorBoard run goes on
    monkeypatch.chdir(project)  # from the project itself nothing moves
    config, payload = resume_config(Path("models") / result.last_path.name, {})
    assert (config.data_dir, config.log_dir, payload["run_dir"]) == ("data", "runs", "runs/simple_cnn_1")


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mnist_classifier", "train", "--epochs", "-1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: epochs must be a positive integer, got -1"


@pytest.mark.parametrize("steps", range(1, 13))
def test_the_one_cycle_schedule_runs_for_any_number_of_steps(steps):
    # 25% warm-up of exactly 4 steps is 0 steps, and OneCycleLR divided by it (a tiny --limit-train run)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    scheduler = build_scheduler(resolve_config(None, {"epochs": 1}), optimizer, steps)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()



def test_a_second_train_saving_the_same_files_is_refused_while_the_first_runs(tmp_path, capsys):
    """helper-80: two runs into one --save-dir overwrote each other's models, both reporting success."""
    from mnist_classifier.run_files import CheckpointClaim

    flags = ["--limit-train", "300", "--epochs", "1", "--batch-size", "100", "--data-dir", str(DATA_DIR),
             "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")]
    first = CheckpointClaim(resolve_config(None, {"save_dir": str(tmp_path / "models")}))  # as a running train holds it
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: another `train` is saving {tmp_path / 'models' / 'simple_cnn_best.pth'} and its _last.pth "
                   "now: wait for it to end, or give this run another --save-dir"), err
    assert not (tmp_path / "models" / "simple_cnn_best.pth").exists()
    assert main(["train", *flags, "--model", "improved_cnn", "--limit-train", "100"]) == 0  # another model's files: free
    first.release()
    assert main(["train", *flags]) == 0
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == [
        "improved_cnn_best.pth", "improved_cnn_last.pth", "simple_cnn_best.pth", "simple_cnn_last.pth"]  # no lock left


def test_a_new_run_whose_first_save_fails_leaves_no_tensorboard_run(tmp_path, monkeypatch, capsys):
    """helper-80: a full disk at the first save left runs/<model>_<time>/ for a run that has no checkpoint
    (Ctrl+C there already removed it)."""
    from mnist_classifier.errors import CheckpointError

    def full_disk(payload, path):
        raise CheckpointError(f"could not save checkpoint {path} (No space left on device): free some space")

    monkeypatch.setattr(training, "save_checkpoint", full_disk)
    assert main(["train", "--limit-train", "300", "--epochs", "1", "--batch-size", "100", "--data-dir", str(DATA_DIR),
                 "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not save checkpoint") and "resume" not in err, err
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_the_resume_command_of_a_torchrun_job_is_torchruns(monkeypatch):
    """helper-80: Ctrl+C of a 2-process torchrun job said `mnist-classifier train --resume ...`, one process."""
    from mnist_classifier.run_files import resume_command

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resume_command("m/simple_cnn_last.pth") == "torchrun <the same options> -m mnist_classifier train " \
                                                       "--resume m/simple_cnn_last.pth"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resume_command("m/simple_cnn_last.pth") == "mnist-classifier train --resume m/simple_cnn_last.pth"


def test_the_claim_holds_against_another_users_lock_file_and_follows_no_link(tmp_path):
    """helper-83: a lock file another user made could not be opened for writing, and the run went on
    unguarded; a link in the lock file's place made a file where it pointed."""
    from mnist_classifier.run_files import CheckpointClaim

    config = resolve_config(None, {"save_dir": str(tmp_path / "models")})
    first = CheckpointClaim(config)
    os.chmod(first.path, 0o444)  # as another user's file is to us: readable, not writable
    with pytest.raises(UserError, match="another `train` is saving"):
        CheckpointClaim(config)
    first.release()
    target = tmp_path / "elsewhere"
    (tmp_path / "models" / ".simple_cnn.lock").symlink_to(target)
    with pytest.raises(UserError, match=r"cannot tell whether another `train` is saving .*remove that file"):
        CheckpointClaim(config)
    assert not target.exists()


def test_a_signal_as_the_last_epoch_lands_on_disk_still_names_its_resume(tmp_path, capsys, monkeypatch, mnist_raw_dir):
    """The CI, under load: torchrun's SIGTERM came between the last-epoch file and the count that
    says it is there, and the run said "nothing to resume, start again" beside its resume point."""
    real_save = training.save_checkpoint

    def signalled_once_written(payload, path):
        written = real_save(payload, path)
        if Path(path).name.endswith("_last.pth"):
            os.kill(os.getpid(), signal.SIGTERM)  # handled as Ctrl+C (cli.cmd_train), at the first chance
            time.sleep(0.2)
        return written

    monkeypatch.setattr(training, "save_checkpoint", signalled_once_written)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    status = main(["train", "--limit-train", "300", "--epochs", "2", "--batch-size", "100", "--data-dir",
                   str(DATA_DIR), "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")])
    last = tmp_path / "models" / "simple_cnn_last.pth"
    assert status == 130 and load_checkpoint(last)["epoch"] == 1
    out, err = capsys.readouterr()
    assert err.strip() == f"interrupted: the last finished epoch is saved; resume with " \
                          f"`mnist-classifier train --resume {last}`"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # each one put back
    # helper-94: the saved epoch is told too, on the terminal and in TensorBoard (a resume would leave a hole)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert re.search(r"^epoch  1/2  train loss ", out, re.MULTILINE), out
    (run,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    assert [event.step for event in events.Scalars("Val/Acc_epoch")] == [1]
