"""The user's example store: labels and counts, undo, limits, corrupt lines, several writers, kill -9."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import pytest

from mnist_classifier.answer import decide
from mnist_classifier.errors import UserError
from mnist_classifier.preprocess import to_mnist
from mnist_classifier import user_examples
from mnist_classifier.user_examples import INDEX, JOURNAL, ExampleStore
MEND = "; mend or delete that line to use the rest without this warning"  # what every skipped line adds


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
    assert said == [f"warning: skipping line 1 of {tmp_path / INDEX}: its input image {gone.input} is missing{MEND}"]
    out, err = capfd.readouterr()
    assert "WARN" not in err  # no OpenCV log line printed from C++ before ours
    # helper-86: the counts the page and the API show are the drawings finetune can learn
    expected = [int(d == kept.label) for d in range(store.num_classes)]
    assert store.counts() == expected
    third = add(store, mnist_data, 2)
    assert third.total == 2 and store.undo().counts == expected


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
    with pytest.raises(UserError, match="no ink"):  # the API checked for ink; the Python call did not
        store.add(np.zeros((280, 280), np.uint8), np.zeros((28, 28), np.uint8), 3, "m")
    as_floats = to_mnist(drawing).image / 255.0  # stored as 0/1 bytes: a black image labelled 7
    with pytest.raises(UserError, match=r"^model_input must hold uint8 pixels \(0..255\), got float64"):
        store.add(drawing, as_floats, 3, "m")
    with pytest.raises(UserError, match=r"^drawing must hold uint8 pixels \(0..255\), got float64"):
        store.add(drawing / 255.0, to_mnist(drawing).image, 3, "m")
    with pytest.raises(UserError, match=r"^model_input must be the \(28, 28\) image to_mnist makes, got shape"):
        store.add(drawing, to_mnist(drawing).image[None], 3, "m")
    assert not (tmp_path / INDEX).exists()
    as_list = to_mnist(drawing).image.tolist()  # a list or a tensor of the right pixels is read as an array
    with pytest.raises(UserError, match="must hold uint8 pixels .* got int64"):
        store.add(drawing, as_list, 7, "m")
    saved = store.add(drawing, torch.from_numpy(to_mnist(drawing).image), np.int64(7), "m")  # a label from an array
    assert saved.example.label == 7 and type(store.examples()[0].label) is int


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


def valid_line(store: ExampleStore, mnist_data, index: int, **changes) -> str:
    """The JSON line of a real stored example (its PNGs on disk), with `changes` made to its fields."""
    fields = asdict(add(store, mnist_data, index).example)
    store.undo()  # the line is ours to write; the PNGs go with the undo, so put them back
    add_pngs(store, fields)
    fields.update(changes)
    return json.dumps({key: value for key, value in fields.items() if value is not MISSING})


def add_pngs(store: ExampleStore, fields: dict) -> None:
    import cv2

    ink = np.zeros((28, 28), np.uint8)
    ink[4:24, 12:16] = 255
    for name in (fields["drawing"], fields["input"]):
        (store.folder / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(store.folder / name), ink)


MISSING = object()


def test_undo_removes_only_the_last_example_and_keeps_unreadable_lines_byte_for_byte(tmp_path, mnist_data):
    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    unreadable = ['{"id": "typo", "label": "3", "drawing": "d.png"}', "{not json", '{"label": 12}',
                  "[1, 2]", '{"id": "half", "label": 7, "draw', '{"id": "crlf", "label": 1.0}\r']
    saved = []
    for index in range(29):  # 29 readable lines and 6 unreadable ones among them, the last after them all
        saved.append(add(store, mnist_data, index).example)
        if index % 5 == 4:
            with open(tmp_path / INDEX, "a", newline="") as file:
                file.write(unreadable[index // 5] + "\n")
    with open(tmp_path / INDEX, "a", newline="") as file:
        file.write(unreadable[-1] + "\n")
    before = (tmp_path / INDEX).read_bytes().split(b"\n")[:-1]
    assert len(before) == 35

    undone = store.undo()
    assert undone.example == saved[-1] and undone.total == 28
    last_readable = next(n for n in reversed(range(35)) if b'"id":"%s"' % saved[-1].id.encode() in before[n])
    assert (tmp_path / INDEX).read_bytes() == b"".join(line + b"\n" for n, line in enumerate(before)
                                                       if n != last_readable)
    assert not (tmp_path / undone.example.drawing).exists() and not (tmp_path / undone.example.input).exists()
    assert all((tmp_path / example.input).is_file() for example in saved[:-1])
    assert [example.id for example in store.examples()] == [example.id for example in saved[:-1]]
    assert len(said) == 6  # each unreadable line said once, however often the file is read

    store.undo()
    lines = (tmp_path / INDEX).read_text().splitlines()
    assert len(lines) == 33 and sum(line in unreadable or line + "\r" in unreadable for line in lines) == 6


@pytest.mark.parametrize("changes, problem", [
    ({"label": 12}, "label 12 is not a class 0..9"),
    ({"label": "3"}, 'label "3" is not a class 0..9: a label is a bare whole number, 3 not "3" or 3.0'),
    ({"label": 3.0}, 'label 3.0 is not a class 0..9: a label is a bare whole number, 3 not "3" or 3.0'),
    ({"input": MISSING}, 'missing the field "input"'),
    ({"input": MISSING, "bytes": MISSING}, 'missing the fields "input", "bytes"'),
    ({"colour": "blue"}, 'unknown field "colour"'),
    ({"drawing": "../../etc/passwd"}, 'drawing "../../etc/passwd" is not a path inside {folder}'),
])
def test_an_unreadable_line_is_warned_about_by_its_own_problem(tmp_path, mnist_data, changes, problem):
    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    line = valid_line(store, mnist_data, 0, **changes)
    add(store, mnist_data, 1)
    (tmp_path / INDEX).write_text(line + "\n" + (tmp_path / INDEX).read_text())
    images, labels = store.arrays()
    assert list(labels) == [int(mnist_data.test.labels[1])]
    assert said == [f"warning: skipping line 1 of {tmp_path / INDEX}: {problem.format(folder=tmp_path)}{MEND}"]


def test_invalid_json_and_a_missing_or_wrong_sized_image_say_so(tmp_path, mnist_data):
    import cv2

    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    gone, wrong_size, kept = (add(store, mnist_data, index).example for index in range(3))
    (tmp_path / gone.input).unlink()
    assert cv2.imwrite(str(tmp_path / wrong_size.input), np.zeros((30, 20), np.uint8))
    with open(tmp_path / INDEX, "a") as index:
        index.write('{"id": 1,}\n{"id": "cut sh\n')
    images, labels = store.arrays()
    assert list(labels) == [kept.label]
    where = f"warning: skipping line {{}} of {tmp_path / INDEX}: "
    assert said == [where.format(4) + f"invalid JSON (Expecting property name enclosed in double quotes at column 10){MEND}",
                    where.format(5) + f"invalid JSON (Unterminated string starting at column 8){MEND}",  # not "at at"
                    where.format(1) + f"its input image {gone.input} is missing{MEND}",
                    where.format(2) + f"its input image {wrong_size.input} is 20x30, not 28x28{MEND}"]


def test_an_index_with_no_readable_line_is_an_error_saying_so(tmp_path, mnist_data):
    from mnist_classifier.assessment import scored_split
    from mnist_classifier.user_split import read_examples

    said = []
    store = ExampleStore(tmp_path, warn=said.append)
    lines = [valid_line(store, mnist_data, 0, label="3"), "{not json", valid_line(store, mnist_data, 1, label=10)]
    (tmp_path / INDEX).write_text("\n".join(lines) + "\n\n")  # a blank line is no line to read
    says = f"none of the 3 lines of {tmp_path / INDEX} is readable (see the warnings above): mend or delete them"
    for read in (store.arrays, lambda: read_examples(tmp_path),
                 lambda: scored_split(tmp_path, "mnist", "user-digits", tmp_path)):
        with pytest.raises(UserError, match=re.escape(says)):
            read()
    assert len(said) == 3
    (tmp_path / INDEX).write_text(lines[0] + "\n")
    with pytest.raises(UserError, match=re.escape(f"the one line of {tmp_path / INDEX} is not readable")):
        ExampleStore(tmp_path, warn=said.append).arrays()
    (tmp_path / INDEX).write_text("\n")
    assert len(ExampleStore(tmp_path, warn=pytest.fail).arrays()[1]) == 0  # empty: none yet, not an error


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_an_index_an_editor_saved_as_utf16_is_one_error_naming_the_encoding(tmp_path, mnist_data, encoding):
    """helper-92: Notepad's "Unicode" gave a warning for each of 601 lines, then "none is readable"."""
    store = ExampleStore(tmp_path, warn=pytest.fail)
    add(store, mnist_data, 0), add(store, mnist_data, 1)
    text = (tmp_path / INDEX).read_text(encoding="utf-8")
    (tmp_path / INDEX).write_bytes(text.encode(encoding))
    says = (f"{tmp_path / INDEX} is not UTF-8 (an editor saved it as UTF-16 or UTF-32, 'Unicode'): save it again as "
            "UTF-8, which finetune, the demos and serve read")
    for read in (store.arrays, store.counts):  # finetune's reading, and serve's /api/examples/stats (a 507)
        with pytest.raises(UserError) as caught:
            read()
        assert str(caught.value) == says
    (tmp_path / INDEX).write_text(text, encoding="utf-8")  # saved again as UTF-8: both drawings back
    assert len(store.arrays()[1]) == 2
    (tmp_path / INDEX).write_bytes(text.encode() + bytes(64))  # a crash's zero-filled block: no encoding to name
    assert len(ExampleStore(tmp_path, warn=lambda _line: None).arrays()[1]) == 2


def test_naming_the_index_file_instead_of_its_folder_names_the_folder(tmp_path, mnist_data):
    from mnist_classifier.user_split import read_examples

    add(ExampleStore(tmp_path / "user", warn=pytest.fail), mnist_data, 0)
    index = tmp_path / "user" / INDEX
    says = f"{index} is a file: name the folder that holds it ({tmp_path / 'user'})"
    store = ExampleStore(index)
    for read in (store.examples, store.undo, lambda: add(store, mnist_data, 1), lambda: read_examples(index)):
        with pytest.raises(UserError, match=re.escape(says)):
            read()
    assert len(index.read_text().splitlines()) == 1


def test_another_file_named_as_the_folder_is_refused_up_front_without_pointing_at_its_folder(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# a project\n")
    with pytest.raises(UserError, match="README.md is a file, not a folder for labelled drawings") as refused:
        ExampleStore(readme).check_usable()
    assert f"({tmp_path})" not in str(refused.value)  # the repository root is no place for the drawings
    with pytest.raises(UserError, match="cannot be a folder: .*README.md is a file"):
        ExampleStore(readme / "user").check_usable()
    ExampleStore(tmp_path / "new" / "user").check_usable()  # a folder to be made: fine, and not made yet
    assert not (tmp_path / "new").exists() and readme.read_text() == "# a project\n"


def test_a_folder_where_the_index_belongs_is_named_as_such(tmp_path):
    """helper-63's sweep: "cannot read .../examples.jsonl (Is a directory): check its permissions"."""
    from mnist_classifier.user_split import read_examples

    (tmp_path / "user" / "examples.jsonl").mkdir(parents=True)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'user' / 'examples.jsonl'} is a folder, where the "
                                                  "index of labelled drawings belongs")):
        read_examples(tmp_path / "user")


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


def test_a_lost_inputs_folder_is_one_error_about_the_folder_not_a_warning_per_line(tmp_path, mnist_data):
    import shutil

    store = ExampleStore(tmp_path, warn=pytest.fail)
    for index in range(3):
        add(store, mnist_data, index)
    shutil.rmtree(tmp_path / "inputs")
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'inputs'))} is missing: the 28x28 images of "
                                        f"the 3 labelled drawings in {re.escape(str(tmp_path / INDEX))} were there"):
        store.arrays()


def test_an_index_saved_by_an_editor_with_a_byte_order_mark_loses_no_line(tmp_path, mnist_data):
    store = ExampleStore(tmp_path, warn=pytest.fail)
    ids = [add(store, mnist_data, index).example.id for index in range(2)]
    index = tmp_path / INDEX
    index.write_bytes(b"\xef\xbb\xbf" + index.read_bytes().replace(b"\n", b"\r\n"))
    assert [example.id for example in store.examples()] == ids


def test_leftovers_of_a_writer_killed_mid_add_are_removed_by_the_next_add(tmp_path, mnist_data):
    store = ExampleStore(tmp_path, warn=pytest.fail)
    kept = add(store, mnist_data, 0).example
    # What kill -9 leaves between write_atomically's temporary and rename, and between the images and the line:
    temporary = tmp_path / "drawings" / ".20261206-101010-0123abcd.png.x1y2.tmp"
    orphans = [tmp_path / folder / "20261206-101010-0123abcd.png" for folder in ("drawings", "inputs")]
    (tmp_path / JOURNAL).write_text("drawings/20261206-101010-0123abcd.png\ninputs/20261206-101010-0123abcd.png\n")
    for path in (temporary, *orphans):
        path.write_bytes(b"half")
    users_own = tmp_path / "drawings" / "my-notes.png"  # not a name add gives: not ours to remove
    users_own.write_bytes(b"mine")
    unjournalled = tmp_path / "inputs" / "20261206-101011-4567cdef.png"  # no line, no journal: the user's to mend
    unjournalled.write_bytes(b"kept")

    later = ExampleStore(tmp_path, warn=pytest.fail)
    added = add(later, mnist_data, 1).example
    assert not temporary.exists() and not any(path.exists() for path in orphans)
    assert not (tmp_path / JOURNAL).exists()
    assert users_own.read_bytes() == b"mine" and unjournalled.read_bytes() == b"kept"
    for example in (kept, added):
        assert (tmp_path / example.drawing).is_file() and (tmp_path / example.input).is_file()


def test_a_killed_writers_leftovers_go_even_when_another_writer_added_since(tmp_path, mnist_data):
    """Several server processes: the index changes after the dying add; its journal still says what it left."""
    long_lived = ExampleStore(tmp_path, warn=pytest.fail)
    add(long_lived, mnist_data, 0)
    dying = tmp_path / "inputs" / "20261206-101010-0123abcd.png"
    (tmp_path / JOURNAL).write_text("drawings/20261206-101010-0123abcd.png\ninputs/20261206-101010-0123abcd.png\n")
    dying.write_bytes(b"half")
    add(long_lived, mnist_data, 1)  # another worker, which has swept its temporary files already
    assert not dying.exists() and len(long_lived.examples()) == 2


@pytest.mark.parametrize("index_was", ["moved away", "re-saved as UTF-16"])
def test_drawings_an_unreadable_or_missing_index_does_not_name_are_kept_by_the_next_add(tmp_path, mnist_data,
                                                                                        index_was):
    store = ExampleStore(tmp_path, warn=lambda _line: None)
    earlier = [add(store, mnist_data, index).example for index in range(3)]
    index = tmp_path / INDEX
    if index_was == "moved away":
        index.rename(tmp_path / "examples.jsonl.bak")
    else:  # what an editor's "save as" may do: refused whole now, and nothing of the store touched
        index.write_bytes(index.read_text().encode("utf-16"))
        with pytest.raises(UserError, match="is not UTF-8"):
            add(ExampleStore(tmp_path, warn=lambda _line: None), mnist_data, 3)
        index.write_bytes(index.read_bytes().decode("utf-16").encode("utf-8"))
    added = add(ExampleStore(tmp_path, warn=lambda _line: None), mnist_data, 3).example
    for example in (*earlier, added):
        assert (tmp_path / example.drawing).is_file() and (tmp_path / example.input).is_file(), example.id


def test_a_store_it_may_not_write_says_so_rather_than_asking_for_space(tmp_path, mnist_data, monkeypatch):
    store = ExampleStore(tmp_path, warn=pytest.fail)
    add(store, mnist_data, 0)
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    # a read-only mount (the tests run as root, whom file modes do not stop): every write refused
    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(user_examples, "write_atomically", read_only)
    for act in (lambda: add(store, mnist_data, 1), store.undo):
        with pytest.raises(UserError, match=r"\(Read-only file system\): check that you may write to .*--user-data$"):
            act()
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before


def test_undo_of_a_line_copied_by_hand_keeps_the_images_the_copy_names(tmp_path, mnist_data):
    store = ExampleStore(tmp_path, warn=pytest.fail)
    example = add(store, mnist_data, 0).example
    index = tmp_path / INDEX
    index.write_bytes(index.read_bytes() * 2)
    assert store.undo().example == example
    assert [kept.id for kept in store.examples()] == [example.id]
    assert (tmp_path / example.drawing).is_file() and (tmp_path / example.input).is_file()
    images, labels = store.arrays()
    assert list(labels) == [example.label]
    assert store.undo().example == example and store.examples() == []
    assert not (tmp_path / example.drawing).exists() and not (tmp_path / example.input).exists()


def test_undo_of_a_planted_line_removes_no_file_add_did_not_make(tmp_path, mnist_data):
    """helper-78: undo unlinked whatever the last line named: the index itself, the lock, a file
    behind a symlink in the store. It removes only images named as `add` names them."""
    store = ExampleStore(tmp_path / "store", warn=lambda _line: None)
    first = add(store, mnist_data, 0).example
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "important.txt").write_text("keep me")
    (tmp_path / "store" / "link").symlink_to(outside)
    planted = asdict(first) | {"id": "zz", "drawing": "link/important.txt", "input": INDEX}
    with open(tmp_path / "store" / INDEX, "a") as index:
        index.write(json.dumps(planted) + "\n")
    assert store.undo().example.id == "zz"
    assert (outside / "important.txt").read_text() == "keep me"
    assert [kept.id for kept in store.examples()] == [first.id]
    assert (tmp_path / "store" / first.drawing).is_file()


def test_a_number_too_long_to_read_costs_its_line_only(tmp_path, mnist_data):
    """helper-78: an integer of 5,000 digits raised Python's ValueError through finetune, evaluate and serve."""
    warned = []
    store = ExampleStore(tmp_path, warn=warned.append)
    first = add(store, mnist_data, 0).example
    with open(tmp_path / INDEX, "a") as index:
        index.write('{"id": "x", "label": ' + "9" * 5000 + "}\n")
    assert [kept.id for kept in store.examples()] == [first.id]
    assert len(warned) == 1 and "a number too long to read" in warned[0] and len(warned[0]) < 300, warned
