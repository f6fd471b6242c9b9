"""`make bench`: every figure, measured in one run, written to docs/benchmarks.md.

    python benchmarks/run_all.py            # full suite: ~20 min on 2 AVX2 cores, ~15 with avx512_bf16
    python benchmarks/run_all.py --quick    # a smaller version of each: 2.6 min on the AMX Xeon, 6 Dec

Runs training speed (ours vs a seed-style DataLoader pipeline, vs the seed's own loop, and the network alone), drawn-digit accuracy
and demo latency, the Python API's start-up, inference latency/throughput (ONNX Runtime vs eager PyTorch), the
web server under load and `finetune` on a generated writer, each against its baseline and target, then writes the report.
Benchmarks need a quiet machine: other jobs on the same cores skew every figure.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_digits  # noqa: E402  (benchmarks/ is not a package)
import honest_answers  # noqa: E402
import inference  # noqa: E402
import library_start  # noqa: E402
import network_speed  # noqa: E402
import seed_loop  # noqa: E402
import serve_load  # noqa: E402
import train_speed  # noqa: E402
import user_writer  # noqa: E402

REPORT = ROOT / "docs" / "benchmarks.md"
PARTIAL = ROOT / "reports" / "benchmarks-partial.md"  # a run with a failed section


def machine() -> str:
    import torch

    from mnist_classifier.hardware import choose_precision, read_cpu_flags, read_cpu_model

    cpu = read_cpu_model()
    flags = read_cpu_flags()
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in network_speed.CPU_FLAGS)
    precision = choose_precision("auto", torch.device("cpu"))
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) \
        if torch.cuda.is_available() else ""
    accelerator = f"{gpus} present but not used (every figure here is the CPU's)" if gpus else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores ({shown}), {memory_gb:.0f} GiB, {accelerator}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, training precision "
            f"{precision.name} ({precision.reason}); load average before the run {os.getloadavg()[0]:.2f}")


def table_machine() -> str:
    """The line every table starts with: the CPU and its flags, torch, and the precision training
    chooses here (inference runs in fp32), so that a table copied alone still says where it came from."""
    import torch

    from mnist_classifier.hardware import choose_precision, read_cpu_flags, read_cpu_model

    flags = read_cpu_flags()
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in network_speed.CPU_FLAGS)
    precision = choose_precision("auto", torch.device("cpu")).name
    return (f"machine: {read_cpu_model()}, {os.cpu_count()} cores ({shown}); torch {torch.__version__}; "
            f"training precision {precision}, inference fp32")


def sections(checkpoint: Path, quick: bool) -> list[tuple[str, Callable[[], str]]]:
    """(title, a function measuring it and returning its fixed-width table) for each benchmark, in order."""
    import torch

    from mnist_classifier.hardware import native_bf16

    checkpoints = [checkpoint] if quick else [checkpoint, ROOT / "models" / "improved_cnn_best.pth"]
    out = [
        ("Training: whole-tensor pipeline vs seed-style DataLoader (SimpleCNN)",
         lambda: train_speed.format_table(train_speed.run(quick))),
        # The seed loop reaches 99.2% in its 4th epoch: with 4 its time to 99.2% is measured, not bounded
        ("Training: the seed project's own loop vs ours (benchmarks/seed_loop.py)",
         lambda: seed_loop.table(seed_loop.run(quick, seed_epochs=None if quick else 4))),
        # bf16 rows only where `--precision auto` would train in bf16: elsewhere it is emulated, ~7x slower
        ("Training: SimpleCNN's own speed, no data pipeline: the ceiling of any loop (benchmarks/network_speed.py)",
         lambda: network_speed.table(network_speed.run(rounds=2 if quick else 6,
                                                       bf16=native_bf16(torch.device("cpu"))[0]))),
        ("Drawn digits: accuracy after preprocessing, and demo latency",
         lambda: drawn_digits.table(drawn_digits.run(checkpoint, count=1000 if quick else 10_000,
                                                     runs=100 if quick else 500))),
        ("Honest answers: calibration and 'not a digit' (benchmarks/honest_answers.py)",
         lambda: honest_answers.table(honest_answers.run(checkpoints))),
        ("Python API: import, load() and the first predict() in a fresh process",
         lambda: library_start.table(library_start.run(repeats=3 if quick else 5))),
        ("Inference: ONNX Runtime vs eager PyTorch",
         lambda: inference.format_table(inference.run(checkpoint, quick=quick))),
    ]
    for backend, workers, onnx in served_models():
        out.append((f"Web server ({backend}): 16 concurrent clients posting drawn digits",
                    lambda workers=workers, onnx=onnx: serve_load.report(serve_load.run(
                        duration=5 if quick else 20, clients=16, checkpoint=checkpoint, workers=workers, onnx=onnx))))
    out.append(("Your handwriting: finetune on a generated writer MNIST lacks (benchmarks/user_writer.py)",
                lambda: user_writer.table(user_writer.run(checkpoint, quick=quick))))
    return [(title, with_machine(measure)) for title, measure in out]


def with_machine(measure: Callable[[], str]) -> Callable[[], str]:
    """`measure`, its table headed by table_machine()'s line."""
    return lambda: f"{table_machine()}\n{measure()}"


def measure_all(planned: list[tuple[str, Callable[[], str]]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Each section measured and printed as soon as it is done, so a late failure loses nothing
    before it; a failing section is reported as such and the rest still run. Returns the
    (title, table) parts and the titles that failed."""
    parts, failed = [], []
    started = time.perf_counter()
    for title, measure in planned:
        busy = busy_machine()
        try:
            table = measure() + (f"\n\n{busy}" if busy else "")
        except Exception as error:  # noqa: BLE001 (one benchmark's failure must not cost the others)
            table = f"failed: {type(error).__name__}: {error}"
            failed.append(title)
        parts.append((title, table))
        print(f"\n{title}\n{table}", flush=True)
    print(f"benchmarks took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return parts, failed


def busy_machine() -> str | None:
    """A warning when other work shares the CPU: at a load of 6-9 on 2 cores the seed loop's ratio
    read 16x (helper-90). The benchmark's own last section alone keeps the load near the core count."""
    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    if load <= 1.5 * cores:
        return None
    warning = (f"warning: load average {load:.1f} on {cores} cores as this section began: other work shared "
               "the CPU, so these figures are no fair measure; run again on a quiet machine")
    print(warning, file=sys.stderr)
    return warning


def served_models() -> list[tuple[str, int, bool]]:
    """`serve` as it starts by default (a process per core, the ONNX export), and the
    eager-PyTorch configurations it replaced, side by side."""
    cores = os.cpu_count() or 1
    return [("PyTorch checkpoint, --workers 1 --backend torch", 1, False),
            (f"PyTorch checkpoint, --workers {cores} --backend torch", cores, False),
            (f"ONNX Runtime, --workers {cores}: the default", cores, True)]


def measured_on(quick: bool = False, checkpoint: Path | None = None) -> str:
    """When, on what and of what, taken before the first section: its load average is the machine's, not ours."""
    kind = "quick runs (`--quick`: smaller than the targets assume)" if quick else "full runs"
    measured = f" The inference, drawing, server and handwriting sections measure {describe(checkpoint)}." \
        if checkpoint is not None else ""
    return (f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on: {machine()}. "
            f"Trained: {recipe()}; {kind}.{measured}")


def describe(checkpoint: Path) -> str:
    """The model file a section measures, as its own checkpoint records it (it may predate the recipe)."""
    from mnist_classifier.checkpoint import load_checkpoint
    from mnist_classifier.errors import UserError

    shown = checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint
    try:
        payload = load_checkpoint(checkpoint)
    except UserError as error:  # the sections that load it will say so in their own tables
        return f"{shown} ({error})"
    config = payload.get("config") or {}
    saved = datetime.fromtimestamp(checkpoint.stat().st_mtime, timezone.utc)
    return (f"{shown} (file modified "
            f"{saved:%Y-%m-%d %H:%M} UTC: {payload.get('model_name')}, model_options "
            f"{config.get('model_options') or 'none'}, {payload.get('epoch')} epochs, weight_average "
            f"{config.get('weight_average', 'not in its recipe')}, test accuracy {payload.get('test_accuracy')})")


def recipe() -> str:
    """What `make train` trains, which every training section here runs: its figures hold for this recipe only."""
    from mnist_classifier.config import resolve_config

    config = resolve_config(None, {})
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        at = commit.stdout.strip() if commit.returncode == 0 else "outside a git checkout"
    except OSError:  # no git on this machine
        at = "unknown"
    return (f"the `make train` recipe at commit {at} ({config.model_name}, model_options "
            f"{config.model_options or 'none'}, {config.epochs} epochs, weight_average {config.weight_average})")


def write_report(parts: list[tuple[str, str]], command: str, heading: str, path: Path | None = None) -> None:
    path = REPORT if path is None else path
    lines = ["# Benchmarks", "", heading, "",
             f"Command: `{command}` (this file is rewritten by it).", ""]
    for title, table in parts:
        lines += [f"## {title}", "", "```", table, "```", ""]
    previous = path.read_text() if path.exists() else ""
    if "<!-- notes -->" in previous:  # hand-written notes below the marker survive a rerun
        lines.append(previous[previous.index("<!-- notes -->"):].rstrip())
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, a few minutes (default: full)")
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "simple_cnn_best.pth"),
                        help="model for the inference, drawing and server figures (default: models/simple_cnn_best.pth)")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        print(f"error: checkpoint {checkpoint} not found: run `make train` first", file=sys.stderr)
        return 2
    heading = measured_on(args.quick, checkpoint.resolve())
    print(heading, flush=True)
    parts, failed = measure_all(sections(checkpoint, args.quick))
    command = shlex.join(["make", "bench-quick" if args.quick else "bench"])
    if failed:  # docs/benchmarks.md is the record: a partial run goes beside it, not over it
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        write_report(parts, command, heading, PARTIAL)
        print(f"\n{len(failed)} section(s) failed ({'; '.join(failed)}); docs/benchmarks.md left as it was, "
              f"this run's tables are in {PARTIAL.relative_to(ROOT)}", file=sys.stderr)
        return 1
    if not args.quick:  # the quick run is a smoke test; only the full run is the record
        write_report(parts, command, heading)
        print(f"\nwrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
