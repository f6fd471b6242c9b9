"""Accuracy over several seeds: train one recipe once per seed, report mean and spread.

    python benchmarks/seeds.py                                   # ImprovedCNN on MNIST, seeds 1 2 3
    python benchmarks/seeds.py --model simple_cnn --seeds 1 2 3 4 5
    python benchmarks/seeds.py --dataset fashion-mnist
    python benchmarks/seeds.py --model simple_cnn --precision fp32    # then --precision bf16: the same
                                                                      # seeds side by side (bf16 pays off only
                                                                      # where the CPU has avx512_bf16 / amx_bf16)

Each seed trains through the real CLI (`mnist-classifier train`) into
models/seeds/<model>_<dataset>_seed<N>/, so its best checkpoint can be evaluated,
exported or ensembled afterwards. A seed whose run already finished with the settings
asked for (epochs, precision and the rest of the recipe, as its checkpoint records them)
is not trained again; one with other settings is trained again over it. Test accuracy is
the figure `train` records in the best checkpoint (scored once, after training); training
time is the sum of the epochs' own timings, without start-up and evaluation.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_classifier.checkpoint import load_checkpoint  # noqa: E402
from mnist_classifier.config import config_from_dict, resolve_config  # noqa: E402
from mnist_classifier.hardware import choose_precision, resolve_device  # noqa: E402
from mnist_classifier.run_files import checkpoint_stem  # noqa: E402

# Where and how a run was carried out, not what it learnt: a difference here is no reason to retrain.
NOT_COMPARED = {"save_dir", "log_dir", "data_dir", "device", "num_threads", "save_interval"}


def run_folder(args: argparse.Namespace, seed: int) -> Path:
    precision = "" if args.precision == "auto" else f"_{args.precision}"  # fp32 and bf16 runs kept apart
    return ROOT / "models" / "seeds" / f"{args.model}_{args.dataset}{precision}_seed{seed}"


def checkpoint(args: argparse.Namespace, seed: int, kind: str = "best") -> Path:
    return run_folder(args, seed) / f"{checkpoint_stem(args.model, args.dataset)}_{kind}.pth"


def requested_config(args: argparse.Namespace, seed: int) -> dict:
    """The config `train_seed` would train with: the recipe, then the flags it passes."""
    return resolve_config(None, {"model_name": args.model, "dataset": args.dataset, "seed": seed,
                                 "precision": args.precision, "epochs": args.epochs}).to_dict()


def settings_changed(args: argparse.Namespace, seed: int) -> list[str]:
    """'key stored -> requested' for each setting where the finished run differs from this request."""
    payload = load_checkpoint(checkpoint(args, seed))
    stored = config_from_dict(payload.get("config", {})).to_dict()
    requested = requested_config(args, seed)
    changed = [f"{key} {stored.get(key)!r} -> {value!r}" for key, value in requested.items()
               if key not in NOT_COMPARED and stored.get(key) != value]
    # --precision auto means bf16 on one machine and fp32 on another: compare what it resolves to here
    used = payload.get("precision", {}).get("name", "fp32")  # checkpoints older than --precision: fp32
    now = choose_precision(args.precision, resolve_device("auto")).name
    return changed + ([f"precision used {used!r} -> {now!r}"] if used != now else [])


def finished(args: argparse.Namespace, seed: int) -> bool:
    best = checkpoint(args, seed)
    return best.is_file() and "test_accuracy" in load_checkpoint(best)


def train_seed(args: argparse.Namespace, seed: int) -> int:
    """`train`'s exit status: it has printed its own one-line error when that is not 0."""
    folder = run_folder(args, seed)
    command = [sys.executable, "-m", "mnist_classifier", "train", "--model", args.model, "--dataset", args.dataset,
               "--seed", str(seed), "--precision", args.precision, "--save-dir", str(folder),
               "--log-dir", str(ROOT / "runs" / "seeds")]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, cwd=ROOT).returncode
    if status == 0:
        print(f"seed {seed}: {time.perf_counter() - started:.0f} s wall, start-up and test scoring included", flush=True)
    return status


def summarise(args: argparse.Namespace) -> None:
    rows = []
    for seed in args.seeds:
        best = load_checkpoint(checkpoint(args, seed))
        last = load_checkpoint(checkpoint(args, seed, "last"))
        seconds = sum(last["history"]["seconds"])
        rows.append((seed, best["test_accuracy"], best["accuracy"], last["epoch"], seconds))
        used = best.get("precision", {}).get("name", "fp32")  # checkpoints older than --precision: fp32
    print(f"\n{args.model} on {args.dataset}, {len(rows)} seeds, precision {used} (--precision {args.precision})")
    print(f"{'seed':>6} {'test acc':>9} {'val acc':>9} {'epochs':>7} {'training s':>11}")
    for seed, test, val, epochs, seconds in rows:
        print(f"{seed:>6} {test:>9.2%} {val:>9.2%} {epochs:>7} {seconds:>11.1f}")
    tests = [row[1] for row in rows]
    spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
    print(f"mean test accuracy {statistics.mean(tests):.2%} +- {spread:.2%} (sample std); "
          f"training {statistics.mean(row[4] for row in rows) / 60:.1f} min per seed on average")
    print("checkpoints: " + " ".join(str(checkpoint(args, s).relative_to(ROOT))
                                     for s in args.seeds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="improved_cnn", help="train --model (default: improved_cnn)")
    parser.add_argument("--dataset", default="mnist", help="train --dataset (default: mnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed (default: 1 2 3)")
    parser.add_argument("--epochs", type=int, help="train --epochs (default: the recipe's); "
                        "a finished run with other settings is trained again")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="train --precision (default: auto)")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        if finished(args, seed):
            folder = run_folder(args, seed).relative_to(ROOT)
            changed = settings_changed(args, seed)
            if not changed:
                print(f"seed {seed}: already trained in {folder} with these settings")
                continue
            # reporting the old run would present other settings' result as this one's
            print(f"seed {seed}: the run in {folder} used other settings ({'; '.join(changed)}): training again")
        status = train_seed(args, seed)
        if status != 0:
            return status
    summarise(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
