"""Test-time augmentation and checkpoint ensembles (`evaluate --tta`, `--ensemble`), real models and images."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mnist_classifier.checkpoint import load_checkpoint, load_model, save_checkpoint, stored_normalization
from mnist_classifier.cli import main
from mnist_classifier.combine import averaged_probabilities, check_members_agree, shift_images, tta_views
from mnist_classifier.config import resolve_config
from mnist_classifier.data import to_model_input
from mnist_classifier.datasets import get_dataset_spec
from mnist_classifier.errors import UserError
from mnist_classifier.training import train

from .conftest import DATA_DIR, NEAR_TIES


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory, mnist_raw_dir):
    """Another real SimpleCNN, on other images and another seed, so that the two disagree somewhere."""
    folder = tmp_path_factory.mktemp("second")
    config = resolve_config(None, dict(limit_train=4000, epochs=1, batch_size=100, seed=11, data_dir=str(DATA_DIR),
                                       save_dir=str(folder / "models"), log_dir=str(folder / "runs")))
    return train(config, log=lambda _line: None).best_path


def numpy_shift(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """An independent shift: roll, then blank what wrapped around."""
    moved = np.roll(images, (dy, dx), axis=(1, 2))
    if dy > 0:
        moved[:, :dy] = 0
    elif dy < 0:
        moved[:, dy:] = 0
    if dx > 0:
        moved[:, :, :dx] = 0
    elif dx < 0:
        moved[:, :, dx:] = 0
    return moved


def member(path):
    model, payload = load_model(path)
    return model.eval(), stored_normalization(payload)


def probabilities(model_and_norm, images: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    model, norm = model_and_norm
    model = model.to(memory_format=torch.channels_last)  # 3x faster on CPU than NCHW; same numbers
    with torch.no_grad():
        logits = torch.cat([model(chunk.contiguous(memory_format=torch.channels_last))
                            for chunk in to_model_input(torch.from_numpy(images), norm).split(256)])
    return torch.softmax(logits / temperature, dim=1).numpy()


def temperature(path) -> float:
    return float(torch.load(path, weights_only=True)["temperature"])


@pytest.mark.parametrize("dx, dy", [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -1)])
def test_shift_moves_the_ink_and_fills_with_background(mnist_data, dx, dy):
    images = mnist_data.test.images[:50]
    shifted = shift_images(images, dx, dy)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert np.array_equal(shifted.numpy(), numpy_shift(images.numpy(), dx, dy))


def test_one_model_without_tta_is_its_own_softmax(small_checkpoint, mnist_data):
    split = mnist_data.test.head(300)
    combined = averaged_probabilities([member(small_checkpoint)], split).numpy()
    np.testing.assert_allclose(combined, probabilities(member(small_checkpoint), split.images.numpy()), atol=1e-6)


def test_tta_averages_the_image_and_its_four_one_pixel_shifts(small_checkpoint, mnist_data):
    split = mnist_data.test.head(300)
    images = split.images.numpy()
    views = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    expected = np.mean([probabilities(member(small_checkpoint), numpy_shift(images, dx, dy)) for dx, dy in views],
                       axis=0)
    mnist_views = tta_views(get_dataset_spec("mnist"))
    assert not any(mirrored for _, _, mirrored in mnist_views)  # a mirrored 2 is no digit
    combined = averaged_probabilities([member(small_checkpoint)], split, mnist_views).numpy()
    np.testing.assert_allclose(combined, expected, atol=1e-6)
    np.testing.assert_allclose(combined.sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_is_the_mean_of_its_members(small_checkpoint, second_checkpoint, mnist_data):
    split = mnist_data.test.head(300)
    images = split.images.numpy()
    first, second = probabilities(member(small_checkpoint), images), probabilities(member(second_checkpoint), images)
    assert (first.argmax(1) != second.argmax(1)).any() or not np.allclose(first, second, atol=1e-3)
    combined = averaged_probabilities([member(small_checkpoint), member(second_checkpoint)], split).numpy()
    np.testing.assert_allclose(combined, (first + second) / 2, atol=1e-6)


def test_evaluate_ensemble_with_tta_writes_a_labelled_report(small_checkpoint, second_checkpoint, mnist_data,
                                                             tmp_path, capsys):
    out = tmp_path / "report"
    status = main(["evaluate", "--ensemble", str(small_checkpoint), str(second_checkpoint), "--tta",
                   "--out", str(out), "--data-dir", str(DATA_DIR)])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_name"] == "simple_cnn_ensemble2_tta"
    assert metrics["ensemble_members"] == 2 and metrics["tta_views"] == 5 and metrics["tta_mirrored"] is False
    assert metrics["checkpoint"] == f"{small_checkpoint} {second_checkpoint}"
    # the reported accuracy is that of the averaged probabilities, computed here independently
    images, labels = mnist_data.test.images.numpy(), mnist_data.test.labels.numpy()
    views = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    # each member's probabilities are its calibrated ones (its own stored temperature)
    mean = np.mean([probabilities(member(path), numpy_shift(images, dx, dy), temperature(path))
                    for path in (small_checkpoint, second_checkpoint) for dx, dy in views], axis=0)
    assert metrics["metrics"]["accuracy"] == pytest.approx((mean.argmax(1) == labels).mean(), abs=NEAR_TIES)
    assert "ensemble of 2 checkpoints" in (out / "report.html").read_text()
    stdout = capsys.readouterr().out
    assert "simple_cnn_ensemble2_tta on 10,000 test images" in stdout
    each = f"each member's own temperature ({temperature(small_checkpoint):.3f}, {temperature(second_checkpoint):.3f})"
    assert metrics["calibration"]["temperature"] == pytest.approx(
        [temperature(small_checkpoint), temperature(second_checkpoint)], rel=1e-6)
    assert f"calibration ({each}, probabilities averaged)" in stdout
    assert f"Calibrated: {each}, probabilities averaged" in (out / "report.html").read_text().replace("&#x27;", "'")


def test_ensemble_members_from_different_datasets_are_refused(small_checkpoint, tmp_path, capsys):
    payload = load_checkpoint(small_checkpoint)
    fashion = get_dataset_spec("fashion-mnist")
    payload.update(dataset=fashion.name, class_names=list(fashion.class_names))
    foreign = tmp_path / "fashion_best.pth"
    save_checkpoint(payload, foreign)
    status = main(["evaluate", "--ensemble", str(small_checkpoint), str(foreign), "--out", str(tmp_path / "r"),
                   "--data-dir", str(DATA_DIR)])
    assert status == 2
    error = capsys.readouterr().err
    assert "fashion-mnist" in error and "same dataset" in error
    assert not (tmp_path / "r").exists()


def test_a_member_saved_before_class_names_were_kept_counts_as_digits(small_checkpoint, tmp_path):
    """Every loader reads a missing class_names as the ten digits; the ensemble check compared the raw
    value and refused such a digit model beside one that stores them (helper-43)."""
    payload = load_checkpoint(small_checkpoint)
    older = {key: value for key, value in payload.items() if key != "class_names"}
    older["model_state_dict"] = {name: tensor + 1e-3 if tensor.is_floating_point() else tensor
                                 for name, tensor in payload["model_state_dict"].items()}  # another model
    check_members_agree([payload, older], [small_checkpoint, tmp_path / "older.pth"])
    renamed = payload | {"class_names": [f"class {index}" for index in range(10)]}
    with pytest.raises(UserError, match="same dataset"):
        check_members_agree([older, renamed], [tmp_path / "older.pth", tmp_path / "renamed.pth"])


def test_checkpoint_and_ensemble_together_are_refused(small_checkpoint, tmp_path, capsys):
    status = main(["evaluate", "--checkpoint", str(small_checkpoint), "--ensemble", str(small_checkpoint),
                   "--out", str(tmp_path / "r")])
    assert status == 2
    assert "drop --checkpoint" in capsys.readouterr().err



def test_the_same_checkpoint_twice_is_no_ensemble(small_checkpoint, tmp_path, capsys):
    twice = [str(small_checkpoint), str(small_checkpoint)]
    assert main(["evaluate", "--ensemble", *twice, "--out", str(tmp_path / "r")]) == 2
    said = capsys.readouterr().err
    assert said == f"error: {small_checkpoint} is named twice: an ensemble averages different checkpoints\n"
    shutil.copy(small_checkpoint, tmp_path / "copy.pth")  # helper-57: a copy was averaged with its original
    assert main(["evaluate", "--ensemble", str(small_checkpoint), str(tmp_path / "copy.pth"),
                 "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'copy.pth'} holds the same weights as {small_checkpoint}: "
                                       "an ensemble averages different models; name each once\n")


def test_tta_is_refused_for_a_model_that_never_saw_shifted_digits(small_checkpoint, tmp_path, capsys):
    payload = load_checkpoint(small_checkpoint)
    payload["config"] = {**payload["config"], "augment": False}  # as the seed recipe trains
    plain = tmp_path / "plain_best.pth"
    save_checkpoint(payload, plain)
    status = main(["evaluate", "--checkpoint", str(plain), "--tta", "--out", str(tmp_path / "r")])
    assert status == 2 and "trained without augmentation" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_ensemble_with_an_uncalibrated_member_names_it_and_the_fix(small_checkpoint, second_checkpoint, tmp_path,
                                                                      capsys):
    payload = load_checkpoint(second_checkpoint)
    for key in ("temperature", "reject_threshold"):  # as checkpoints were before calibration existed
        payload.pop(key)
    old = tmp_path / "old_best.pth"
    save_checkpoint(payload, old)
    assert main(["evaluate", "--ensemble", str(small_checkpoint), str(old), "--out", str(tmp_path / "r"),
                 "--data-dir", str(DATA_DIR)]) == 0
    assert f"note: {old} has no stored calibration; fix: mnist-classifier calibrate --checkpoint {old}" \
        in capsys.readouterr().out


def test_an_ensemble_report_says_where_its_members_training_curves_are():
    from mnist_classifier.plots import NO_HISTORY, training_curves_figure
    from mnist_classifier.report import no_history_text

    said = no_history_text({"members": ["seed1/best.pth", "seed2/best.pth"], "history": None})
    figure = training_curves_figure(None, "ensemble: training history", no_history=said)
    assert [text.get_text() for ax in figure.axes for text in ax.texts] == [said]
    assert said.startswith("an ensemble of 2 checkpoints") and "own report" in said
    assert no_history_text({"history": None}) == NO_HISTORY  # one checkpoint that kept none


def test_an_ensemble_member_named_bundled_is_the_shipped_checkpoint(small_checkpoint):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT
    from mnist_classifier.cli import ensemble_member

    assert ensemble_member("bundled") == BUNDLED_CHECKPOINT  # as --checkpoint bundled names it
    assert ensemble_member(str(small_checkpoint)) == small_checkpoint
