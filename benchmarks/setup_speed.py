"""How long a training run prepares before its first step: made in one process or in several.

    python benchmarks/setup_speed.py               # the `make train` recipe's extras, 3 rounds
    python benchmarks/setup_speed.py --rounds 5 --workers 4

A run on MNIST first makes three arrays from its 55,000 training digits (prepared.py): the
digits as the preprocessing returns them, their skeletons and a pool of generated non-digits.
Each round times every maker alone in this process, then all three made together by
`prepared.make_all` in this process and in `--workers` worker processes, in turn, so that the
machine's drifting speed hits each way alike. Nothing is read from or written to
data/prepared/: this is the first run's cost.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from mnist_classifier.config import resolve_config
from mnist_classifier.data import load_data
from mnist_classifier.exposure import extras_to_prepare
from mnist_classifier.hardware import read_cpu_flags, read_cpu_model
from mnist_classifier.prepared import make_all, make_here
from mnist_classifier.training import steps_per_epoch


def seconds(make) -> float:
    started = time.perf_counter()
    make()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=torch.get_num_threads(),
                        help="worker processes (default: training's threads, as train() uses)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.workers < 1:
        parser.error("--rounds and --workers must be at least 1")
    config = resolve_config(None, {})
    data = load_data(config.data_dir, log=lambda _line: None)
    extras = extras_to_prepare(config, data.train, steps_per_epoch(config, len(data.train)) * config.epochs)
    flags = read_cpu_flags()
    print(f"{read_cpu_model()}, {os.cpu_count()} cores ("
          + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx512_bf16", "amx_bf16"))
          + f"); torch {torch.__version__}; load average before {os.getloadavg()[0]:.2f}")
    print(f"{len(data.train):,} training digits; seconds per round\n")
    # "here": as before e8ae0b9, in the training process, the skeletons on its threads
    ways = [(f"{extra.name} alone, here", lambda extra=extra: make_here([extra], threads=args.workers))
            for extra in extras]
    ways += [("all three, here", lambda: make_here(extras, threads=args.workers)),
             (f"all three, {args.workers} worker processes", lambda: make_all(extras, workers=args.workers))]
    times: dict[str, list[float]] = {name: [] for name, _ in ways}
    for _ in range(args.rounds):
        for name, make in ways:
            times[name].append(seconds(make))
    for name, measured in times.items():
        print(f"{name:<34} " + "  ".join(f"{value:6.1f}" for value in measured))
    here, apart = min(times["all three, here"]), min(times[f"all three, {args.workers} worker processes"])
    print(f"\nfastest round: {here:.1f} s here, {apart:.1f} s in {args.workers} processes: {here / apart:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
