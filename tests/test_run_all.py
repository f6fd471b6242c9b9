"""`make bench` keeps what it measured when one benchmark fails (benchmarks/run_all.py)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_all  # noqa: E402  (benchmarks/ is not a package)


def test_a_failing_section_is_reported_and_the_rest_still_run(capsys, monkeypatch):
    monkeypatch.setattr(run_all.os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # a quiet machine, whatever the tests' load

    def broken() -> str:
        raise RuntimeError("server not ready after 90 s")

    planned = [("first", lambda: "table one"), ("second", broken), ("third", lambda: "table three")]
    parts, failed = run_all.measure_all(planned)

    assert failed == ["second"]
    assert parts == [("first", "table one"), ("second", "failed: RuntimeError: server not ready after 90 s"),
                     ("third", "table three")]
    printed = capsys.readouterr().out
    assert printed.index("table one") < printed.index("failed: RuntimeError") < printed.index("table three")


def test_a_section_begun_on_a_busy_machine_says_its_figures_are_no_fair_measure(capsys, monkeypatch):
    """helper-90: at a load of 6-9 on 2 cores the seed loop's ratio read 16x, without a word."""
    monkeypatch.setattr(run_all.os, "cpu_count", lambda: 2)
    loads = iter([(1.9, 1.0, 1.0), (7.5, 6.0, 4.0)])  # its own last section's load; others' work besides
    monkeypatch.setattr(run_all.os, "getloadavg", lambda: next(loads))
    parts, failed = run_all.measure_all([("quiet", lambda: "table one"), ("busy", lambda: "table two")])
    warning = ("warning: load average 7.5 on 2 cores as this section began: other work shared the CPU, so these "
               "figures are no fair measure; run again on a quiet machine")
    assert not failed and parts == [("quiet", "table one"), ("busy", f"table two\n\n{warning}")]
    assert warning in capsys.readouterr().err


def test_a_partial_run_is_written_beside_the_record_not_over_it(tmp_path, monkeypatch):
    record, partial = tmp_path / "benchmarks.md", tmp_path / "partial" / "benchmarks-partial.md"
    record.write_text("# Benchmarks\n\nthe last full run\n")
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"not read: sections() is replaced below")
    monkeypatch.setattr(run_all, "REPORT", record)
    monkeypatch.setattr(run_all, "PARTIAL", partial)
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    monkeypatch.setattr(run_all, "sections", lambda _checkpoint, _quick: [
        ("ok", lambda: "42 images/s"), ("broken", lambda: 1 / 0)])

    assert run_all.main(["--checkpoint", str(checkpoint)]) == 1
    assert record.read_text() == "# Benchmarks\n\nthe last full run\n"
    written = partial.read_text()
    assert "42 images/s" in written and "failed: ZeroDivisionError" in written and "`make bench`" in written


def test_the_machine_and_its_load_are_read_before_the_first_benchmark_and_printed(tmp_path, monkeypatch, capsys):
    order = []
    monkeypatch.setattr(run_all, "machine", lambda: order.append("machine") or "the CPU, load 0.10")
    monkeypatch.setattr(run_all, "REPORT", tmp_path / "benchmarks.md")
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    monkeypatch.setattr(run_all, "sections", lambda _checkpoint, _quick: [
        ("busy", lambda: order.append("section") or "table")])
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"not read: sections() is replaced above")

    assert run_all.main(["--checkpoint", str(checkpoint)]) == 0
    assert order == ["machine", "section"]
    assert capsys.readouterr().out.startswith("Measured ")
    assert "UTC on: the CPU, load 0.10." in (tmp_path / "benchmarks.md").read_text()


def test_the_heading_names_the_cpu_flags_and_the_training_precision():
    heading = run_all.measured_on()
    assert "avx512_bf16 " in heading and "amx_bf16 " in heading and "torch " in heading
    assert "training precision bf16 (auto:" in heading or "training precision fp32 (auto:" in heading
    # which recipe the training figures are of: they changed with it (6 Dec: 3 -> 4 epochs, a weight average)
    assert "the `make train` recipe at commit " in heading and "4 epochs, weight_average 0.99" in heading
    assert "full runs" in heading and "quick runs" in run_all.measured_on(quick=True)


def test_every_table_starts_with_the_cpu_its_flags_torch_and_the_precision():
    """Issue 16 asks for them on every table (helper-74: most tables had none)."""
    table = run_all.with_machine(lambda: "figure  ours")()
    first, rest = table.split("\n", 1)
    assert first.startswith("machine: ") and "avx512_bf16 " in first and "torch " in first
    assert "training precision " in first and rest == "figure  ours"
