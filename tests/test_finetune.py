"""`finetune` learns a writer's drawings without forgetting MNIST; refuses too few; `evaluate --dataset user-digits`.

The writer is benchmarks/user_writer.py's (thick even pen, backward slant, a slashed 0, a
flagged 1 with a foot, ...): real drawings through the real preprocessing, saved the way the
demos save them, and a real SimpleCNN (conftest's small_checkpoint) fine-tuned on them.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_classifier.checkpoint import load_checkpoint, weights_sha256
from mnist_classifier.cli import main
from mnist_classifier.errors import UserError
from mnist_classifier.finetune import LEARNING_RATE, learning_rate_schedule
from mnist_classifier.finetune_paths import base_checkpoint, output_path
from mnist_classifier.user_split import LEARNT_KEY, digests, hold_back, read_examples
from mnist_classifier.user_examples import INDEX, ExampleStore

from .conftest import DATA_DIR, REPO_ROOT

EPOCHS = 20  # 60 steps of 32 + 32 drawings: enough to learn this writer, in 40% less time than the default


def load_writer():
    """benchmarks/user_writer.py (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("user_writer", REPO_ROOT / "benchmarks" / "user_writer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mnist-classifier ARGV`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def writer_folder(tmp_path_factory) -> Path:
    """A data dir whose user/ holds the writer's 10 drawings per digit, and one line a crash cut short."""
    data_dir = tmp_path_factory.mktemp("writer")
    load_writer().fill_store(data_dir / "user")
    with open(data_dir / "user" / INDEX, "a") as index:
        index.write('{"id": "cut-short", "label": 3, "draw\n')
    return data_dir


@pytest.fixture(scope="module")
def tuned(writer_folder, small_checkpoint, tmp_path_factory):
    """(exit status, stdout, stderr, new checkpoint, base's SHA-256 before) of one real finetune run."""
    out = tmp_path_factory.mktemp("tuned") / "simple_cnn_user_best.pth"
    before = sha256(small_checkpoint)
    status, stdout, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                     str(writer_folder / "user"), "--data-dir", str(DATA_DIR), "--out", str(out),
                                     "--epochs", str(EPOCHS))
    return status, stdout, stderr, out, before


def test_finetune_learns_the_writer_and_leaves_the_original_alone(tuned, small_checkpoint):
    status, stdout, stderr, out, base_sha = tuned
    assert status == 0, stderr
    record = load_checkpoint(out)["finetune"]
    assert record["user_examples"] == 100 and record["held_back"] == 20 and record["trained_on"] == 80
    assert record["held_back_accuracy_after"] >= record["held_back_accuracy_before"] + 0.10
    assert record["held_back_accuracy_after"] >= 0.9
    assert record["mnist_test_accuracy_before"] - record["mnist_test_accuracy_after"] <= 0.005
    assert record["base_checkpoint"] == str(small_checkpoint) and record["base_sha256"] == base_sha
    assert sha256(small_checkpoint) == base_sha  # the original, byte for byte
    assert f"{record['held_back_accuracy_after']:.2%}" in stdout and "MNIST test (10,000 images)" in stdout
    assert record["base_weights_sha256"] == weights_sha256(load_checkpoint(small_checkpoint))
    # written elsewhere than models/simple_cnn_user_best.pth: nothing picks it up by itself
    assert stdout.rstrip().endswith(f"answer with it when named: --checkpoint {out}")


def test_every_number_of_steps_has_a_schedule_and_more_steps_teach_more():
    """10 steps made OneCycleLR divide by a warm-up of zero steps; 1 step ran at 1/25 of the rate,
    and 4 steps taught less than 3 (helper-53)."""
    def rates(total):
        weights = torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.AdamW([weights], lr=LEARNING_RATE)
        schedule, taken = learning_rate_schedule(optimizer, total), []
        for _ in range(total):
            taken.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return taken

    sums = [sum(rates(total)) for total in range(1, 25)]
    assert all(later > earlier for earlier, later in zip(sums, sums[1:])), sums
    assert max(rates(102)) == pytest.approx(LEARNING_RATE, rel=1e-3)  # the default run: the whole cycle


def test_the_tuned_checkpoint_is_calibrated_and_not_a_resume_point(tuned, tmp_path):
    payload = load_checkpoint(tuned[3])
    assert 0 < payload["temperature"] < 5 and payload["reject_threshold"] is not None
    assert "optimizer_state_dict" not in payload and payload["dataset"] == "mnist"
    status, _, stderr = run_cli("train", "--resume", str(tuned[3]), "--save-dir", str(tmp_path))
    assert status == 2 and "not a resume point" in stderr
    # under a resume point's name (copied over it), it does not send the user to that same file
    shutil.copy(tuned[3], tmp_path / "simple_cnn_last.pth")
    status, _, stderr = run_cli("train", "--resume", str(tmp_path / "simple_cnn_last.pth"), "--save-dir", str(tmp_path))
    assert status == 2 and "without the training state train saves there" in stderr and "_last.pth file" not in stderr



def test_tuning_a_tuned_model_again_never_measures_on_what_it_learnt(tuned, writer_folder, tmp_path):
    """helper-69: tuned again with a few new drawings, a fresh hold-back measured the second round
    partly on drawings the first had learnt (printed 100% -> 100%)."""
    folder = tmp_path / "user"
    shutil.copytree(writer_folder / "user", folder)
    load_writer().fill_store(folder, per_digit=2, seed=7)  # 20 new drawings
    first = load_checkpoint(tuned[3])["finetune"][LEARNT_KEY]
    status, stdout, _ = run_cli("finetune", "--checkpoint", str(tuned[3]), "--user-data", str(folder),
                                "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "again.pth"), "--epochs", "1")
    assert status == 0, stdout
    second = load_checkpoint(tmp_path / "again.pth")["finetune"][LEARNT_KEY]
    assert set(first) < set(second)  # the lineage: the first round's drawings and this round's
    everything = digests(read_examples(folder).images.numpy())
    never_learnt = [digest for digest in everything if digest not in set(second)]
    held = int(stdout.split("holding back ")[1].split()[0])
    assert held == len(never_learnt) > 0 and not set(never_learnt) & set(first)
    assert f"(not one of the {sum(digest in set(first) for digest in everything)} it learnt before)" in stdout


def test_hold_back_never_holds_what_the_base_learnt():
    labels = np.repeat(np.arange(10), 10)
    learnt = np.zeros(100, bool)
    learnt[::2] = True  # half of every digit's drawings learnt in an earlier round
    for seed in range(4):
        train, held = hold_back(labels, seed, learnt=learnt)
        assert not learnt[held].any() and learnt[train].sum() == 50
        assert np.bincount(labels[held], minlength=10).tolist() == [1] * 10  # a fifth of the five new ones
    assert len(hold_back(labels, 0, learnt=np.ones(100, bool))[1]) == 0


def test_an_out_that_finetune_did_not_make_is_never_replaced(tuned, small_checkpoint, writer_folder, tmp_path):
    """helper-69: `--out models/simple_cnn_last.pth` replaced train's resume point with weights alone."""
    payload = load_checkpoint(small_checkpoint)
    resume_point = tmp_path / "simple_cnn_last.pth"
    torch.save({**payload, "optimizer_state_dict": {"state": {}, "param_groups": []}}, resume_point)
    notes = tmp_path / "notes.pth"
    notes.write_text("not a checkpoint")
    for existing, what in ((resume_point, "a checkpoint `train` saved"), (notes, "not a checkpoint finetune made")):
        before = sha256(existing)
        status, _, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                    str(writer_folder / "user"), "--out", str(existing))
        assert status == 2 and f"--out {existing} exists and is {what}" in stderr and sha256(existing) == before
    assert output_path(tuned[3], {"model_name": "simple_cnn"}, small_checkpoint) == tuned[3]  # its own: replaced


def test_its_default_file_is_remade_when_damaged_but_never_replaces_a_trained_model(small_checkpoint, tuned,
                                                                                    tmp_path, monkeypatch):
    """helper-70: a cut-short models/simple_cnn_user_best.pth (predict: "retrain it") was refused as an
    --out the user never typed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    default = Path("models/simple_cnn_user_best.pth")
    default.write_bytes(tuned[3].read_bytes()[:100_000])
    assert output_path(None, {"model_name": "simple_cnn"}, small_checkpoint) == default
    shutil.copy(small_checkpoint, default)  # a trained model copied there: kept, and said without "--out"
    with pytest.raises(UserError, match=r"^models/simple_cnn_user_best.pth, where finetune writes by default, exists "
                                        r"and is a checkpoint `train` saved: .* name another file with --out$"):
        output_path(None, {"model_name": "simple_cnn"}, small_checkpoint)
    # helper-73: readable but no checkpoint of ours (bare weights) is not "cut short": kept too
    torch.save(load_checkpoint(small_checkpoint)["model_state_dict"], default)
    with pytest.raises(UserError, match=r"exists and is not a checkpoint finetune made"):
        output_path(None, {"model_name": "simple_cnn"}, small_checkpoint)


def test_a_damaged_list_of_learnt_drawings_keeps_what_it_can_read():
    """helper-70: one stray number threw the whole list away, and the note blamed an earlier version."""
    from mnist_classifier.user_split import learnt_list

    assert learnt_list(None) == ([], None)  # a trained model: learnt none of them
    assert learnt_list({"seed": 0}) == ([], "missing")  # tuned before the list was kept
    assert learnt_list({LEARNT_KEY: ["ab12", 7, "cd34"]}) == (["ab12", "cd34"], "damaged")
    assert learnt_list({LEARNT_KEY: "ab12"}) == ([], "damaged") and learnt_list([1]) == ([], "damaged")
    assert learnt_list({LEARNT_KEY: ["ab12"]}) == (["ab12"], None)


def test_the_tuned_model_says_so_however_it_is_loaded(tuned, small_checkpoint, tmp_path):
    """helper-69: load() of the tuned file by name said tuned=False (only the default pick said True)."""
    import mnist_classifier

    onnx = tmp_path / "tuned.onnx"
    assert main(["export", "--checkpoint", str(tuned[3]), "--out", str(onnx), "--data-dir", str(DATA_DIR)]) == 0
    assert mnist_classifier.load(tuned[3]).tuned and mnist_classifier.load(onnx).tuned
    assert not mnist_classifier.load(small_checkpoint).tuned


def test_the_tuned_threshold_lets_even_pen_digits_through_as_train_does(tuned):
    """Like `train`'s, the refit threshold passes 99.5% of the validation digits as MNIST wrote
    them and as re-drawn with an even pen (fitted on the written ones alone, it let fewer than
    99% of the benchmark's pen-drawn test digits through after fine-tuning the `make train` model)."""
    from mnist_classifier.calibration import choose_threshold, digit_scores
    from mnist_classifier.checkpoint import load_model, stored_normalization
    from mnist_classifier.data import load_data
    from mnist_classifier.evaluation import compute_logits, redrawn_validation_logits

    model, payload = load_model(tuned[3])
    val, norm = load_data(DATA_DIR, log=lambda _line: None).val, stored_normalization(payload)
    temperature, threshold = payload["temperature"], payload["reject_threshold"]
    scores = [digit_scores(logits.numpy(), temperature)
              for logits in (compute_logits(model, val, norm), redrawn_validation_logits(model, val, norm))]
    assert threshold == pytest.approx(min(choose_threshold(each) for each in scores))
    assert all((each >= threshold).mean() >= 0.995 for each in scores)


def test_it_says_how_often_non_digits_are_refused_before_and_after(tuned, small_checkpoint):
    from mnist_classifier.calibration import digit_scores
    from mnist_classifier.checkpoint import load_model, stored_normalization
    from mnist_classifier.data import load_data
    from mnist_classifier.evaluation import compute_logits
    from mnist_classifier.data import Split
    from mnist_classifier.honesty import held_out_mix

    record, stdout = load_checkpoint(tuned[3])["finetune"], tuned[1]
    images = held_out_mix(load_data(DATA_DIR, log=lambda _line: None).test, 1000)
    non_digits = Split(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long))
    for path, key in ((small_checkpoint, "non_digits_refused_before"), (tuned[3], "non_digits_refused_after")):
        model, payload = load_model(path)
        scores = digit_scores(compute_logits(model, non_digits, stored_normalization(payload)).numpy(),
                              payload["temperature"])
        assert record[key] == pytest.approx((scores < payload["reject_threshold"]).mean())
        assert f"{record[key]:.1%}" in stdout
    assert "generated non-digits refused (1,000)" in stdout
    dropped = record["non_digits_refused_before"] - record["non_digits_refused_after"]
    assert ("points fewer generated non-digits" in stdout) == (dropped >= 0.01)


def test_a_corrupt_line_is_skipped_with_a_warning(tuned, writer_folder):
    stderr = tuned[2]
    assert f"warning: skipping line 101 of {writer_folder / 'user' / INDEX}" in stderr
    assert load_checkpoint(tuned[3])["finetune"]["user_examples"] == 100  # the other lines all count


@pytest.mark.parametrize("where", ["--data-dir", "--user-data"])
def test_evaluate_scores_the_user_digits(tuned, writer_folder, tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)  # the default report folder, reports/<model>..., lands here
    folder = writer_folder if where == "--data-dir" else writer_folder / "user"  # <data-dir>/user, or named
    status, stdout, stderr = run_cli("evaluate", "--dataset", "user-digits", "--checkpoint", str(tuned[3]),
                                     where, str(folder))
    assert status == 0, stderr
    # named apart from the base model's reports/simple_cnn/, which it must not replace
    metrics = json.loads((tmp_path / "reports" / "simple_cnn_user_user-digits" / "metrics.json").read_text())
    assert metrics["dataset"] == "user-digits" and metrics["test_size"] == 100
    assert metrics["metrics"]["accuracy"] >= 0.9  # 80 of them learnt, 20 held back
    assert "on 100 user-digits images" in stdout
    # what the demos would show: the right digit answered, a right guess under "not a digit?" not counted
    answered = metrics["answered"]
    assert answered["images"] == 100 and 0 < answered["right_digit_answered"] <= metrics["metrics"]["accuracy"]
    assert answered["right_digit_answered"] + answered["refused"] >= metrics["metrics"]["accuracy"] - 1e-9
    assert f"answered with the right digit: {answered['right_digit_answered']:.2%} of 100" in stdout
    page = (tmp_path / "reports" / "simple_cnn_user_user-digits" / "report.html").read_text()
    assert "on your labelled drawings (user-digits)</h1>" in page and "100 user-digits images &middot;" in page
    assert "test set</h1>" not in page and "100 test images" not in page and "test index" not in page
    # a fine-tuned model's report says so: its epochs and curves are the base's training
    assert metrics["fine_tuned"]["trained_on"] == 80 and metrics["fine_tuned"]["base_checkpoint"]
    assert "fine-tuned from " in page and "on 80 of your drawings" in page and "of the base's training" in page



def test_the_bundled_models_report_never_replaces_the_trained_ones(writer_folder, tmp_path, monkeypatch):
    """helper-68: `evaluate --checkpoint bundled` to compare wrote over reports/simple_cnn/, the trained model's."""
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run_cli("evaluate", "--dataset", "user-digits", "--checkpoint", "bundled",
                                "--user-data", str(writer_folder / "user"))
    assert status == 0, stderr
    assert [path.name for path in (tmp_path / "reports").iterdir()] == ["simple_cnn_bundled_user-digits"]


def test_replacing_the_report_of_another_checkpoint_says_so(small_checkpoint, writer_folder, tmp_path, monkeypatch):
    """helper-73: a quick model (models/quick/...) evaluated replaced the trained model's report without a word."""
    monkeypatch.chdir(tmp_path)
    for folder in ("models", "models/quick"):
        Path(folder).mkdir()
        shutil.copy(small_checkpoint, folder)
    said = []
    for checkpoint in ("models/simple_cnn_best.pth", "models/simple_cnn_best.pth", "models/quick/simple_cnn_best.pth"):
        status, stdout, stderr = run_cli("evaluate", "--dataset", "user-digits", "--checkpoint", checkpoint,
                                         "--user-data", str(writer_folder / "user"))
        assert status == 0, stderr
        said.append([line for line in stdout.splitlines() if line.startswith("note: this replaces")])
    assert said == [[], [], ["note: this replaces reports/simple_cnn_user-digits, the report of "
                             "models/simple_cnn_best.pth; --out DIR keeps both"]]


def test_too_few_examples_say_how_many_more(small_checkpoint, tmp_path):
    store = ExampleStore(tmp_path / "user", warn=pytest.fail)
    drawings, inputs, _ = load_writer().writer_digits(2, seed=5)  # digit d's are at 2d and 2d + 1
    kept = [(digit, 2 * digit + copy) for digit in (0, 1, 2, 4, 6, 7, 8, 9) for copy in range(1 + (digit >= 6))]
    for digit, index in kept:  # 12 drawings, no 3 and no 5
        store.add(drawings[index], inputs[index], digit, model="test")
    status, stdout, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                     str(tmp_path / "user"), "--out", str(tmp_path / "out.pth"))
    assert status == 2 and stdout == ""
    assert stderr == (f"error: need at least 20 labelled drawings with every digit 0-9 among them: you have 12 in "
                      f"{tmp_path / 'user'}; add 8 more, including 3, 5 (none yet)\n")
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("folder, says", [("missing", "does not exist"), ("empty", "has none yet"),
                                          ("index lost", "lists none, yet {inputs} holds 3 drawings: restore "
                                                         "examples.jsonl (their labels are only in it)")])
def test_no_examples_at_all_is_one_line(small_checkpoint, tmp_path, folder, says):
    """helper-92: drawings whose index was lost (moved, deleted) were "none yet": draw them all again."""
    (tmp_path / "empty").mkdir()
    store = ExampleStore(tmp_path / "index lost", warn=pytest.fail)
    drawings, inputs, _ = load_writer().writer_digits(1, seed=5)
    for digit in range(3):
        store.add(drawings[digit], inputs[digit], digit, model="test")
    (tmp_path / "index lost" / INDEX).unlink()
    says = says.format(inputs=tmp_path / "index lost" / "inputs")
    status, _, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                str(tmp_path / folder), "--out", str(tmp_path / "out.pth"))
    assert status == 2 and says in stderr and len(stderr.strip().splitlines()) == 1


def test_it_never_overwrites_the_model_it_starts_from(small_checkpoint, writer_folder):
    status, _, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                str(writer_folder / "user"), "--out", str(small_checkpoint))
    assert status == 2 and "never overwrites it" in stderr


def test_a_negative_seed_is_one_line(small_checkpoint, writer_folder):
    status, _, stderr = run_cli("finetune", "--checkpoint", str(small_checkpoint), "--user-data",
                                str(writer_folder / "user"), "--seed", "-1")
    assert status == 2 and stderr == "error: --seed must be >= 0, got -1\n"


def test_ctrl_c_exits_130_and_writes_nothing(small_checkpoint, writer_folder, tmp_path):
    out = tmp_path / "tuned.pth"
    process = subprocess.Popen([sys.executable, "-m", "mnist_classifier", "finetune", "--checkpoint",
                                str(small_checkpoint), "--user-data", str(writer_folder / "user"),
                                "--data-dir", str(DATA_DIR), "--out", str(out)],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("fine-tuning ")  # its work has begun
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err
    assert err.strip().endswith("interrupted: no fine-tuned model was written; the original is unchanged")
    assert list(tmp_path.iterdir()) == []  # no model, no temporary file


def test_tuning_another_base_never_replaces_the_tuned_model_that_answers(tuned, small_checkpoint, writer_folder,
                                                                        monkeypatch, tmp_path, capsys):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT, choose_model
    from mnist_classifier.finetune_paths import keep_the_answering_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, "models/simple_cnn_best.pth")
    shutil.copy(tuned[3], "models/simple_cnn_user_best.pth")  # tuned from those very bytes: it answers
    assert choose_model(None).tuned
    before = sha256(Path("models/simple_cnn_user_best.pth"))
    status = main(["finetune", "--checkpoint", "bundled", "--user-data", str(writer_folder / "user"),
                   "--data-dir", str(DATA_DIR)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: models/simple_cnn_user_best.pth is the fine-tuned model that "
                                          "answers now") and "--out models/simple_cnn_user_best.pth" not in err
    assert "name the new one with --out" in err and sha256(Path("models/simple_cnn_user_best.pth")) == before
    # helper-92: naming the answering model's own file with --out was no way round it
    status = main(["finetune", "--checkpoint", "bundled", "--out", "models/simple_cnn_user_best.pth",
                   "--user-data", str(writer_folder / "user"), "--data-dir", str(DATA_DIR)])
    assert status == 2 and "is the fine-tuned model that answers now" in capsys.readouterr().err
    assert sha256(Path("models/simple_cnn_user_best.pth")) == before
    # tuning the answering model's own base again replaces it, as after a new `train`
    keep_the_answering_model(Path("models/simple_cnn_user_best.pth"), Path("models/simple_cnn_best.pth"), False)
    with pytest.raises(UserError, match="the fine-tuned model that answers now"):
        keep_the_answering_model(Path("models/simple_cnn_user_best.pth"), BUNDLED_CHECKPOINT, True)


def test_a_damaged_tuned_model_names_finetune_as_the_fix(tuned, small_checkpoint, monkeypatch, tmp_path, capsys):
    """helper-92: every command and load() said "retrain or restore it", and `train` left the damaged file
    answering; `finetune` (which replaces it) went unnamed."""
    from mnist_classifier import load
    from mnist_classifier.bundled import choose_model
    from mnist_classifier.errors import CheckpointError
    from mnist_classifier.finetune_paths import keep_the_answering_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, "models/simple_cnn_best.pth")
    Path("models/simple_cnn_user_best.pth").write_bytes(tuned[3].read_bytes()[:100_000])
    said = ("models/simple_cnn_user_best.pth, the model `finetune` made from your drawings, cannot be loaded (damaged, "
            "or not a checkpoint): run `mnist-classifier finetune` to make it again, or delete it to answer with the "
            "model it was tuned from")
    assert main(["predict", str(REPO_ROOT / "examples" / "seven.png")]) == 2
    assert capsys.readouterr().err == f"error: {said}\n"
    with pytest.raises(CheckpointError) as caught:
        load()
    assert str(caught.value) == said
    assert choose_model(None, tuned=False).path == Path("models/simple_cnn_best.pth")  # evaluate, export, finetune
    from mnist_classifier.cli import trained_model

    assert trained_model(None, "exported") == Path("models/simple_cnn_best.pth")  # not stopped by the damaged one
    assert capsys.readouterr().err == ""
    # finetune, the fix named, may replace it whatever it tunes
    keep_the_answering_model(Path("models/simple_cnn_user_best.pth"), Path("models/simple_cnn_best.pth"), False)
    keep_the_answering_model(Path("models/simple_cnn_user_best.pth"), tmp_path / "other.pth", False)


def test_export_says_when_the_model_that_answers_is_the_fine_tuned_one(tuned, small_checkpoint, monkeypatch,
                                                                       tmp_path, capsys):
    """helper-59: `export` after `finetune` wrote the original model, and nothing said that predict
    and serve answer with the tuned one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copy(small_checkpoint, "models/simple_cnn_best.pth")
    shutil.copy(tuned[3], "models/simple_cnn_user_best.pth")
    assert main(["export", "--out", str(tmp_path / "base.onnx"), "--data-dir", str(DATA_DIR)]) == 0
    assert ("note: exporting models/simple_cnn_best.pth, not models/simple_cnn_user_best.pth, the model fine-tuned "
            "on your drawings that predict, demo and serve answer with; --checkpoint models/simple_cnn_user_best.pth "
            "for that one") in capsys.readouterr().err


def test_without_a_trained_model_it_starts_from_the_bundled_one(monkeypatch, tmp_path):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT

    monkeypatch.chdir(tmp_path)  # no models/simple_cnn_best.pth here
    assert base_checkpoint(None) == (BUNDLED_CHECKPOINT, True)
    assert base_checkpoint("bundled") == (BUNDLED_CHECKPOINT, True)  # --checkpoint bundled, the same
    target = output_path(None, {"model_name": "simple_cnn"}, BUNDLED_CHECKPOINT)
    assert target == Path("models") / "simple_cnn_user_best.pth"


def test_hold_back_is_stratified_seeded_and_keeps_one_to_learn():
    labels = np.repeat(np.arange(10), [10] * 8 + [2, 1])  # eight digits drawn 10 times, an 8 twice, a 9 once
    train, held = hold_back(labels, seed=0)
    assert np.bincount(labels[held], minlength=10).tolist() == [2] * 8 + [1, 0]
    assert sorted(np.concatenate((train, held))) == list(range(len(labels)))
    assert np.array_equal(held, hold_back(labels, seed=0)[1])
    assert not np.array_equal(held, hold_back(labels, seed=1)[1])


def test_a_drawing_saved_twice_is_never_both_learnt_and_held_back(mnist_data):
    digits, labels = mnist_data.test.images[:60].numpy(), mnist_data.test.labels[:60].numpy()
    images, labels = np.concatenate((digits, digits)), np.concatenate((labels, labels))  # every drawing twice
    for seed in range(5):
        train, held = hold_back(labels, seed, images=images)
        assert len(held) > 0 and sorted(np.concatenate((train, held))) == list(range(len(labels)))
        learnt = {images[index].tobytes() for index in train}
        assert not any(images[index].tobytes() in learnt for index in held), seed
    # a fifth, never more: four drawings and one saved six times hold back two, not the six copies
    sevens = np.concatenate((digits[:4], np.repeat(digits[4:5], 6, axis=0)))
    for seed in range(8):
        assert len(hold_back(np.full(10, 7), seed, images=sevens)[1]) <= 2, seed
    # a 5 saved twice and drawn once more: the other drawing is held back, whatever the seed
    fives = np.concatenate((np.repeat(digits[:1], 2, axis=0), digits[1:2]))
    for seed in range(8):
        assert hold_back(np.full(3, 5), seed, images=fives)[1].tolist() == [2], seed
    # each digit drawn once and saved twice: nothing can be held back without its copy being learnt
    assert len(hold_back(np.arange(20) % 10, 0, images=np.concatenate((digits[:10], digits[:10])))[1]) == 0


def test_a_drawing_saved_twice_and_held_back_is_measured_once(mnist_data):
    """helper-86: 11 held back and scored where the user had drawn 10 (one pair of copies)."""
    from mnist_classifier.user_split import distinct

    digits = mnist_data.test.images[:12].numpy()
    images = np.concatenate((digits, digits[:3]))  # drawings 0, 1 and 2 saved twice: lines 12, 13, 14
    assert distinct(np.array([14, 2, 5, 12, 0, 7]), images).tolist() == [14, 5, 12, 7]
    assert distinct(np.arange(15), images).tolist() == list(range(12))
    assert distinct(np.array([], dtype=np.int64), images).tolist() == []


def test_the_held_back_score_counts_a_refused_drawing_as_not_answered(small_checkpoint, mnist_data):
    from mnist_classifier.calibration import Calibration
    from mnist_classifier.checkpoint import load_model, stored_normalization
    from mnist_classifier.data import Split
    from mnist_classifier.finetune import measure

    model, payload = load_model(small_checkpoint)
    held, test = (Split(mnist_data.test.images[:200], mnist_data.test.labels[:200]),
                  Split(mnist_data.test.images[200:400], mnist_data.test.labels[200:400]))
    norm, stored = stored_normalization(payload), Calibration.from_payload(payload)
    answering = measure(model, held, test, norm, test, stored)
    refusing_all = measure(model, held, test, norm, test,
                           Calibration(stored.temperature, float("inf"), fitted=True))
    assert answering.held_back >= 0.9 and refusing_all.held_back == 0.0 and refusing_all.refused == 1.0


def test_user_digits_cannot_be_fetched_or_trained_on(tmp_path):
    for argv in (["data", "--dataset", "user-digits"],
                 ["train", "--dataset", "user-digits", "--save-dir", str(tmp_path), "--log-dir", str(tmp_path)]):
        status, _, stderr = run_cli(*argv)
        assert status == 2 and "evaluate --dataset user-digits" in stderr and "finetune" in stderr


@pytest.mark.parametrize("out, says", [("mine.onnx", "is not a .pth file name: finetune writes"),
                                       ("folder", "is a folder: name a file in it, e.g. --out "),
                                       ("mine", "is not a .pth file name: finetune writes"),
                                       ("folder.pth", "is a folder: name a file in it, e.g. --out ")])
def test_an_out_that_is_not_a_pth_file_is_refused_before_any_work(tmp_path, out, says):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(UserError, match=f"^--out {tmp_path / out} {says}"):
        output_path(tmp_path / out, {"model_name": "simple_cnn"}, BUNDLED_CHECKPOINT)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder", "folder.pth"]


def test_a_base_with_damaged_calibration_is_measured_uncalibrated_and_said_so(small_checkpoint):
    """helper-63's sweep: finetune refused such a base, advising `calibrate`, though it calibrates afresh anyway."""
    from mnist_classifier.calibration import UNCALIBRATED
    from mnist_classifier.finetune import base_calibration

    said = []
    payload = {**torch.load(small_checkpoint, weights_only=True), "temperature": float("nan")}
    assert base_calibration(payload, small_checkpoint, said.append) is UNCALIBRATED
    assert said == [f"note: {small_checkpoint}'s stored calibration is damaged: the figures before fine-tuning are "
                    "uncalibrated; the tuned model is calibrated afresh"]
    assert base_calibration(torch.load(small_checkpoint, weights_only=True), small_checkpoint, said.append).fitted
