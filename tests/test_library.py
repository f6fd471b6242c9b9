"""The Python API (`mnist_classifier.load()`), the bundled model, and one-way imports."""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import mnist_classifier
from mnist_classifier.bundled import BUNDLED_CHECKPOINT, BUNDLED_ONNX, provenance, sha256_of
from mnist_classifier.cli import reject_threshold as cli_reject_threshold
from mnist_classifier.errors import CheckpointError, ImageError, UserError

from .conftest import REPO_ROOT
from .test_preprocess import blank_bilevel_png

PACKAGE = REPO_ROOT / "src" / "mnist_classifier"
MAX_BUNDLED_BYTES = 2 * 1024 * 1024


def big_png(image: np.ndarray, path: Path) -> Path:
    """A 28x28 MNIST digit as a user would have it: 224x224, black ink on white."""
    Image.fromarray(255 - image).resize((224, 224), Image.BILINEAR).save(path)
    return path


# ------------------------------------------------------------------ the bundled model


def test_bundled_files_are_the_recorded_ones_and_small():
    record = provenance()
    for path in (BUNDLED_CHECKPOINT, BUNDLED_ONNX):
        assert sha256_of(path) == record["files"][path.name]["sha256"], f"{path.name} differs from provenance.json"
        assert path.stat().st_size == record["files"][path.name]["bytes"] <= MAX_BUNDLED_BYTES
    assert record["recipe"].startswith("mnist-classifier train --model simple_cnn") and record["seed"] == 42
    assert record["ece"] <= 0.01


def test_bundled_model_scores_its_recorded_accuracy_on_mnist_test(mnist_data):
    images, labels = mnist_data.test.images.numpy(), mnist_data.test.labels.numpy()
    onnx = mnist_classifier.load(BUNDLED_ONNX)
    accuracy = (onnx.predictor.predict(images).argmax(1) == labels).mean()
    assert accuracy >= 0.993
    assert accuracy == pytest.approx(provenance()["test_accuracy"], abs=1e-4)
    # both shipped files are the same model, calibrated alike
    checkpoint = mnist_classifier.load(BUNDLED_CHECKPOINT)
    np.testing.assert_allclose(checkpoint.predictor.predict(images[:500]), onnx.predictor.predict(images[:500]),
                               atol=1e-4)
    assert checkpoint.predictor.calibration == onnx.predictor.calibration
    assert onnx.predictor.calibration.fitted and onnx.predictor.calibration.reject_threshold is not None


# ------------------------------------------------------------------ the Python API


def test_every_kind_of_input_gets_the_same_answer(mnist_data, tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digit, label = mnist_data.test.images[0].numpy(), int(mnist_data.test.labels[0])
    path = big_png(digit, tmp_path / "digit.png")
    encoded = path.read_bytes()
    inputs = {
        "path": path, "str": str(path), "bytes": encoded, "file object": io.BytesIO(encoded),
        "PIL image": Image.open(path), "numpy array": digit, "numpy array (1, 28, 28)": digit[None],
        "numpy array (1, 1, 28, 28)": digit[None, None], "numpy array (1, 28, 28, 1)": digit[None, :, :, None],
        "torch tensor (1, 1, 28, 28)": torch.from_numpy(digit)[None, None],
        "float tensor": torch.from_numpy(digit).float() / 255,
    }
    answers = {kind: reader.predict(source) for kind, source in inputs.items()}
    for kind, answer in answers.items():
        assert answer.verdict == "digit" and answer.digit == label, kind
        assert answer.preview.shape == (28, 28) and len(answer.probabilities) == 10, kind
        assert 0.5 < answer.confidence <= 1.0 and answer.best_guess == answer.digit, kind


def test_predict_batch_answers_each_in_order(mnist_data, tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    images, labels = mnist_data.test.images[:40].numpy(), mnist_data.test.labels[:40].numpy()
    blank = np.full((100, 100), 255, np.uint8)
    batch = reader.predict_batch([*images, blank, str(big_png(images[3], tmp_path / "three.png"))])
    assert len(batch) == 42
    assert np.mean([a.best_guess == y for a, y in zip(batch[:40], labels)]) >= 0.95
    assert [a.best_guess for a in batch[:40]] == [reader.predict(image).best_guess for image in images]
    assert batch[40].verdict == "empty" and batch[40].digit is None and batch[40].best_guess is None
    assert batch[41].best_guess == batch[3].best_guess


def test_a_scribble_is_not_a_digit_and_a_text_file_is_a_clear_error(tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    rng = np.random.default_rng(0)
    scribble = np.zeros((280, 280), np.uint8)
    points = rng.integers(20, 260, size=(40, 2)).astype(np.int32)
    cv2.polylines(scribble, [points], False, 255, 9)
    answer = reader.predict(scribble)
    assert answer.verdict == "not_a_digit" and answer.digit is None and answer.best_guess is not None
    text = tmp_path / "notes.txt"
    text.write_text("seven")
    with pytest.raises(ImageError, match="notes.txt is not an image file"):
        reader.predict(text)
    with pytest.raises(ImageError, match="binary mode"):
        reader.predict(open(text))


def test_a_damaged_png_and_an_empty_file_say_so_not_that_they_are_no_image(tmp_path):
    """helper-72: a PNG with one byte flipped before its pixels, and a 0-byte file, were "not an image
    file PIL can read; use a PNG or JPEG" (serve's API said "truncated or corrupt", "empty body")."""
    reader = mnist_classifier.load(BUNDLED_ONNX)
    damaged = bytearray((REPO_ROOT / "examples" / "seven.png").read_bytes())
    damaged[18] ^= 0xFF  # in the header's width: its checksum no longer matches
    (tmp_path / "damaged.png").write_bytes(damaged)
    (tmp_path / "empty.png").write_bytes(b"")
    for source in (tmp_path / "damaged.png", bytes(damaged), bytes(damaged[:5])):  # the last: its signature, cut
        with pytest.raises(ImageError, match=r": the PNG file is truncated or corrupt; save it again$"):
            reader.predict(source)
    with pytest.raises(ImageError, match=r"empty.png is an empty file \(0 bytes\); save the image again$"):
        reader.predict(tmp_path / "empty.png")
    with pytest.raises(ImageError, match=r"^empty image data \(0 bytes\)"):
        reader.predict(b"")
    with pytest.raises(ImageError, match=r"truncated or corrupt.*; save it again$"):  # cut inside its pixels
        reader.predict(bytes(damaged[:len(damaged) // 2]))
    # helper-75: the library reads GIF too, so a cut-off one is not "no image file ... use a PNG or JPEG"
    gif = io.BytesIO()
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(gif, format="GIF")
    with pytest.raises(ImageError, match=r": the GIF file is truncated or corrupt; save it again$"):
        reader.predict(gif.getvalue()[:20])


def test_load_names_which_model_answers(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = mnist_classifier.load()
    assert bundled.bundled and bundled.path == BUNDLED_ONNX and "bundled" in repr(bundled)
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, tmp_path / "models" / "simple_cnn_best.pth")
    trained = mnist_classifier.load()  # what `make train` wrote wins over the bundled model
    assert not trained.bundled and trained.path == Path("models/simple_cnn_best.pth")
    assert mnist_classifier.load(small_checkpoint).path == small_checkpoint
    assert mnist_classifier.load(reject_threshold=None).predictor.calibration.reject_threshold is None
    with pytest.raises(CheckpointError, match="none.onnx not found"):
        mnist_classifier.load(tmp_path / "none.onnx")


def test_a_zero_one_mask_of_any_integer_type_reads_like_a_bool_mask(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    seven, label = mnist_data.test.images[0].numpy(), int(mnist_data.test.labels[0])
    mask = seven > 128
    as_mask = {"uint8 0/1": mask.astype(np.uint8), "int64 0/1": mask.astype(np.int64),
               "torch uint8 0/1": torch.from_numpy(mask.astype(np.uint8))}
    as_8_bit = {"uint16 0..255": seven.astype(np.uint16),
                "torch int16 0..255": torch.from_numpy(seven.astype(np.int16))}
    for inputs, reference in [(as_mask, reader.predict(mask)), (as_8_bit, reader.predict(seven))]:
        assert reference.verdict == "digit" and reference.digit == label
        for kind, image in inputs.items():
            answer = reader.predict(image)
            assert answer.verdict == "digit" and answer.digit == label, kind  # was "empty": 0/1 divided by 255
            assert np.array_equal(answer.preview, reference.preview), kind


@pytest.mark.parametrize("count", [3, 4])
def test_a_stack_of_digits_is_refused_not_read_as_one_colour_image(mnist_data, count):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digits = mnist_data.test.images[:count].numpy()
    advice = f"looks like a batch of {count} digits: use predict_batch(list(x.reshape(-1, 28, 28)))"
    for stack, fix in [(torch.from_numpy(digits), "x.permute(1, 2, 0)"), (digits, "np.moveaxis(x, 0, -1)"),
                       (digits[None], "np.moveaxis(x, 0, -1)")]:  # the last: a batch axis in front too
        with pytest.raises(ImageError, match=re.escape(advice)):
            reader.predict(stack)
        with pytest.raises(ImageError, match=re.escape(fix)):
            reader.predict(stack)
        answers = reader.predict_batch(list(stack.reshape(-1, 28, 28)))  # the advice, followed
        assert [a.best_guess for a in answers] == list(mnist_data.test.labels[:count])
    # a colour image of another size is still read channels first, as torch keeps images
    digit = mnist_data.test.images[0].numpy()
    colour = torch.from_numpy(np.stack([cv2.resize(digit, (64, 64))] * 3))  # (3, 64, 64)
    assert reader.predict(colour).digit == reader.predict(digit).digit == int(mnist_data.test.labels[0])


def test_flattened_digits_and_a_dataloader_batch_are_refused_with_the_reshape_that_reads_them(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digits, labels = mnist_data.test.images[:5].numpy(), list(mnist_data.test.labels[:5])
    rows = digits.reshape(5, 784)  # scikit-learn's MNIST, x.view(N, -1): read as a strip they got a wrong digit
    test_set = mnist_data.test.images.numpy().reshape(-1, 784)  # scikit-learn's X_test: 10,000 rows
    cases = {"5 flattened 28x28 digits": [rows, torch.from_numpy(rows).float() / 255],
             "1 flattened 28x28 digit": [rows[:1], rows[0][:, None]],
             "10,000 flattened 28x28 digits": [test_set, (test_set / 255 - 0.1307) / 0.3081],  # normalised too
             "a batch of 5 digits": [digits[:, None], torch.from_numpy(digits[:, None]),  # (N, 1, 28, 28)
                                     digits[..., None]]}  # (N, 28, 28, 1), as Keras keeps them
    for says, arrays in cases.items():
        for array in arrays:
            with pytest.raises(ImageError, match=re.escape(says) + r".*predict_batch\(list\(x.reshape\(-1, 28, 28\)\)\)"):
                reader.predict(array)
    assert [a.best_guess for a in reader.predict_batch(list(rows.reshape(-1, 28, 28)))] == labels
    assert reader.predict(rows[0].reshape(28, 28)).digit == labels[0]
    for height in (150, 300):  # a photo 784 px wide, grey ink on white: its rows frame no digit, so it is read
        photo = np.full((height, 784), 235, np.uint8)
        photo[5:145, 300:440] = 235 - cv2.resize(digits[0], (140, 140)) * 0.75
        assert reader.predict(photo).digit == labels[0], height


def test_answers_compare_hash_and_print_by_their_fields(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    first, again, other = (reader.predict(mnist_data.test.images[i].numpy()) for i in (0, 0, 1))
    assert first == again and hash(first) == hash(again) and first != other and first in [other, again]
    assert len({first, again, other}) == 2
    assert first.preview is not None and "preview" not in repr(first) and len(repr(first)) < 600


def test_sparse_tensors_are_read_and_a_tensor_without_values_is_a_clear_error(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digit = torch.from_numpy(mnist_data.test.images[0].numpy())
    assert reader.predict(digit.to_sparse()) == reader.predict(digit)
    with pytest.raises(ImageError, match=r"^cannot read pixels from this meta tensor .*pass a tensor that holds"):
        reader.predict(torch.empty(28, 28, device="meta"))


def test_load_checks_the_reject_threshold_up_front():
    def threshold(value):
        return mnist_classifier.load(BUNDLED_ONNX, reject_threshold=value).predictor.calibration.reject_threshold

    assert threshold("none") is None and threshold(None) is None  # "none": the CLI's spelling
    assert threshold("None") is None and threshold(" NONE ") is None
    assert threshold(1.5) == threshold(np.float32(1.5)) == threshold("1.5") == 1.5 and threshold(-2) == -2.0
    for bad in ["never", float("nan"), float("inf"), True, [1]]:
        with pytest.raises(UserError, match=r"^reject_threshold: expected a (finite )?number \(a digit score\)"):
            mnist_classifier.load(BUNDLED_ONNX, reject_threshold=bad)
    # --reject-threshold reads by the same rule
    assert cli_reject_threshold("none") is None and cli_reject_threshold("stored") == "stored"
    with pytest.raises(argparse.ArgumentTypeError, match="^expected a finite number"):
        cli_reject_threshold("nan")


def test_predict_batch_refuses_one_image_and_names_the_item_it_cannot_read(mnist_data, tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digits, labels = mnist_data.test.images[:3].numpy(), list(mnist_data.test.labels[:3])
    path = big_png(digits[0], tmp_path / "digit.png")
    for one in [str(path), path, path.read_bytes(), digits[0], torch.from_numpy(digits[0]), digits]:
        with pytest.raises(ImageError, match=r"^predict_batch takes a list of images; use predict\(\) for one"):
            reader.predict_batch(one)
    with_nan = digits[1].astype(np.float32)
    with_nan[3, 3] = np.nan
    with pytest.raises(ImageError, match=r"^item 1: image contains NaN"):
        reader.predict_batch([digits[0], with_nan, digits[2]])
    with pytest.raises(ImageError, match=r"^image contains NaN"):  # one image: no index to name
        reader.predict(with_nan)
    assert reader.predict_batch([]) == []
    assert [a.best_guess for a in reader.predict_batch(digit for digit in digits)] == labels


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")  # users still make them
def test_odd_containers_of_pixels_read_as_their_values_and_a_closed_file_is_named(mnist_data, tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digit = mnist_data.test.images[0].numpy()
    expected = reader.predict(digit)
    # np.matrix stays 2-D when indexed: numpy aborted the process on what came after
    assert reader.predict(np.asmatrix(digit)) == expected
    assert reader.predict(np.ma.masked_array(digit, mask=digit > 100)) == expected  # a mask is no picture's
    closed = open(big_png(digit, tmp_path / "digit.png"), "rb")
    closed.close()
    with pytest.raises(ImageError, match=r"^item 1: cannot read the file object \(read of closed file\)"):
        reader.predict_batch([digit, closed])


def test_inputs_that_are_no_picture_say_what_they_are(mnist_data, tmp_path):
    """helper-62's review: /dev/zero was "not found", a read-out file object "not an image file",
    a closed PIL image "truncated or corrupt"; an endless stream was read to the memory's end, and
    a huge half-precision tensor copied to float32 before it was refused."""
    reader = mnist_classifier.load(BUNDLED_ONNX)
    with pytest.raises(ImageError, match=r"^/dev/zero is not a regular file"):
        reader.predict("/dev/zero")
    with pytest.raises(ImageError, match=r"^empty image path"):
        reader.predict("")
    with open("/dev/zero", "rb") as endless, pytest.raises(ImageError, match=r"holds more than 129 MiB"):
        reader.predict(endless)
    with open(big_png(mnist_data.test.images[0].numpy(), tmp_path / "digit.png"), "rb") as file:
        assert reader.predict(file).digit == int(mnist_data.test.labels[0])
        with pytest.raises(ImageError, match=r"already read to its end \(seek\(0\)"):
            reader.predict(file)
    closed = Image.fromarray(mnist_data.test.images[0].numpy())
    closed.close()
    with pytest.raises(ImageError, match=r"^cannot read the PIL image \(Operation on closed image\)"):
        reader.predict(closed)
    with pytest.raises(ImageError, match=r"tensor of shape \(20000, 20000\) holds more values"):
        reader.predict(torch.empty(20_000, 20_000, dtype=torch.float16))  # 800 MB; its float32 copy would be 1.6 GB
    assert mnist_classifier.ImageError is ImageError and issubclass(mnist_classifier.CheckpointError,
                                                                    mnist_classifier.UserError)


def test_a_channels_first_array_is_refused_with_the_call_that_reads_it(mnist_data):
    """helper-77: a torch (3, H, W) tensor reads as channels first, a numpy one was refused without a word why."""
    reader = mnist_classifier.load(BUNDLED_ONNX)
    large = np.asarray(Image.fromarray(255 - mnist_data.test.images[0].numpy()).resize((200, 200), Image.BILINEAR))
    digit = np.repeat(large[None], 3, axis=0)
    with pytest.raises(ImageError, match=r"shape \(3, 200, 200\); .*: channels first\? np.moveaxis\(image, 0, -1\)"):
        reader.predict(digit)
    assert reader.predict(np.moveaxis(digit, 0, -1)).digit == int(mnist_data.test.labels[0])


def test_streams_lazy_pil_images_and_warnings_as_errors_read_as_before(mnist_data, tmp_path):
    """helper-65's review of the changes above: one read() of a pipe took what had arrived; a read()
    without a size crashed; an Image.open()ed picture was decoded before its size was checked; with
    warnings as errors PIL's size warning escaped instead of ImageError."""
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digit = big_png(mnist_data.test.images[0].numpy(), tmp_path / "digit.png")
    expected = int(mnist_data.test.labels[0])
    data = digit.read_bytes()
    readable, writable = os.pipe()

    def send_in_two_parts() -> None:
        with open(writable, "wb", buffering=0) as sink:
            sink.write(data[:40])
            time.sleep(0.3)
            sink.write(data[40:])

    sender = threading.Thread(target=send_in_two_parts)
    sender.start()
    with open(readable, "rb", buffering=0) as stream:  # unbuffered: read(n) returns what has arrived
        assert reader.predict(stream).digit == expected
    sender.join()

    class WholeReads:  # a read() that takes no size
        def read(self):
            return data

    assert reader.predict(WholeReads()).digit == expected
    huge = tmp_path / "huge.png"
    whole = blank_bilevel_png(12_000, 12_000)  # 144 Mpx: PIL warns but opens it
    huge.write_bytes(whole[:len(whole) // 2])  # cut short: decoding it would fail, its size is in the header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        lazy = Image.open(huge)
    with lazy, pytest.raises(ImageError, match=r"larger than 4096 pixels a side \(got 12000x12000\)"):
        reader.predict(lazy)
    warned = tmp_path / "warned.png"
    warned.write_bytes(blank_bilevel_png(10_000, 10_000))  # over PIL's warning size, under its error size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="larger than 4096 pixels a side"):
            reader.predict(warned)


def test_the_model_itself_refuses_images_it_would_misread(mnist_data):
    """reader.predictor.predict takes MNIST-like uint8 28x28 images: 0..1 floats all read as black
    (every digit a 1 at 100%), and another shape failed deep inside ONNX Runtime."""
    predictor = mnist_classifier.load(BUNDLED_ONNX).predictor
    digits = mnist_data.test.images[:5].numpy()
    assert predictor.predict(digits).shape == (5, 10) and predictor.predict(digits[0]).shape == (1, 10)
    with pytest.raises(ImageError, match=r"^the model takes uint8 images .* got float64; 0..1 floats: "):
        predictor.predict(digits / 255.0)
    np.testing.assert_array_equal(predictor.predict(digits.astype(np.int64)), predictor.predict(digits))
    with pytest.raises(ImageError, match=r"^the model takes uint8 images .* got int64"):
        predictor.predict(digits.astype(np.int64) * 2)  # up to 510: not pixels
    for shape in [(5, 1, 28, 28), (28, 28, 3), (32, 32), ()]:
        with pytest.raises(ImageError, match=r"^the model takes \(N, 28, 28\) or \(28, 28\) images, got shape"):
            predictor.predict(np.zeros(shape, np.uint8))


def test_load_and_predict_expand_home_and_say_when_the_path_is_empty(mnist_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(BUNDLED_ONNX, tmp_path / "mine.onnx")
    assert mnist_classifier.load("~/mine.onnx").path == tmp_path / "mine.onnx"
    big_png(mnist_data.test.images[0].numpy(), tmp_path / "digit.png")
    assert mnist_classifier.load("~/mine.onnx").predict("~/digit.png").digit == int(mnist_data.test.labels[0])
    with pytest.raises(ImageError, match=r"^~/missing.png: image file not found"):  # named as the user wrote it
        mnist_classifier.load("~/mine.onnx").predict("~/missing.png")
    with pytest.raises(CheckpointError, match="empty model path"):
        mnist_classifier.load("")


def test_the_onnx_path_answers_without_importing_torch_or_writing_to_home(mnist_data, tmp_path):
    path = big_png(mnist_data.test.images[1].numpy(), tmp_path / "digit.png")
    program = ("import sys, json, mnist_classifier\n"
               "reader = mnist_classifier.load()\n"
               f"answer = reader.predict({str(path)!r})\n"
               "print(json.dumps({'digit': answer.digit, 'bundled': reader.bundled,"
               " 'torch': 'torch' in sys.modules}))\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "HOME": str(home)})
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said == {"digit": int(mnist_data.test.labels[1]), "bundled": True, "torch": False}
    # ONNX Runtime's telemetry (a device id and a database in ~/.cache) stays off
    assert [path.relative_to(home) for path in home.rglob("*") if path.is_file()] == []


def test_predict_command_without_models_uses_the_bundled_model_and_says_so(mnist_data, tmp_path):
    path = big_png(mnist_data.test.images[2].numpy(), tmp_path / "digit.png")
    done = subprocess.run([sys.executable, "-m", "mnist_classifier", "predict", "digit.png", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bundled SimpleCNN" in done.stderr and "make train" in done.stderr
    assert json.loads(done.stdout)[0]["digit"] == int(mnist_data.test.labels[2])
    assert path.is_file()


# ------------------------------------------------------------------ the package's shape


def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in the file (lazy imports too)."""
    graph = {}
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            targets.update(name for name in names if name.startswith("mnist_classifier"))
        graph[module] = targets
    modules = set(graph)
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}


def test_imports_run_one_way():
    graph = package_imports()
    assert len(graph) > 30 and "mnist_classifier.reader" in graph["mnist_classifier"]
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    # the package __init__ re-exports the API; modules that import it are importing the package
    cycles = [c for c in cycles if "mnist_classifier" not in c]
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)
    importers_of_cli = [m for m, ts in graph.items() for t in ts if t.startswith("mnist_classifier.cli")]
    assert set(importers_of_cli) <= {"mnist_classifier.__main__"}


def test_every_module_says_what_it_owns():
    undocumented = [str(file.relative_to(PACKAGE)) for file in PACKAGE.rglob("*.py")
                    if not ast.get_docstring(ast.parse(file.read_text()))]
    assert not undocumented


def test_the_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()
    assert mnist_classifier.load.__annotations__["return"] in ("Reader", mnist_classifier.Reader)
    assert os.path.basename(mnist_classifier.__file__) == "__init__.py" and mnist_classifier.__all__


# ------------------------------------------------------------------ helper-88: the library as a user meets it


def test_a_default_model_that_will_not_load_says_where_it_came_from(small_checkpoint, tmp_path, monkeypatch):
    """A folder holding another project's models/simple_cnn_best.pth (the seed's own name)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    torch.save(torch.load(small_checkpoint, weights_only=True)["model_state_dict"],
               tmp_path / "models" / "simple_cnn_best.pth")  # a bare state_dict, as the seed saves
    with pytest.raises(CheckpointError, match=r"not an mnist-classifier checkpoint.*no model was named, so load\(\) "
                                              r"took it from this folder's models/; load\('bundled'\) answers"):
        mnist_classifier.load()
    assert mnist_classifier.load("bundled").bundled
    with pytest.raises(CheckpointError) as named:  # named: the user knows which file, no such words
        mnist_classifier.load("models/simple_cnn_best.pth")
    assert "no model was named" not in str(named.value)


def test_the_librarys_notes_are_warnings_a_caller_can_filter(small_checkpoint, tmp_path, capsys):
    ours = torch.load(small_checkpoint, weights_only=True)
    torch.save({key: ours[key] for key in ("model_state_dict", "epoch", "accuracy")}, tmp_path / "old.pth")
    with pytest.warns(UserWarning, match=r"old\.pth has no stored calibration"):
        mnist_classifier.load(tmp_path / "old.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mnist_classifier.load(tmp_path / "old.pth")
    assert capsys.readouterr().err == ""


def test_an_empty_answer_ranks_no_class_and_top_takes_a_count(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    assert reader.predict(np.zeros((28, 28), np.uint8)).top(3) == []
    answer = reader.predict(mnist_data.test.images[0].numpy())
    assert [digit for digit, _ in answer.top(2)] == [answer.best_guess, answer.top(10)[1][0]]
    assert answer.top(0) == [] and len(answer.top(np.int64(3))) == 3
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"top\(k\) takes a whole number k >= 0"):
            answer.top(bad)
    assert "best_guess" in mnist_classifier.Answer.__doc__ and "not_a_digit" in mnist_classifier.Answer.__doc__


def test_several_frames_are_refused_one_frame_is_read(mnist_data, tmp_path):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digits = [Image.fromarray(255 - mnist_data.test.images[i].numpy()) for i in range(2)]
    blank = Image.new("L", (28, 28), 255)
    blank.save(tmp_path / "anim.gif", save_all=True, append_images=digits, duration=100)
    digits[0].save(tmp_path / "pages.tiff", save_all=True, append_images=digits[1:])
    for name in ("anim.gif", "pages.tiff"):  # the first frame alone was answered (the GIF's: "empty")
        with pytest.raises(ImageError, match=rf"{name} holds (3|2) frames .*save each drawing as an image of its own"):
            reader.predict(tmp_path / name)
    animation = Image.open(tmp_path / "anim.gif")
    with pytest.raises(ImageError, match=r"^the image holds 3 frames .*image\.seek\(i\), then image\.copy\(\)"):
        reader.predict(animation)
    animation.seek(2)
    assert reader.predict(animation.copy()).digit == int(mnist_data.test.labels[1])


def test_an_in_memory_image_of_a_mode_pil_cannot_convert_is_not_called_a_corrupt_file():
    reader = mnist_classifier.load(BUNDLED_ONNX)
    premultiplied = Image.new("LA", (28, 28)).convert("La")
    with pytest.raises(ImageError, match=r"^the image: PIL cannot convert its pixel mode 'La' to RGBA; pass it in mode L"):
        reader.predict(premultiplied)


def test_one_flattened_digit_gets_the_reshape_that_reads_it(mnist_data):
    reader = mnist_classifier.load(BUNDLED_ONNX)
    flat = mnist_data.test.images[0].numpy().ravel()
    with pytest.raises(ImageError, match=r"shape \(784,\) looks like one flattened 28x28 digit: use predict\(x\.reshape"):
        reader.predict(flat)
    assert reader.predict(flat.reshape(28, 28)).digit == int(mnist_data.test.labels[0])


def test_a_reader_goes_to_another_process_as_the_model_to_load(small_checkpoint, mnist_data):
    import pickle
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    image = mnist_data.test.images[0].numpy()
    for reader in (mnist_classifier.load("bundled"), mnist_classifier.load(small_checkpoint, reject_threshold=None)):
        copy = pickle.loads(pickle.dumps(reader))
        assert copy.predict(image) == reader.predict(image) and repr(copy).split(",")[0] == repr(reader).split(",")[0]
        assert copy.predictor.calibration.reject_threshold == reader.predictor.calibration.reject_threshold
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # what failed inside onnxruntime
        assert pool.submit(reader.predict, image).result(timeout=120) == reader.predict(image)


def test_the_command_line_says_its_version():
    done = subprocess.run([sys.executable, "-m", "mnist_classifier", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"mnist-classifier {mnist_classifier.__version__}"


def test_a_cut_off_animation_or_multi_page_file_is_a_damaged_file_not_a_crash(mnist_data, tmp_path):
    """helper-91: counting the frames of a cut-off GIF or TIFF raised PIL's TypeError or IndexError."""
    reader = mnist_classifier.load(BUNDLED_ONNX)
    digits = [Image.fromarray(255 - mnist_data.test.images[i].numpy()) for i in range(3)]
    for name in ("pages.tiff", "anim.gif"):
        digits[0].save(tmp_path / name, save_all=True, append_images=digits[1:])
        whole = (tmp_path / name).read_bytes()
        for cut in range(len(whole) // 3, len(whole), max(1, len(whole) // 60)):
            with pytest.raises(ImageError, match=r"truncated or corrupt|holds \d frames|not an image file"):
                reader.predict(whole[:cut])


def test_a_pickled_reader_loads_the_same_file_from_another_folder(small_checkpoint, tmp_path, monkeypatch, mnist_data):
    import pickle

    (tmp_path / "here" / "models").mkdir(parents=True)
    (tmp_path / "elsewhere" / "models").mkdir(parents=True)
    shutil.copy(small_checkpoint, tmp_path / "here" / "models" / "simple_cnn_best.pth")
    monkeypatch.chdir(tmp_path / "here")
    reader = mnist_classifier.load("models/simple_cnn_best.pth")
    monkeypatch.chdir(tmp_path / "elsewhere")  # a folder without the file: helper-91's copy looked for it here
    copy = pickle.loads(pickle.dumps(reader))
    image = mnist_data.test.images[0].numpy()
    assert copy.predict(image) == reader.predict(image)


def test_every_note_of_load_names_the_callers_line(small_checkpoint, tmp_path):
    from mnist_classifier.export import export_onnx

    ours = torch.load(small_checkpoint, weights_only=True)
    torch.save({key: ours[key] for key in ("model_state_dict", "epoch", "accuracy")}, tmp_path / "old.pth")
    shutil.copy(small_checkpoint, tmp_path / "mine.pth")
    export_onnx(tmp_path / "mine.pth", data_dir=REPO_ROOT / "data")
    with open(tmp_path / "mine.pth", "ab") as changed:  # trained again since its export
        changed.write(b"\0")
    for model, says in ((tmp_path / "old.pth", "no stored calibration"), (tmp_path / "mine.onnx", "exported from an earlier")):
        with pytest.warns(UserWarning, match=says) as caught:
            mnist_classifier.load(model)
        assert [Path(warning.filename).name for warning in caught] == [Path(__file__).name], model
