"""The user's example store: labels and counts, undo, limits, corrupt lines, several writers, kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_classifier.answer import decide
from mnist_classifier.errors import UserError
from mnist_classifier.preprocess import to_mnist
from mnist_classifier.user_examples import INDEX, ExampleStore


def digit_drawing(mnist_data, index: int) -> np.ndarray:
    """A real MNIST digit blown up to a 280x280 sheet, as the demos hand it over."""
    import cv2

    return cv2.resize(mnist_data.test.images[index].numpy(), (280, 280), interpolation=cv2.INTER_LINEAR)


def add(store: ExampleStore, mnist_data, index: int):
    drawing = digit_drawing(mnist_data, index)
    label = int(mnist_data.test.labels[index])
    model_input = to_mnist(drawing).image
    probabilities = np.full(10, 0.01)
    probabilities[label] = 0.91
    return store.add(drawing, model_input, label, "simple_cnn", decide(probabilities, 5.0, 1.0, model_input))


def test_add_counts_undo_and_arrays(tmp_path, mnist_data):
    store = ExampleStore(tmp_path / "user", warn=pytest.fail)
    saved = [add(store, mnist_data, index) for index in range(5)]
    labels = [int(mnist_data.test.labels[index]) for index in range(5)]
    assert saved[-1].total == 5 and saved[-1].counts == [labels.count(d) for d in range(10)]
    first = saved[0].example
    assert first.label == labels[0] and first.verdict == "digit" and first.answer == labels[0]
    assert (tmp_path / "user" / first.drawing).stat().st_size > 0
    images, stored_labels = store.arrays()
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8 and list(stored_labels) == labels
    assert np.array_equal(images[0], to_mnist(digit_drawing(mnist_data, 0)).image)

    undone = store.undo()
    assert undone.example.id == saved[-1].example.id and undone.total == 4
    assert not (tmp_path / "user" / undone.example.drawing).exists()
    assert [example.id for example in store.examples()] == [s.example.id for s in saved[:4]]


def test_an_example_whose_image_is_gone_is_skipped_with_our_warning_only(tmp_path, mnist_data, capfd):
    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    gone, kept = add(store, mnist_data, 0).example, add(store, mnist_data, 1).example
    (tmp_path / gone.input).unlink()
    images, labels = store.arrays()
    assert len(images) == 1 and list(labels) == [kept.label]
    assert said == [f"warning: skipping example {gone.id}: {gone.input} is missing or not 28x28"]
    out, err = capfd.readouterr()
    assert "WARN" not in err  # no OpenCV log line printed from C++ before ours


def test_undo_on_an_empty_store_is_none(tmp_path):
    assert ExampleStore(tmp_path / "nothing").undo() is None


def test_bad_label_and_empty_drawing_are_refused(tmp_path, mnist_data):
    store = ExampleStore(tmp_path)
    drawing = digit_drawing(mnist_data, 0)
    for label in (10, -1, True, 3.0):
        with pytest.raises(UserError, match="label must be a whole number 0..9"):
            store.add(drawing, to_mnist(drawing).image, label, "m")
    with pytest.raises(UserError, match="no ink"):
        store.add(np.zeros((280, 280), np.uint8), None, 3, "m")
    assert not (tmp_path / INDEX).exists()


def test_limits_on_count_and_bytes_name_themselves(tmp_path, mnist_data):
    store = ExampleStore(tmp_path / "a", max_examples=2)
    add(store, mnist_data, 0), add(store, mnist_data, 1)
    with pytest.raises(UserError, match="already holds 2 examples, the limit"):
        add(store, mnist_data, 2)
    tiny = ExampleStore(tmp_path / "b", max_bytes=1)
    with pytest.raises(UserError, match="MB limit"):
        add(tiny, mnist_data, 0)
    assert len(store.examples()) == 2 and tiny.examples() == []


def test_a_corrupt_line_is_skipped_with_a_warning_not_the_set(tmp_path, mnist_data):
    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    add(store, mnist_data, 0)
    with open(tmp_path / INDEX, "a") as index:
        index.write("{not json\n")
        index.write(json.dumps({"id": "x", "label": 3, "drawing": "../../etc/passwd", "input": "i.png",
                                "time": "t", "model": "m", "verdict": None, "answer": None,
                                "confidence": None, "bytes": 1}) + "\n")
        index.write('{"id": "half", "label": 7, "draw')  # a writer killed mid-line: no newline
    add(store, mnist_data, 1)  # must not glue itself onto the half line
    assert [example.label for example in store.examples()] == [int(mnist_data.test.labels[i]) for i in (0, 1)]
    assert len(said) == 3 and all(line.startswith("warning: skipping line") for line in said)
    store.examples()
    assert len(said) == 3  # each bad line is reported once per store, not on every read


WRITER = """
import sys, numpy as np
from mnist_classifier.user_examples import ExampleStore
store = ExampleStore(sys.argv[1], warn=lambda line: None)
ink = np.zeros((280, 280), np.uint8); ink[60:220, 120:160] = 255
model_input = np.zeros((28, 28), np.uint8); model_input[4:24, 12:16] = 255
print("ready", flush=True)
for n in range(int(sys.argv[2])):
    store.add(ink, model_input, n % 10, "writer")
"""


def test_several_processes_writing_at_once_lose_nothing(tmp_path):
    folder = tmp_path / "shared"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), "20"], stdout=subprocess.PIPE)
               for _ in range(4)]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    store = ExampleStore(folder, warn=pytest.fail)
    examples = store.examples()
    assert len(examples) == 80 and len({example.id for example in examples}) == 80
    assert store.counts() == [8] * 10
    assert len((folder / INDEX).read_text().splitlines()) == 80


def test_kill_9_while_writing_leaves_a_readable_set(tmp_path):
    folder = tmp_path / "killed"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), "100000"], stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 60
    while not (folder / INDEX).exists() or len((folder / INDEX).read_bytes().splitlines()) < 20:
        assert time.monotonic() < deadline, "the writer saved nothing"
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    said = []
    store = ExampleStore(folder, warn=said.append)
    images, labels = store.arrays()
    assert len(labels) >= 20 and len(said) <= 1  # at most the one line the kill cut
    for example in store.examples():
        assert (folder / example.drawing).is_file() and (folder / example.input).is_file()
    store.add(images[0], images[0], 4, "after")  # and the set takes new examples
    assert store.examples()[-1].label == 4
