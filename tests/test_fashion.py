"""Fashion-MNIST, the second dataset: real files from Debian's package, real training.

Set-up: the files come from Debian's `dataset-fashion-mnist`, installed here with apt-get
when missing and running as root; otherwise these tests are skipped with the command.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_classifier import datasets
from mnist_classifier.checkpoint import load_checkpoint
from mnist_classifier.cli import main
from mnist_classifier.config import resolve_config
from mnist_classifier.datasets import FASHION_MNIST as SPEC
from mnist_classifier.datasets import DebianPackage
from mnist_classifier.errors import DataError
from mnist_classifier.sources import debian, fetch_dataset, load_arrays, verify_dataset
from mnist_classifier.training import train

from .conftest import DATA_DIR, NEAR_TIES
from .test_combine import member, numpy_shift, probabilities, temperature

PACKAGE = SPEC.debian.name
DEBIAN_DIR = Path(SPEC.debian.directory)


def quiet(_line):
    pass


# ------------------------------------------------------------------ data


def test_debian_source_copies_the_real_files_and_verifies_them(debian_files, tmp_path):
    lines = []
    raw = fetch_dataset(tmp_path, "debian", dataset=SPEC.name, log=lines.append)
    assert raw == tmp_path / "FashionMNIST" / "raw"
    assert lines == [f"debian: copied 4 files from {debian_files} ({PACKAGE}) to {raw} (verified)"]
    assert sorted(p.name for p in raw.iterdir()) == sorted(f.name for f in SPEC.files)  # no temp files
    train_x, train_y, test_x, test_y = load_arrays(raw, SPEC)
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    # the registry's normalisation constants are the real statistics of the training pixels
    pixels = np.bincount(train_x.ravel(), minlength=256) / train_x.size
    mean = float(pixels @ (np.arange(256) / 255))
    std = float(np.sqrt(pixels @ (np.arange(256) / 255 - mean) ** 2))
    assert (round(mean, 4), round(std, 4)) == (SPEC.mean, SPEC.std)


def test_a_corrupt_file_in_the_package_is_refused_and_leaves_nothing(debian_files, tmp_path, monkeypatch):
    package = tmp_path / "package"
    package.mkdir()
    for f in SPEC.files:
        (package / f"{f.name}.gz").symlink_to(debian_files / f"{f.name}.gz")
    labels = bytearray(gzip.decompress((debian_files / f"{SPEC.train_labels.name}.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one label changed: still a valid IDX file
    (package / f"{SPEC.train_labels.name}.gz").unlink()
    (package / f"{SPEC.train_labels.name}.gz").write_bytes(gzip.compress(bytes(labels)))
    monkeypatch.setitem(datasets.DATASETS, SPEC.name, replace(SPEC, debian=DebianPackage(PACKAGE, str(package))))
    with pytest.raises(DataError, match=f"^debian: .*gave a wrong {SPEC.train_labels.name} .*refused"):
        fetch_dataset(tmp_path / "data", "debian", dataset=SPEC.name, log=quiet)
    left = [p.name for p in (tmp_path / "data" / "FashionMNIST" / "raw").iterdir()]
    assert left == [SPEC.train_images.name]  # the good file before it; no temp file, nothing after


def test_a_changed_local_file_fails_verification(fashion_raw, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in SPEC.files:
        (raw / f.name).symlink_to(fashion_raw / f.name)
    labels = bytearray((fashion_raw / SPEC.train_labels.name).read_bytes())
    labels[-1] ^= 1
    (raw / SPEC.train_labels.name).unlink()
    (raw / SPEC.train_labels.name).write_bytes(bytes(labels))
    with pytest.raises(DataError, match=rf"{SPEC.train_labels.name} is not the expected {SPEC.train_labels.name} \(SHA-256 .*"
                                   "delete it and run `mnist-classifier data --dataset fashion-mnist`"):
        verify_dataset(raw, SPEC)


def test_a_truncated_file_names_the_fashion_fetch_command(fashion_raw, tmp_path):
    raw = tmp_path / "data" / SPEC.folder / "raw"
    raw.mkdir(parents=True)
    for f in SPEC.files:
        (raw / f.name).symlink_to(fashion_raw / f.name)
    labels = raw / SPEC.test_labels.name
    labels.unlink()
    labels.write_bytes((fashion_raw / SPEC.test_labels.name).read_bytes()[:-10])
    fetch = f"mnist-classifier data --dataset fashion-mnist --data-dir {tmp_path / 'data'}"
    with pytest.raises(DataError, match=rf"^{re.escape(str(labels))} is truncated .*: delete it and run `{re.escape(fetch)}`$"):
        load_arrays(raw, SPEC)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get: Debian and Ubuntu only")
def test_without_root_the_missing_package_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "_is_root", lambda: False)
    missing = replace(SPEC, debian=DebianPackage(PACKAGE, str(tmp_path / "not-installed")))
    monkeypatch.setitem(datasets.DATASETS, SPEC.name, missing)
    with pytest.raises(DataError) as caught:
        fetch_dataset(tmp_path / "data", "debian", dataset=SPEC.name, log=quiet)
    message = str(caught.value)
    assert f"run `sudo apt-get install -y {PACKAGE}`" in message
    assert "then `mnist-classifier data --dataset fashion-mnist` again" in message


def test_offline_the_failed_apt_get_update_is_the_reason_given(tmp_path, monkeypatch):
    """helper-57: `apt-get update` failing (no network) was ignored, and the line blamed the
    package ("Unable to locate package") instead."""
    fake = tmp_path / "bin" / "apt-get"  # what apt-get prints offline, on a machine with no package lists
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncase "$*" in\n  *update*) echo "E: Failed to fetch http://deb.debian.org/debian/'
                    'dists/bookworm/InRelease  Temporary failure resolving" >&2; exit 100;;\n'
                    f'  *) echo "E: Unable to locate package {PACKAGE}" >&2; exit 100;;\nesac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(debian, "_is_root", lambda: True)
    missing = replace(SPEC, debian=DebianPackage(PACKAGE, str(tmp_path / "not-installed")))
    monkeypatch.setitem(datasets.DATASETS, SPEC.name, missing)
    with pytest.raises(DataError, match=r"apt-get update failed \(E: Failed to fetch .*Temporary failure resolving\), "
                                        f"so {PACKAGE} cannot be installed: check the network"):
        fetch_dataset(tmp_path / "data", "debian", dataset=SPEC.name, log=quiet)


def test_damaged_clothes_are_named_not_called_absent_in_the_verdict_tables(fashion_raw, tmp_path):
    """evaluate's clothes row: files that are there but cut short were "not on disk" (helper-93)."""
    from mnist_classifier.honesty import _fashion_test_items, verdict_text

    raw = tmp_path / "data" / SPEC.folder / "raw"
    shutil.copytree(fashion_raw, raw)
    labels = next(raw.glob(f"{SPEC.test_labels.name}*"))
    labels.write_bytes(labels.read_bytes()[:5000])
    items, problem = _fashion_test_items(tmp_path / "data")
    assert items is None and problem.startswith(f"{labels} is ") and problem.endswith(
        f"delete it and run `mnist-classifier data --dataset fashion-mnist --data-dir {tmp_path / 'data'}`"), problem
    report = {"reject_threshold": 1.0, "digits": [{"set": "digits", "images": 9, "answered_digit": 1.0, "accuracy": 1.0}],
              "non_digits": [{"family": "scribble", "images": 9, "answered_not_a_digit": 1.0}], "fashion_mnist_missing": True,
              "fashion_mnist_problem": problem}
    assert verdict_text(report).splitlines()[-1] == f"  (clothes left out: {problem})"
    assert _fashion_test_items(tmp_path / "elsewhere") == (None, None)  # never fetched: the usual note
    found, none = _fashion_test_items(DATA_DIR)
    assert none is None and found.shape[1:] == (28, 28)


# ------------------------------------------------------------------ training and evaluation


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, fashion_raw):
    """SimpleCNN, one epoch (60 steps) on the first 3,000 Fashion-MNIST training images:
    ~74% test accuracy. With the dataset's augmentation (crop + mirror), which --tta needs."""
    folder = tmp_path_factory.mktemp("fashion")
    config = resolve_config(None, dict(dataset=SPEC.name, limit_train=3000, epochs=1, batch_size=50, augment=True,
                                       seed=1, data_dir=str(DATA_DIR), save_dir=str(folder / "models"),
                                       log_dir=str(folder / "runs")))
    return folder, train(config, log=quiet)


def test_a_short_run_on_a_fashion_slice_learns_well_above_chance(fashion_run):
    _, result = fashion_run
    assert result.test_accuracy > 0.70  # chance is 0.10
    # Named for the dataset: training on clothes never overwrites models/simple_cnn_best.pth.
    assert (result.best_path.name, result.last_path.name) == ("simple_cnn_fashion-mnist_best.pth",
                                                              "simple_cnn_fashion-mnist_last.pth")
    best = load_checkpoint(result.best_path)
    assert best["dataset"] == SPEC.name and best["class_names"] == list(SPEC.class_names)
    assert best["normalization"] == {"mean": SPEC.mean, "std": SPEC.std}


def test_evaluate_uses_the_checkpoints_own_test_set(fashion_run, capsys, tmp_path, monkeypatch):
    """--dataset alone finds the model `train --dataset` saved (helper-57: it took the MNIST one and
    refused it)."""
    _, result = fashion_run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copy(result.best_path, tmp_path / "models")
    assert main(["evaluate", "--dataset", SPEC.name, "--data-dir", str(DATA_DIR)]) == 0
    out = capsys.readouterr().out
    # its own folder, named as its checkpoints are: never the MNIST model's reports/simple_cnn/
    assert [path.name for path in (tmp_path / "reports").iterdir()] == ["simple_cnn_fashion-mnist"]
    report = tmp_path / "reports" / "simple_cnn_fashion-mnist"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["dataset"] == SPEC.name and metrics["test_size"] == 10_000
    assert metrics["class_names"] == list(SPEC.class_names)
    assert abs(metrics["metrics"]["accuracy"] - result.test_accuracy) < 1e-6
    assert "Ankle boot" in out and "T-shirt/top" in (report / "report.html").read_text()


def test_tta_on_clothes_adds_mirrored_views(fashion_run, fashion_raw):
    """A mirrored shirt is still a shirt (the dataset's policy): `--tta` averages 5 shifts and their mirrors."""
    folder, result = fashion_run
    out = folder / "report_tta"
    assert main(["evaluate", "--checkpoint", str(result.best_path), "--tta", "--out", str(out),
                 "--data-dir", str(DATA_DIR)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta_views"] == 10 and metrics["tta_mirrored"] is True
    assert "10 views per image (1-pixel shifts, each also mirrored)" in (out / "report.html").read_text()
    # the reported accuracy, recomputed here from numpy mirrors and shifts of the real test images
    _, _, images, labels = load_arrays(fashion_raw, SPEC)
    shifts, model = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)), member(result.best_path)
    mean = np.mean([probabilities(model, numpy_shift(np.ascontiguousarray(seen), dx, dy), temperature(result.best_path))
                    for seen in (images, images[:, :, ::-1]) for dx, dy in shifts], axis=0)
    assert metrics["metrics"]["accuracy"] == pytest.approx((mean.argmax(1) == labels).mean(), abs=NEAR_TIES)


def test_an_uncalibrated_checkpoint_is_evaluated_with_the_fix_beside_it(fashion_run, tmp_path, capsys):
    _, result = fashion_run
    before_calibration = {key: value for key, value in torch.load(result.best_path, weights_only=True).items()
                          if key not in ("temperature", "reject_threshold")}  # as checkpoints were before it existed
    torch.save(before_calibration, tmp_path / "old.pth")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "old.pth"), "--out", str(tmp_path / "report"),
                 "--data-dir", str(DATA_DIR)]) == 0
    out = capsys.readouterr().out
    assert "calibration (no stored temperature)" in out
    assert f"fix: mnist-classifier calibrate --checkpoint {tmp_path / 'old.pth'}" in out
    page = (tmp_path / "report" / "report.html").read_text()  # helper-91: it said "before and after calibration"
    assert "of the raw softmax (no stored calibration)</figcaption>" in page and "before and after" not in page


def test_evaluate_dataset_alone_without_its_model_says_how_to_make_one(fashion_run, small_checkpoint, tmp_path,
                                                                      monkeypatch, capsys):
    """helper-68: with no clothes model, --dataset fashion-mnist took the digit model (or the bundled
    one) and then refused it, advising to drop --dataset: the wrong model's report."""
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--dataset", SPEC.name, "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: no model trained on {SPEC.name} to evaluate: models/simple_cnn_{SPEC.name}_best.pth "
                   f"not found; `mnist-classifier train --dataset {SPEC.name}` makes it, or name one with --checkpoint")
    assert not (tmp_path / "reports").exists()
    # helper-73: another model trained on it is named; an unknown dataset is said before any model is picked
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, tmp_path / "models" / f"a_{SPEC.name}_best.pth")  # named so, but a digit model
    shutil.copy(fashion_run[1].best_path, tmp_path / "models" / f"mlp_{SPEC.name}_best.pth")
    assert main(["evaluate", "--dataset", SPEC.name, "--data-dir", str(DATA_DIR)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--checkpoint models/mlp_{SPEC.name}_best.pth evaluates yours")
    assert main(["evaluate", "--dataset", "bogus", "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown dataset 'bogus': choose one of fashion-mnist, mnist, user-digits\n", err


def test_evaluating_a_fashion_checkpoint_on_mnist_is_a_clear_error(fashion_run, tmp_path, capsys):
    _, result = fashion_run
    status = main(["evaluate", "--checkpoint", str(result.best_path), "--dataset", "mnist",
                   "--out", str(tmp_path / "report"), "--data-dir", str(DATA_DIR)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert f"{result.best_path} was trained on fashion-mnist, not mnist" in err
    assert not (tmp_path / "report").exists()


def test_the_drawing_demos_are_digit_only(fashion_run, capsys):
    from mnist_classifier.demo.web import model_card
    from mnist_classifier.reader import load_predictor

    _, result = fashion_run
    assert main(["demo", "--checkpoint", str(result.best_path)]) == 2  # refused before any window
    err = capsys.readouterr().err
    assert "digit-only" in err and "fashion-mnist" in err
    # The resume point holds no calibration: its note, about refusing "not a digit", came before the refusal
    assert main(["demo", "--checkpoint", str(result.last_path)]) == 2
    err = capsys.readouterr().err
    assert "digit-only" in err and len(err.splitlines()) == 1, err
    card = model_card(load_predictor(result.best_path))  # the page shows a notice for these
    assert card["drawable"] is False and card["class_names"] == list(SPEC.class_names)


def test_predict_prints_class_names_for_clothing_photos(fashion_run, fashion_raw, tmp_path, capsys):
    from PIL import Image

    from mnist_classifier.reader import load_predictor

    _, result = fashion_run
    _, _, test_x, test_y = load_arrays(fashion_raw, SPEC)
    probabilities = load_predictor(result.best_path).predict(test_x[:1000])
    files = {}
    for label in range(10):  # one image per class that the model gets right on the original
        sure = np.flatnonzero((test_y[:1000] == label) & (probabilities.argmax(1) == label))
        if len(sure):
            image = test_x[sure[np.argmax(probabilities[sure, label])]]
            files[str(tmp_path / f"{label}.png")] = label
            Image.fromarray(image).save(tmp_path / f"{label}.png")
            # as a photo would be: dark on white, ten times larger
            files[str(tmp_path / f"{label}_photo.png")] = label
            Image.fromarray(255 - image).resize((280, 280), Image.BILINEAR).save(tmp_path / f"{label}_photo.png")
    assert len(files) >= 16
    assert main(["predict", *files, "--checkpoint", str(result.best_path), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert all(a["label"] == SPEC.class_names[a["digit"]] for a in answers)
    right = sum(a["digit"] == files[a["file"]] for a in answers)
    assert right >= len(files) - 1, [(a["file"], a["label"]) for a in answers]
    first = next(iter(files))  # refused by a threshold no answer meets: said of clothes, not of digits
    assert main(["predict", first, "--checkpoint", str(result.best_path), "--reject-threshold", "1e9"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{first}: not recognised (best guess {SPEC.class_names[files[first]]}, "), said


def test_the_api_frames_clothes_as_predict_does(fashion_run, fashion_raw, tmp_path, capsys):
    """The server read every picture as a digit drawing (to_mnist): a boot on white paper came back
    a Sneaker where `predict` said Ankle boot (helper-43: 27% right through the API, 75% by predict)."""
    import httpx
    from PIL import Image

    from mnist_classifier.demo.web import create_app
    from mnist_classifier.reader import load_predictor

    from .test_web_api import running_server

    _, result = fashion_run
    _, _, test_x, _ = load_arrays(fashion_raw, SPEC)
    files = []
    for index, item in enumerate(test_x[:40]):  # photographed as dark on white, ten times larger
        files.append(tmp_path / f"{index}.png")
        Image.fromarray(255 - item).resize((280, 280), Image.BILINEAR).save(files[-1])
    assert main(["predict", *map(str, files), "--checkpoint", str(result.best_path), "--json"]) == 0
    by_predict = [answer["best_guess"] for answer in json.loads(capsys.readouterr().out)]
    app = create_app(load_predictor(result.best_path), user_data=None)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        by_api = [client.post("/api/predict", content=file.read_bytes(),
                              headers={"Content-Type": "image/png"}).json()["best_guess"] for file in files]
    assert by_api == by_predict


def test_serve_with_a_clothes_model_saves_no_drawings_and_says_why(fashion_run, tmp_path, monkeypatch):
    import httpx

    from mnist_classifier.demo import server

    from .test_web_api import running_server

    apps, said = [], []

    class Captured:  # the app serve() builds, run here on a test server instead of its own socket
        def __init__(self, app):
            apps.append(app)

        def run(self, sockets):
            sockets[0].close()

    monkeypatch.setattr(server, "uvicorn_server", Captured)
    monkeypatch.setattr(server, "tune_process", lambda: None)  # process-wide settings: not in the test run
    _, result = fashion_run
    server.serve(result.best_path, port=0, workers=1, backend="torch", log=said.append, user_data=tmp_path / "user")
    reason = "labelling is off: simple_cnn reads fashion-mnist, and `finetune` learns digits from labelled drawings"
    assert reason in said
    with running_server(apps[0]) as url:
        refused = httpx.post(f"{url}/api/examples?label=7", content=b"\x89PNG\r\n\x1a\n", timeout=30)
    assert refused.status_code == 403 and refused.json()["detail"] == reason
    assert not (tmp_path / "user").exists()


def test_serve_backend_torch_serves_the_bundled_checkpoint_not_its_onnx(tmp_path, monkeypatch):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT
    from mnist_classifier.demo import server

    served = []
    monkeypatch.setattr(server, "serve", lambda checkpoint, **_options: served.append(checkpoint))
    monkeypatch.chdir(tmp_path)  # nothing trained here: the bundled model answers
    assert main(["serve", "--backend", "torch"]) == 0
    assert main(["serve"]) == 0
    assert [path.suffix for path in served] == [".pth", ".onnx"] and served[0] == BUNDLED_CHECKPOINT


def test_the_page_calls_a_refused_clothes_answer_not_recognised(fashion_run):
    """As `predict` does (helper-57: the page said "not a digit?" whatever the model read)."""
    from mnist_classifier.demo.web import create_app
    from mnist_classifier.reader import load_predictor

    from .test_web_api import running_server
    from .test_web_browser import CHROMIUM_ARGS, ONE, chromium_path, draw, playwright_api

    _, result = fashion_run
    refusing = load_predictor(result.best_path).with_reject_threshold(1e3)  # every answer refused
    with running_server(create_app(refusing, user_data=None)) as url, playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        playwright_api.expect(page.locator("#notice")).to_contain_text("not a set of handwritten digits")
        draw(page, ONE)
        playwright_api.expect(page.locator("#digit")).to_have_text("not recognised?")
        playwright_api.expect(page.locator("#confidence")).to_contain_text("best guess")
        browser.close()
