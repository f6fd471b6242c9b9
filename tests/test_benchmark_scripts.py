"""The benchmark scripts fail fast and say what they measured: --help, missing checkpoints,
settings that changed (benchmarks/*.py; nothing here trains or runs a benchmark)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import honest_answers  # noqa: E402  (benchmarks/ is not a package)
import library_start  # noqa: E402
import uneven_light  # noqa: E402
import user_writer  # noqa: E402

MISSING = "/nonexistent/model.pth"


def run_script(name: str, *flags: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


# ------------------------------------------------------------------ library_start.py


def test_library_start_help_prints_usage_instead_of_running():
    done = run_script("library_start.py", "--help")
    assert done.returncode == 0
    assert "usage:" in done.stdout and "--repeats" in done.stdout


def test_library_start_refuses_zero_repeats_before_starting_a_process():
    done = run_script("library_start.py", "--repeats", "0")
    assert done.returncode == 2 and "--repeats must be at least 1" in done.stderr


def test_library_start_table_states_the_repeats_it_measured():
    rows = [{"model": name, "import": 0.2, "load": 0.1, "predict": 0.01, "total": total, "torch": torch,
             "digit": 7, "repeats": 3} for name, total, torch in (("onnx", 0.31, False), ("pth", 1.2, True))]
    text = library_start.table(rows)
    assert "the median of 3 fresh processes" in text and "of 5" not in text


def test_library_start_shows_one_runs_columns_which_add_up_to_its_total():
    runs = [{"import": i, "load": load, "predict": 0.05, "total": i + load + 0.05}
            for i, load in ((0.9, 0.2), (0.7, 0.3), (0.6, 0.1), (1.1, 0.1))]
    chosen = library_start.median_run(runs)
    assert chosen is runs[1] and chosen["import"] + chosen["load"] + chosen["predict"] == chosen["total"]


# ------------------------------------------------------------------ honest_answers.py


def test_honest_answers_named_missing_checkpoint_is_an_error():
    assert_one_line_error(run_script("honest_answers.py", "--checkpoint", MISSING), MISSING, "make train")


def test_honest_answers_does_not_skip_a_missing_checkpoint_among_existing_ones(tmp_path):
    present = tmp_path / "present.pth"
    present.write_bytes(b"never read: the missing one is refused first")
    done = run_script("honest_answers.py", "--checkpoint", str(present), MISSING)
    assert_one_line_error(done, MISSING)
    assert str(present) not in done.stderr


def honesty_result(name: str, fashion_missing: bool) -> dict:
    """What `measure` returns, with made-up figures (no model is loaded)."""
    non_digits = [{"family": "scribbles", "answered_not_a_digit": 0.95}]
    if not fashion_missing:
        non_digits.append({"family": "clothes (Fashion-MNIST, never trained on)", "answered_not_a_digit": 0.93})
    verdicts = {"reject_threshold": 0.5, "digits": [{"set": "MNIST test", "answered_digit": 0.995, "accuracy": 0.99}],
                "non_digits": non_digits, "reviewed": [], "fashion_mnist_missing": fashion_missing}
    return {"checkpoint": name, "accuracy": 0.99, "verdicts": verdicts,
            "calibration": {"before": {"ece": 0.02}, "after": {"ece": 0.005}}}


def test_honest_answers_table_says_why_the_clothes_row_is_missing():
    text = honest_answers.table([honesty_result("simple_cnn_best.pth", fashion_missing=True)])
    assert text.splitlines()[-1] == honest_answers.FASHION_NOTE
    assert "mnist-classifier data --dataset fashion-mnist" in text


def test_honest_answers_table_has_no_note_when_the_clothes_row_is_there():
    text = honest_answers.table([honesty_result("simple_cnn_best.pth", fashion_missing=False)])
    assert "clothes (Fashion-MNIST" in text and honest_answers.FASHION_NOTE not in text



def test_honest_answers_judges_re_drawn_accuracy_against_each_models_own():
    """helper-74: "within 1 pt" was printed with no verdict, so a miss could never show."""
    result = honesty_result("simple_cnn_best.pth", fashion_missing=False)
    result["verdicts"]["digits"].append({"set": "re-drawn, 2.5 px", "answered_digit": 0.995, "accuracy": 0.975})
    row = next(line for line in honest_answers.table([result]).splitlines() if line.startswith("re-drawn, 2.5 px: acc"))
    assert "97.50% MISSED" in row
    result["verdicts"]["digits"][-1]["accuracy"] = 0.982
    row = next(line for line in honest_answers.table([result]).splitlines() if line.startswith("re-drawn, 2.5 px: acc"))
    assert "98.20% ok" in row


def test_train_speeds_time_to_target_counts_our_whole_call_and_needs_the_accuracy():
    """helper-74: ours was timed on its epochs alone (set-up left out), and a run that never reached
    99.2% could still be 'met'."""
    import train_speed

    speed = {kind: {"images_per_s": 1000.0, "peak_rss_mb": 500.0, "train_seconds": 10.0, "wall_seconds": 20.0}
             for kind in ("ours", "ours_plain", "seed_style")}
    reach = {"ours": {"train_seconds": 9.0, "wall_seconds": 30.0, "test_accuracy": 0.993},
             "seed_style": {"train_seconds": 100.0, "test_accuracy": 0.992}}
    row = {name: (ours, met) for name, _unit, ours, _base, _target, met in
           train_speed.rows({"speed": speed, "time_to_99_2": reach})}
    assert row["time to 99.2%, ours whole call"] == (30.0, False)  # 30 s > 100 / 4
    reach["ours"].update(wall_seconds=20.0, test_accuracy=0.991)
    row = {name: met for name, *_, met in train_speed.rows({"speed": speed, "time_to_99_2": reach})}
    assert row["time to 99.2%, ours whole call"] is False  # fast, but never reached 99.2%


def test_honest_answers_without_trained_models_is_an_error_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(honest_answers, "DEFAULT_CHECKPOINTS", (tmp_path / "simple_cnn_best.pth",))
    assert honest_answers.main([]) == 2  # measured nothing: a script or CI must not read it as a pass
    out, err = capsys.readouterr()
    assert out == "" and err == ("error: no trained MNIST checkpoint in models/: run `make train` first, "
                                 "or name one with --checkpoint\n")


# ------------------------------------------------------------------ user_writer.py


def test_user_writer_missing_checkpoint_is_one_line_not_a_traceback():
    assert_one_line_error(run_script("user_writer.py", "--checkpoint", MISSING), MISSING)


def test_user_writer_fresh_count_wins_over_quick():
    assert user_writer.fresh_count(1000, quick=True) == 1000
    assert user_writer.fresh_count(None, quick=True) == user_writer.QUICK_FRESH
    assert user_writer.fresh_count(None, quick=False) == user_writer.FRESH


# ------------------------------------------------------------------ inference.py


def test_inference_reads_the_projects_folders_from_any_working_directory(tmp_path, monkeypatch):
    import inference

    asked = {}

    class Stop(Exception):
        pass

    def fake_predictor(checkpoint):
        asked["checkpoint"] = Path(checkpoint)
        return argparse.Namespace(info={"dataset": "mnist"})

    def fake_data(data_dir, *_args, **_kwargs):
        asked["data_dir"] = Path(data_dir)
        raise Stop  # nothing past this point is under test

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inference, "load_predictor", fake_predictor)
    monkeypatch.setattr(inference, "load_data", fake_data)
    with pytest.raises(Stop):
        inference.run()
    assert asked == {"checkpoint": ROOT / "models" / "simple_cnn_best.pth", "data_dir": ROOT / "data"}
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ seeds.py


@pytest.fixture
def seeds_run(tmp_path, monkeypatch):
    """seeds.py with models/ in tmp_path and training replaced by a record of the seeds it would train."""
    import seeds

    monkeypatch.setattr(seeds, "ROOT", tmp_path)
    trained: list[int] = []
    monkeypatch.setattr(seeds, "train_seed", lambda _args, seed: trained.append(seed) or 0)
    monkeypatch.setattr(seeds, "summarise", lambda _args: None)
    return seeds, trained


def seeds_args(epochs: int | None = None) -> argparse.Namespace:
    """What `seeds.py --model simple_cnn [--epochs N]` parses to."""
    return argparse.Namespace(model="simple_cnn", dataset="mnist", precision="auto", epochs=epochs)


def precision_here() -> str:
    """What `--precision auto` trains in on this machine."""
    from mnist_classifier.hardware import choose_precision, resolve_device

    return choose_precision("auto", resolve_device("auto")).name


def save_finished_run(seeds, seed: int, epochs: int | None = None, precision_used: str | None = None) -> None:
    """A best checkpoint as `train` leaves it, recording the settings of `seeds_args(epochs)`."""
    import torch

    args = seeds_args(epochs)
    path = seeds.checkpoint(args, seed)
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": {}, "config": seeds.requested_config(args, seed), "test_accuracy": 0.99,
                "precision": {"name": precision_used or precision_here(), "reason": "test"}}, path)


def test_seeds_reuses_a_run_with_the_same_settings(seeds_run):
    seeds, trained = seeds_run
    save_finished_run(seeds, seed=1, epochs=2)
    seeds.main(["--model", "simple_cnn", "--seeds", "1", "--epochs", "2"])
    assert trained == []


def test_seeds_retrains_a_run_made_with_other_epochs(seeds_run, capsys):
    seeds, trained = seeds_run
    save_finished_run(seeds, seed=1, epochs=2)
    save_finished_run(seeds, seed=2, epochs=5)
    seeds.main(["--model", "simple_cnn", "--seeds", "1", "2", "--epochs", "5"])
    assert trained == [1]
    assert "epochs 2 -> 5" in capsys.readouterr().out


def test_seeds_retrains_a_run_of_the_recipe_when_epochs_are_now_given(seeds_run):
    seeds, trained = seeds_run
    save_finished_run(seeds, seed=1)  # the recipe's epochs
    recipe_epochs = seeds.requested_config(seeds_args(), 1)["epochs"]
    seeds.main(["--model", "simple_cnn", "--seeds", "1", "--epochs", str(recipe_epochs + 1)])
    assert trained == [1]


def test_seeds_retrains_an_auto_run_that_used_another_precision(seeds_run, capsys):
    seeds, trained = seeds_run
    other = "fp32" if precision_here() == "bf16" else "bf16"  # as on a machine with(out) native bf16
    save_finished_run(seeds, seed=1, epochs=2, precision_used=other)
    seeds.main(["--model", "simple_cnn", "--seeds", "1", "--epochs", "2"])
    assert trained == [1]
    assert f"precision used {other!r}" in capsys.readouterr().out


def test_seeds_stops_with_trains_status_when_a_seed_fails(seeds_run, monkeypatch):
    seeds, trained = seeds_run
    monkeypatch.setattr(seeds, "train_seed", lambda _args, seed: trained.append(seed) or (2 if seed == 1 else 0))
    monkeypatch.setattr(seeds, "summarise", lambda _args: pytest.fail("nothing to summarise after a failure"))
    assert seeds.main(["--model", "simple_cnn", "--seeds", "1", "2", "--epochs", "2"]) == 2
    assert trained == [1]


# ------------------------------------------------------------------ serve_load.py


def test_serve_load_without_proc_fails_at_once(tmp_path, monkeypatch, capsys):
    import serve_load

    monkeypatch.setattr(serve_load, "PROC", tmp_path / "no-proc")
    assert serve_load.main(["--duration", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Linux" in lines[0] and "no-proc" in lines[0]


def test_serve_load_measures_the_onnx_export_on_two_workers(small_checkpoint):
    """make bench's default-server row: the export served by two processes. serve began refusing
    --backend torch with an .onnx (7 Dec), which broke this row until the flag went with the .pth only."""
    import serve_load

    figures = serve_load.run(duration=1, clients=4, checkpoint=small_checkpoint, workers=2, onnx=True)
    assert figures["errors"] == 0 and figures["requests"] > 20 and figures["checkpoint"].endswith(".onnx")


# ------------------------------------------------------------------ gpu_check.sh
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_gpu_check_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OUT": str(tmp_path / "out"),
                                           "PYTHON": sys.executable})
    assert_one_line_error(done, "no CUDA GPU")
    assert not (tmp_path / "out").exists()


def test_uneven_light_reads_real_digits_photographed_in_a_shadow(capsys):
    assert uneven_light.main(["--digits", "24"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, name in zip(lines[2:4], ("across the page", "to the corners")):
        shares = [float(share.rstrip("%")) for share in line[len(name):].split()]
        assert line.startswith(name) and len(shares) == len(uneven_light.FALLOFFS)
        assert min(shares) >= 95, line  # every falloff up to 60% evened out (3-80% before across, at 30-60%)
    surroundings = {line[:40].strip(): float(line[40:].strip().rstrip("%")) for line in lines[7:]}
    assert set(surroundings) == set(uneven_light.SURROUNDINGS)
    for name in ("page turned 5-25 degrees on the table", "page turned, and in perspective (8%)",
                 "hard shadow 20% deep + camera noise 8", "hard shadow 30% + light falling off 30%",
                 "ruled paper, lines every 30 px, grey 170", "squared paper, every 20 px, grey 190",
                 "ruled, turned 1-5 degrees, JPEG"):
        assert surroundings[name] >= 90, (name, surroundings[name])  # 0-72% before 7 Dec

