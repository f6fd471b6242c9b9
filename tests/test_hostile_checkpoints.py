"""Every command that loads a checkpoint refuses hostile and broken files with one line.

    .venv/bin/python -m pytest tests/test_hostile_checkpoints.py -q

A checkpoint is a pickle inside a zip; a pickle can name any Python callable, so a file
downloaded from the internet could run code the moment it is loaded. The payloads here
really would (see `test_the_payloads_are_live_when_loaded_unsafely`): they create a marker
file. Every command must refuse them with exit status 2 and one line, the marker must
never appear, and nothing must start (no window, no server, no training, no output file).
"""
from __future__ import annotations

import builtins
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mnist_classifier import cli
from mnist_classifier.checkpoint import load_checkpoint

from .conftest import DATA_DIR


class RunsShellCommand:
    """Unpickling calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class ExecsPython:
    """Unpickling calls builtins.exec(source)."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return builtins.exec, (self.source,)


def good_payload(small_checkpoint) -> dict:
    return torch.load(small_checkpoint, weights_only=True)


def write_hostile(path: Path, marker: Path, kind: str, small_checkpoint) -> Path:
    """A checkpoint that looks right (real weights, real keys) and carries a payload."""
    payload = good_payload(small_checkpoint)
    if kind == "os.system":
        payload["config"] = {**payload["config"], "note": RunsShellCommand(f"touch {marker}")}
    elif kind == "builtins.exec":
        payload["history"] = ExecsPython(f"open({str(marker)!r}, 'w').write('ran')")
    elif kind == "legacy-format":  # torch's pre-1.6 non-zip format, same payload
        payload["extra"] = RunsShellCommand(f"touch {marker}")
        torch.save(payload, path, _use_new_zipfile_serialization=False)
        return path
    torch.save(payload, path)
    return path


def write_broken(path: Path, kind: str, small_checkpoint) -> Path:
    raw = Path(small_checkpoint).read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("model_state_dict: not really\n")
    elif kind == "png":
        path.write_bytes(cv2.imencode(".png", np.zeros((28, 28), np.uint8))[1].tobytes())
    elif kind == "plain-tensor":  # a real torch file, not a checkpoint
        torch.save(torch.zeros(3), path)
    elif kind == "zip-of-text":  # torch quoted its C++ assertion ("enforce fail at inline_container.cc")
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    elif kind == "zip-bomb":  # helper-78: torch.load inflated 1.5 MB of data.pkl to 1.5 GB in memory
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("archive/data.pkl", bytes(32 * 2**20))
    elif kind == "symlink-loop":  # was "not found"
        path.symlink_to(path)
    else:
        payload = good_payload(small_checkpoint)
        if kind == "wrong-architecture":
            payload["model_name"] = "improved_cnn"
        elif kind == "unknown-architecture":
            payload["model_name"] = "resnet9000"
        elif kind == "class-names-string":  # each character would have cost a 256-weight row of the last layer
            payload["class_names"] = "x" * 300_000
        elif kind == "model-name-list":  # a TypeError (unhashable list) in every command
            payload["model_name"] = ["simple_cnn"]
        elif kind == "unknown-dataset":  # "unknown dataset: choose one of ..." blamed the user's flags
            payload["dataset"] = "bogus"
        elif kind == "shape-mismatched":
            weights = dict(payload["model_state_dict"])
            weights["fc1.weight"] = torch.zeros(256, 100)
            payload["model_state_dict"] = weights
        else:
            raise AssertionError(kind)
        torch.save(payload, path)
    return path


HOSTILE = ("os.system", "builtins.exec", "legacy-format")
# What the one line must say, for each kind of broken file.
BROKEN = {
    "truncated": "not a readable PyTorch file",
    "empty": "is not a PyTorch checkpoint",
    "text": "is not a PyTorch checkpoint",
    "png": "is not a PyTorch checkpoint",
    "plain-tensor": "is not an mnist-classifier checkpoint",
    "zip-of-text": "is a zip archive, but not one torch.save wrote",
    "unknown-dataset": "was trained on dataset 'bogus', which this version does not know",
    "wrong-architecture": "do not fit model 'improved_cnn'",
    "unknown-architecture": "unknown model 'resnet9000'",
    "shape-mismatched": "do not fit model 'simple_cnn'",
    "class-names-string": "its class_names are not a list of at most 1000 names",
    "model-name-list": "its model_name is list, not a name",
    "zip-bomb": "would unpack to 32 MB from 0.0 MB",
    "symlink-loop": "is a symbolic link to nothing readable",
}
COMMANDS = ("evaluate", "predict", "export", "serve", "demo", "train --resume", "calibrate", "finetune")


@pytest.fixture
def nothing_starts(monkeypatch, tmp_path):
    """Fail loudly if a command gets past loading: no window, no socket, no data, no files.

    Returns the list of things that were started (must stay empty) and the argv builder.
    """
    from mnist_classifier.demo import desktop, server

    started: list[str] = []

    def record(what):
        def stand_in(*_args, **_kwargs):
            started.append(what)
            raise AssertionError(f"{what} started before the checkpoint was refused")
        return stand_in

    monkeypatch.setattr(desktop, "_Window", record("demo window"))
    monkeypatch.setattr(desktop, "_require_display", lambda: None)  # so a good file would reach the window
    monkeypatch.setattr(server, "bind", record("server socket"))
    monkeypatch.setattr("mnist_classifier.training.load_data", record("training data load"))
    monkeypatch.chdir(tmp_path)  # defaults like models/ and runs/ would appear here
    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), np.pad(np.full((12, 4), 255, np.uint8), 8))

    def argv(command: str, checkpoint: Path) -> list[str]:
        out = tmp_path / "out"
        return {
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--data-dir", str(DATA_DIR)],
            "predict": ["predict", str(image), "--checkpoint", str(checkpoint)],
            "export": ["export", "--checkpoint", str(checkpoint), "--out", str(out / "m.onnx"),
                       "--data-dir", str(DATA_DIR)],
            "serve": ["serve", "--checkpoint", str(checkpoint), "--port", "0"],
            "demo": ["demo", "--checkpoint", str(checkpoint)],
            "train --resume": ["train", "--resume", str(checkpoint), "--data-dir", str(DATA_DIR)],
            "calibrate": ["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(DATA_DIR)],
            "finetune": ["finetune", "--checkpoint", str(checkpoint), "--data-dir", str(DATA_DIR),
                         "--user-data", str(tmp_path / "user")],
        }[command]

    return started, argv


def refused_with_one_line(capsys, exit_code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def assert_no_output_files(folder: Path) -> None:
    left = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert set(left) <= {"digit.png", "ckpt.pth", "marker"}, left


# ------------------------------------------------------------------ hostile payloads


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_payloads_are_live_when_loaded_unsafely(tmp_path, small_checkpoint, kind):
    """The control: without weights_only these files do run code, so the refusals below mean something."""
    marker = tmp_path / "marker"
    path = write_hostile(tmp_path / "ckpt.pth", marker, kind, small_checkpoint)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path, small_checkpoint, nothing_starts, capsys,
                                                      command, kind):
    started, argv = nothing_starts
    marker = tmp_path / "marker"
    path = write_hostile(tmp_path / "ckpt.pth", marker, kind, small_checkpoint)
    line = refused_with_one_line(capsys, cli.main(argv(command, path)))
    assert str(path) in line
    if kind == "legacy-format":
        assert "is a pickle, not a zip archive: torch's old checkpoint format, which is not read here" in line
    else:
        assert "refused" in line and "could run code" in line
    assert not marker.exists(), "the payload ran"
    assert started == []
    assert_no_output_files(tmp_path)


# ------------------------------------------------------------------ broken files


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BROKEN)
def test_broken_checkpoint_is_one_clear_line(tmp_path, small_checkpoint, nothing_starts, capsys, command, kind):
    started, argv = nothing_starts
    path = write_broken(tmp_path / "ckpt.pth", kind, small_checkpoint)
    line = refused_with_one_line(capsys, cli.main(argv(command, path)))
    assert BROKEN[kind] in line and str(path) in line
    assert "internal miniz error" not in line and ":)" not in line  # torch's asides cut away, not cut off
    assert started == []
    assert_no_output_files(tmp_path)


def test_missing_checkpoint_is_one_clear_line(tmp_path, nothing_starts, capsys):
    started, argv = nothing_starts
    linked_to_null = tmp_path / "null.pth"
    linked_to_null.symlink_to("/dev/null")
    for command in COMMANDS:
        line = refused_with_one_line(capsys, cli.main(argv(command, tmp_path / "nope.pth")))
        assert "not found" in line, command
        line = refused_with_one_line(capsys, cli.main(argv(command, Path("/dev/zero"))))
        assert "/dev/zero is not a regular file" in line, command  # helper-78: was "not found"
        line = refused_with_one_line(capsys, cli.main(argv(command, linked_to_null)))
        assert f"{linked_to_null} is not a regular file" in line, command  # helper-82: was "a link to nothing"
    assert started == []


# ------------------------------------------------------------------ the controls


def test_a_good_checkpoint_gets_past_loading_to_the_window_and_the_socket(small_checkpoint, nothing_starts):
    """Proves the stand-ins above sit where the demo and the server would start."""
    started, argv = nothing_starts
    for command in ("demo", "serve"):
        with pytest.raises(AssertionError, match="started before"):
            cli.main(argv(command, small_checkpoint))
    assert started == ["demo window", "server socket"]


def test_the_stand_in_checkpoints_differ_from_the_good_one_only_as_named(tmp_path, small_checkpoint):
    good = load_checkpoint(small_checkpoint)
    wrong = load_checkpoint(write_broken(tmp_path / "w.pth", "shape-mismatched", small_checkpoint))
    changed = [k for k in good["model_state_dict"]
               if good["model_state_dict"][k].shape != wrong["model_state_dict"][k].shape]
    assert changed == ["fc1.weight"]
    renamed = load_checkpoint(write_broken(tmp_path / "a.pth", "wrong-architecture", small_checkpoint))
    assert renamed["model_name"] == "improved_cnn" and good["model_name"] == "simple_cnn"
