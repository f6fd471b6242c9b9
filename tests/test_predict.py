"""`mnist-classifier predict`: real digit files in, one answer (or one error) per file out.

    .venv/bin/python -m pytest tests/test_predict.py -q
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mnist_classifier.cli import main
from mnist_classifier.reader import load_predictor

LINE = re.compile(r"^(?P<file>.+): (?P<digit>\d) \((?P<conf>≥?[\d.]+)%\)  top (?P<k>\d+): (?P<top>.+)$")  # never 100% short of it


@pytest.fixture(scope="module")
def sure_digits(small_checkpoint, mnist_data):
    """Ten real test digits, one per class, that the model gets right with confidence
    on the original 28x28 (so a wrong answer on the re-drawn file is the file's fault)."""
    images, labels = mnist_data.test.images[:2000].numpy(), mnist_data.test.labels[:2000].numpy()
    probabilities = load_predictor(small_checkpoint).predict(images)
    picks = {}
    for index in np.flatnonzero((probabilities.argmax(1) == labels) & (probabilities.max(1) > 0.9)):
        picks.setdefault(int(labels[index]), images[index])
    assert len(picks) == 10
    return picks


def write_digit(path, digit: np.ndarray, scale: int = 1, dark_on_light: bool = False,
                canvas: tuple[int, int] | None = None, offset: tuple[int, int] = (0, 0), rgb: bool = False):
    """Save an MNIST digit as a user's file: enlarged, either polarity, somewhere on a canvas."""
    big = cv2.resize(digit, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else digit
    image = np.zeros(canvas or big.shape, np.uint8)
    image[offset[0]:offset[0] + big.shape[0], offset[1]:offset[1] + big.shape[1]] = big
    image = 255 - image if dark_on_light else image
    Image.fromarray(image).convert("RGB" if rgb else "L").save(path)
    return str(path)


def digit_files(folder, sure_digits) -> dict[str, int]:
    """Each class three ways: the original 28x28, 10x dark-on-light off-centre, 6x RGB."""
    files = {}
    for label, digit in sure_digits.items():
        files[write_digit(folder / f"{label}_orig.png", digit)] = label
        files[write_digit(folder / f"{label}_paper.png", digit, scale=10, dark_on_light=True,
                          canvas=(600, 500), offset=(300, 20))] = label
        files[write_digit(folder / f"{label}_rgb.png", digit, scale=6, canvas=(400, 400),
                          offset=(10, 200), rgb=True)] = label
    return files


def bad_files(folder, good_png: str) -> list[str]:
    text = folder / "notes.png"
    text.write_text("this is a shopping list, not a picture\n")
    truncated = folder / "truncated.png"
    truncated.write_bytes(open(good_png, "rb").read()[:150])
    no_images = folder / "notes"
    no_images.mkdir()
    (no_images / "list.txt").write_text("eggs\n")
    return [str(folder / "missing.png"), str(text), str(truncated), str(no_images)]


def test_real_digits_in_both_polarities_and_any_size_are_read(small_checkpoint, sure_digits, tmp_path, capsys):
    files = digit_files(tmp_path, sure_digits)
    assert main(["predict", *files, "--checkpoint", str(small_checkpoint)]) == 0
    out, err = capsys.readouterr()
    answers = [LINE.match(line) for line in out.splitlines()]
    assert all(answers) and len(answers) == len(files) and err == ""
    wrong = [a["file"] for a in answers if int(a["digit"]) != files[a["file"]]]
    assert wrong == [], f"misread: {wrong}"
    first = answers[0]
    assert first["k"] == "3" and len(first["top"].split(", ")) == 3
    assert first["top"].startswith(first["digit"] + " ")  # the answer is the top-ranked class


def test_json_gives_one_object_per_file_with_the_same_keys(small_checkpoint, sure_digits, tmp_path, capsys):
    files = list(digit_files(tmp_path, {7: sure_digits[7], 2: sure_digits[2]}))
    assert main(["predict", *files, "--checkpoint", str(small_checkpoint), "--json", "--top", "4"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["file"] for a in answers] == files
    for answer in answers:
        assert set(answer) == {"file", "verdict", "digit", "best_guess", "label", "confidence", "probabilities",
                               "digit_score", "hint", "preview_png", "top", "has_ink", "error"}
        assert answer["error"] is None and answer["has_ink"] is True and answer["verdict"] == "digit"
        assert answer["best_guess"] == answer["digit"] and len(answer["probabilities"]) == 10
        assert answer["digit"] == int(answer["file"].split("/")[-1][0]) and answer["label"] == str(answer["digit"])
        ranked = [t["probability"] for t in answer["top"]]
        assert len(ranked) == 4 and ranked == sorted(ranked, reverse=True) and sum(ranked) <= 1 + 1e-6
        assert answer["top"][0] == {"digit": answer["digit"], "label": answer["label"],
                                    "probability": answer["confidence"]}


def test_each_bad_file_gets_its_own_error_and_the_rest_are_classified(small_checkpoint, sure_digits,
                                                                       tmp_path, capsys):
    good = write_digit(tmp_path / "three.png", sure_digits[3], scale=8, dark_on_light=True, canvas=(300, 300))
    bad = bad_files(tmp_path, good)
    assert main(["predict", bad[0], good, *bad[1:], "--checkpoint", str(small_checkpoint)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{good}: 3 (") and len(out.splitlines()) == 1
    errors = err.splitlines()
    assert len(errors) == len(bad)  # one line each, no traceback
    for path, line in zip(bad, errors):
        assert line.startswith(f"{path}: error: ")
    assert "not found" in errors[0] and "not an image" in errors[1] and "truncated" in errors[2]
    assert all(line.count(path) == 1 for path, line in zip(bad, errors))  # the name once, not twice
    assert errors[3] == (f"{bad[3]}: error: folder with no image files in it "
                         "(png, jpg, jpeg, bmp, gif, webp, tif, tiff); name the images")


def test_a_folder_stands_for_the_images_in_it_in_name_order(small_checkpoint, sure_digits, tmp_path, capsys,
                                                             monkeypatch):
    files = digit_files(tmp_path, sure_digits)
    (tmp_path / "readme.txt").write_text("not an image, skipped\n")
    (tmp_path / "nested").mkdir()  # not searched
    write_digit(tmp_path / "nested" / "0_deeper.png", sure_digits[0])
    assert main(["predict", str(tmp_path), "--checkpoint", str(small_checkpoint), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["file"] for answer in answers] == sorted(files)
    assert [answer["digit"] for answer in answers] == [files[name] for name in sorted(files)]
    # a quoted '~/folder' (no shell expanded it) stands for the same images
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert main(["predict", f"~/{tmp_path.name}", "--checkpoint", str(small_checkpoint), "--json"]) == 0
    assert [answer["digit"] for answer in json.loads(capsys.readouterr().out)] == [files[n] for n in sorted(files)]


def test_bad_files_are_error_fields_in_json(small_checkpoint, sure_digits, tmp_path, capsys):
    good = write_digit(tmp_path / "five.png", sure_digits[5])
    bad = bad_files(tmp_path, good)
    assert main(["predict", good, *bad, "--checkpoint", str(small_checkpoint), "--json"]) == 1
    answers = json.loads(capsys.readouterr().out)
    assert answers[0]["digit"] == 5 and answers[0]["error"] is None
    for answer in answers[1:]:
        assert answer.keys() == answers[0].keys() and answer["error"] and answer["top"] == []
        # an unread file claims nothing: no verdict, no zero confidence, no "no ink"
        assert all(answer[key] is None for key in ("verdict", "digit", "best_guess", "confidence",
                                                    "probabilities", "preview_png", "has_ink"))


def test_blank_image_is_no_digit_not_a_made_up_label(small_checkpoint, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank)
    assert main(["predict", str(blank), "--checkpoint", str(small_checkpoint)]) == 0
    assert capsys.readouterr().out.strip() == f"{blank}: empty (the image has no visible ink)"
    assert main(["predict", str(blank), "--checkpoint", str(small_checkpoint), "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["has_ink"] is False and answer["digit"] is None and answer["error"] is None


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path, sure_digits, capsys):
    image = write_digit(tmp_path / "one.png", sure_digits[1])
    assert main(["predict", image, "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "nope.pth" in err


def test_a_folder_or_a_damaged_calibration_for_a_checkpoint_is_one_line(small_checkpoint, sure_digits, tmp_path,
                                                                         capsys):
    from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint

    image = write_digit(tmp_path / "one.png", sure_digits[1])
    assert main(["predict", image, "--checkpoint", str(tmp_path)]) == 2
    said = capsys.readouterr().err.strip()
    assert said == f"error: {tmp_path} is a folder, not a checkpoint: name the .pth file in it"
    damaged = tmp_path / "nan.pth"
    save_checkpoint({**load_checkpoint(small_checkpoint), "temperature": float("nan")}, damaged)
    assert main(["predict", image, "--checkpoint", str(damaged)]) == 2  # not "0 (nan%)" and exit 0
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert "stored calibration is damaged (temperature nan" in err and "mnist-classifier calibrate" in err


def test_top_outside_the_classes_is_a_usage_error(small_checkpoint, sure_digits, tmp_path, capsys):
    image = write_digit(tmp_path / "one.png", sure_digits[1])
    assert main(["predict", image, "--checkpoint", str(small_checkpoint), "--top", "11"]) == 2
    assert "--top must be between 1 and 10" in capsys.readouterr().err


def test_console_command_exit_status_says_whether_any_file_failed(small_checkpoint, sure_digits, tmp_path):
    good = write_digit(tmp_path / "eight.png", sure_digits[8], scale=5, dark_on_light=True, canvas=(200, 160))
    command = [sys.executable, "-m", "mnist_classifier", "predict", "--checkpoint", str(small_checkpoint)]
    ok = subprocess.run([*command, good], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith(f"{good}: 8 ("), ok.stderr
    failed = subprocess.run([*command, good, str(tmp_path / "gone.png")], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "gone.png" in failed.stderr and "Traceback" not in failed.stderr
    usage = subprocess.run([*command[:-2]], capture_output=True, text=True, timeout=120)  # no IMAGE
    assert usage.returncode == 2 and "IMAGE" in usage.stderr


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_reader_that_stops_early_ends_it_quietly(small_checkpoint, sure_digits, tmp_path, output):
    """`predict *.png | head`: head closes the pipe; predict stops without a traceback, as `ls | head` does."""
    image = write_digit(tmp_path / "eight.png", sure_digits[8])
    command = [sys.executable, "-m", "mnist_classifier", "predict", "--checkpoint", str(small_checkpoint), image]
    process = subprocess.Popen(command + (["--json"] if output == "json" else []), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader has gone before the first answer is written
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141, stderr  # 128 + SIGPIPE, what the shell reports for `ls | head`
    assert stderr == ""


def test_jpeg_photo_of_a_digit_is_read(small_checkpoint, sure_digits, tmp_path, capsys):
    """A lossy JPEG (ringing around the strokes) on grey paper still reads right."""
    big = cv2.resize(sure_digits[4], None, fx=12, fy=12, interpolation=cv2.INTER_CUBIC)
    paper = np.full((420, 520), 200, np.uint8)
    paper[40:40 + big.shape[0], 150:150 + big.shape[1]] -= (big * 0.7).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(paper).save(buffer, format="JPEG", quality=60)
    photo = tmp_path / "four.jpg"
    photo.write_bytes(buffer.getvalue())
    assert main(["predict", str(photo), "--checkpoint", str(small_checkpoint)]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: 4 (")


def draw_cross(path) -> str:
    """An X drawn with a thick pen on white paper, as a user would draw one."""
    paper = np.full((280, 280), 255, np.uint8)
    for start, end in (((60, 50), (220, 230)), ((220, 50), (60, 230))):
        cv2.line(paper, start, end, 0, 20, cv2.LINE_AA)
    cv2.imwrite(str(path), paper)
    return str(path)


def test_an_x_is_not_a_digit_with_its_best_guess_and_exit_0(honest_checkpoint, sure_digits, tmp_path, capsys):
    cross = draw_cross(tmp_path / "cross.png")
    seven = write_digit(tmp_path / "seven.png", sure_digits[7], scale=10, dark_on_light=True)
    assert main(["predict", cross, seven, "--checkpoint", str(honest_checkpoint)]) == 0  # a refusal is an answer
    out = capsys.readouterr().out.splitlines()
    refused = re.match(rf"^{re.escape(cross)}: not a digit \(best guess (\d), (≥?[\d.]+)%\)  top 3: ", out[0])
    assert refused, out[0]
    assert LINE.match(out[1])["digit"] == "7"
    assert main(["predict", cross, "--checkpoint", str(honest_checkpoint), "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    threshold = load_predictor(honest_checkpoint).calibration.reject_threshold
    assert answer["verdict"] == "not_a_digit" and answer["digit"] is None
    assert answer["best_guess"] == int(refused[1]) and answer["digit_score"] < threshold
    assert answer["has_ink"] and answer["top"][0]["digit"] == answer["best_guess"]
    # --reject-threshold none: the same drawing gets its best guess as the digit
    assert main(["predict", cross, "--checkpoint", str(honest_checkpoint), "--json", "--reject-threshold", "none"]) == 0
    [forced] = json.loads(capsys.readouterr().out)
    assert forced["verdict"] == "digit" and forced["digit"] == answer["best_guess"]
    assert forced["confidence"] == answer["confidence"]  # the threshold never changes the probabilities


def test_a_small_digit_drawn_with_a_wide_pen_is_refused_with_what_to_change(honest_checkpoint, tmp_path, capsys):
    """helper-85: it came back as a confident 8; the shape it had is not in the pixels the model sees."""
    from mnist_classifier.answer import TOO_BOLD_HINT

    from .test_preprocess import TWO, drawn_with_the_pads_pen

    small, large = str(tmp_path / "small.png"), str(tmp_path / "large.png")
    cv2.imwrite(small, drawn_with_the_pads_pen(TWO, 0.15))
    cv2.imwrite(large, drawn_with_the_pads_pen(TWO, 0.6))
    assert main(["predict", small, large, "--checkpoint", str(honest_checkpoint)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(rf"^{re.escape(small)}: not a digit \(best guess \d, ≥?[\d.]+%\)  top 3: .*  \({TOO_BOLD_HINT}\)$",
                    out[0]), out[0]
    assert TOO_BOLD_HINT not in out[1]
    assert main(["predict", small, large, "--checkpoint", str(honest_checkpoint), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert answers[0]["verdict"] == "not_a_digit" and answers[0]["hint"] == TOO_BOLD_HINT
    assert answers[1]["hint"] is None
    # Refusal turned off: answered as a digit, with no hint to draw it again
    assert main(["predict", small, "--checkpoint", str(honest_checkpoint), "--json", "--reject-threshold", "none"]) == 0
    [forced] = json.loads(capsys.readouterr().out)
    assert forced["verdict"] == "digit" and forced["hint"] is None


def test_a_negative_threshold_in_any_spelling_is_read_as_a_number(honest_checkpoint, tmp_path, capsys):
    """argparse takes "-1.5" after an option as its value but "-1e3" for an option of its own."""
    cross = draw_cross(tmp_path / "cross.png")
    assert main(["predict", cross, "--checkpoint", str(honest_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["verdict"] == "not_a_digit"  # the stored threshold
    for spelled in (["--reject-threshold", "-1e3"], ["--reject-threshold=-1e3"], ["--reject-threshold", "-1000"],
                    ["--reject-t", "-1e3"]):  # argparse takes a name's unambiguous start too
        assert main(["predict", cross, "--checkpoint", str(honest_checkpoint), "--json", *spelled]) == 0
        [answer] = json.loads(capsys.readouterr().out)
        assert answer["verdict"] == "digit", spelled  # every score is above -1000: nothing is refused
    # after "--" every word is a file name, however it looks (helper-53: two were joined into one)
    assert main(["predict", "--checkpoint", str(honest_checkpoint), "--", "--reject-threshold", "-1e3"]) == 1
    assert "--reject-threshold: error: image file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", cross, "--checkpoint", str(honest_checkpoint), "--reject-threshold", "-inf"])
    assert "--reject-threshold: expected a finite number" in capsys.readouterr().err


def test_reject_threshold_that_is_no_number_is_a_usage_error(small_checkpoint, tmp_path, capsys):
    cross = draw_cross(tmp_path / "cross.png")
    for bad in ("high", "nan"):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", cross, "--checkpoint", str(small_checkpoint), "--reject-threshold", bad])
        assert exit_info.value.code == 2
        assert "--reject-threshold: expected a" in capsys.readouterr().err


def test_a_fine_tuned_model_answers_first_and_the_way_back_names_a_model_that_exists(small_checkpoint, sure_digits,
                                                                                       tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, "models/simple_cnn_user_best.pth")  # finetune's, from the bundled model
    three = write_digit(tmp_path / "three.png", sure_digits[3])
    assert main(["predict", str(three)]) == 0
    said = "model: models/simple_cnn_user_best.pth, fine-tuned on your drawings; --checkpoint {} answers with the original"
    assert said.format("bundled") in capsys.readouterr().err
    assert main(["predict", str(three), "--checkpoint", "bundled", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)[0]["digit"] == 3  # named: nothing to explain
    shutil.copy(small_checkpoint, "models/simple_cnn_best.pth")  # now a trained one is the original
    assert main(["predict", str(three)]) == 0
    assert said.format("models/simple_cnn_best.pth") in capsys.readouterr().err


def test_calibrating_the_base_again_keeps_its_fine_tune_answering(small_checkpoint, tmp_path, monkeypatch):
    """`calibrate` rewrites the base's file but not its weights: the fine-tune still belongs to it.
    (It answered only when named, told it was tuned from another model.)"""
    from mnist_classifier import load
    from mnist_classifier.bundled import sha256_of
    from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint, weights_sha256

    monkeypatch.chdir(tmp_path)
    base = load_checkpoint(small_checkpoint)
    trained = save_checkpoint(base, "models/simple_cnn_best.pth")
    record = {"base_checkpoint": str(trained), "base_sha256": sha256_of(trained), "bundled_base": False,
              "base_weights_sha256": weights_sha256(base)}
    save_checkpoint({**base, "finetune": record}, "models/simple_cnn_user_best.pth")
    save_checkpoint({**base, "temperature": 0.5, "reject_threshold": 1.0}, trained)  # calibrated again
    assert sha256_of(trained) != record["base_sha256"] and load().tuned
    retrained = {name: weights * 0.5 if weights.is_floating_point() else weights
                 for name, weights in base["model_state_dict"].items()}
    save_checkpoint({**base, "model_state_dict": retrained}, trained)  # trained again: other weights
    assert not load().tuned


def test_a_model_trained_after_the_fine_tune_answers_and_says_the_tuned_one_is_outdated(
        small_checkpoint, sure_digits, tmp_path, monkeypatch, capsys):
    from mnist_classifier import load
    from mnist_classifier.bundled import sha256_of
    from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint
    from mnist_classifier.finetune import _who_answers

    monkeypatch.chdir(tmp_path)
    trained = save_checkpoint(load_checkpoint(small_checkpoint), "models/simple_cnn_best.pth")
    record = {"base_checkpoint": str(trained), "base_sha256": sha256_of(trained), "bundled_base": False}
    save_checkpoint({**load_checkpoint(small_checkpoint), "finetune": record}, "models/simple_cnn_user_best.pth")
    three = write_digit(tmp_path / "three.png", sure_digits[3])
    assert main(["predict", str(three)]) == 0
    assert "model: models/simple_cnn_user_best.pth, fine-tuned on your drawings" in capsys.readouterr().err
    assert load().tuned
    tuned = Path("models/simple_cnn_user_best.pth")
    assert _who_answers(tuned).startswith("predict, demo, serve and load() answer with it from now on")
    # `train` again: a new best, which the fine-tune never saw
    save_checkpoint({**load_checkpoint(small_checkpoint), "epoch": 99}, "models/simple_cnn_best.pth")
    assert main(["predict", str(three), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == ("model: models/simple_cnn_best.pth; models/simple_cnn_user_best.pth was fine-tuned from "
                           "another model, so it answers only when named "
                           "(--checkpoint models/simple_cnn_user_best.pth); `mnist-classifier finetune` fine-tunes "
                           "this one")
    assert json.loads(out)[0]["digit"] == 3
    reader = load()
    assert not reader.tuned and reader.path == tmp_path.joinpath("models/simple_cnn_best.pth").relative_to(tmp_path)
    # what finetune --checkpoint <another model> says as it finishes: the trained model goes on answering
    assert _who_answers(tuned) == ("predict, demo, serve and load() go on answering with models/simple_cnn_best.pth, "
                                   "which it was not tuned from: name it with "
                                   "--checkpoint models/simple_cnn_user_best.pth")


def test_the_readme_example_images_answer_as_the_readme_shows(monkeypatch, capsys):
    """helper-59: the README's commands named a digit.png that does not ship; examples/ holds the
    two it uses, and the bundled model (what a fresh clone answers with) says what it prints."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    command = "mnist-classifier predict examples/seven.png examples/cross.png"
    readme = (root / "README.md").read_text().splitlines()
    start = next(index for index, line in enumerate(readme) if line.startswith(f"$ {command}"))
    assert main(["predict", "examples/seven.png", "examples/cross.png", "--checkpoint", "bundled"]) == 0
    assert capsys.readouterr().out.splitlines() == readme[start + 1:start + 3]
