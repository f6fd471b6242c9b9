"""How fast can this CPU train SimpleCNN at all? The network alone, no data pipeline.

    python benchmarks/network_speed.py              # batch 64/128/144/256, channels-last vs NCHW, 6 rounds
    python benchmarks/network_speed.py --compile    # also torch.compile (slow to start: ~30 s on 2 cores)
    python benchmarks/network_speed.py --bf16       # also bf16 autocast (fast only where the CPU has
                                                    # avx512_bf16 / amx_bf16; ~7x slower on AVX2 alone)
    python benchmarks/network_speed.py --what-if --batches 144 --bf16   # what would make the step faster?

One training step (forward, cross-entropy, backward, AdamW) on a fixed random batch, timed
for each configuration in turn, round after round, so that the machine's drifting speed hits
every configuration alike; the table gives each one's median and range of images/s. A
training loop cannot beat its network's figure here: it is the ceiling that issue 16's
throughput ratio against the seed loop runs into (docs/benchmarks.md, 4 Dec).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from mnist_classifier.config import resolve_config
from mnist_classifier.hardware import read_cpu_flags, read_cpu_model
from mnist_classifier.models import create_model

IMAGES_PER_ROUND = 2_304  # a multiple of every default batch size
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
RECIPE_OPTIONS = resolve_config(None, {}).model_options  # SimpleCNN as `make train` builds it


def training_step(batch: int, memory_format: torch.memory_format, compiled: bool, bf16: bool = False,
                  change=None, fused: bool = False, options: dict | None = None):
    """A closure doing one optimiser step of SimpleCNN (built with the recipe's `model_options`
    unless `options` are given) on `batch` fixed images (under bf16 autocast, as `train
    --precision bf16` does, when asked). `change`: edits the model first (a what-if, below);
    `fused`: AdamW's fused implementation."""
    torch.manual_seed(0)
    model = create_model("simple_cnn", options=RECIPE_OPTIONS if options is None else options)
    if change is not None:
        change(model)
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    net = torch.compile(model) if compiled else model
    images = torch.randn(batch, 1, 28, 28).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # first call: oneDNN picks its kernels (and inductor compiles)
    return step


class MaximaOfPairs(nn.Module):
    """2x2 max-pooling as two elementwise maxima of strided halves (rows, then columns)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]
        x = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
        return torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])


def _without(*names: str):
    """A change that replaces these layers of the model by identities."""
    def change(model: nn.Module) -> None:
        for name in names:
            setattr(model, name, nn.Identity())
    return change


def _torch_dropout(model: nn.Module) -> None:
    model.dropout1, model.dropout2 = nn.Dropout(model.dropout1.p), nn.Dropout(model.dropout2.p)


# What would make a step faster? Each a change to the network or its optimiser, timed against
# the step as `train` runs it; the ones that remove a layer are bounds, not models we would ship.
WHAT_IFS = {
    "as train runs it": {},
    "BatchNorm before the pool (seed's)": {"options": {}},
    "AdamW(fused=True)": {"fused": True},
    "max-pool as maxima of pairs": {"change": lambda model: setattr(model, "pool", MaximaOfPairs())},
    "nn.Dropout, torch's masks": {"change": _torch_dropout},
    "no dropout (a bound)": {"change": _without("dropout1", "dropout2")},
    "no BatchNorm (a bound)": {"change": _without("bn1", "bn2", "bn3")},
}


def what_ifs(batch: int, bf16: bool) -> dict[str, tuple[int, object]]:
    return {f"batch {batch}, {name}": (batch, training_step(batch, torch.channels_last, False, bf16, **options))
            for name, options in WHAT_IFS.items()}


def measure(configs: dict[str, tuple[int, object]], rounds: int) -> dict[str, list[float]]:
    """images/s of each configuration, one figure per round, configurations interleaved."""
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (batch, step) in configs.items():
            steps = max(1, IMAGES_PER_ROUND // batch)
            started = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(batch * steps / (time.perf_counter() - started))
    return rates


def header() -> str:
    flags = read_cpu_flags()
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    return (f"{read_cpu_model()}, {os.cpu_count()} cores ({shown}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average before {os.getloadavg()[0]:.2f}")


def run(batches=(64, 128, 144, 256), rounds: int = 6, compiled: bool = False, bf16: bool = False,
        what_if: bool = False) -> dict:
    """Each batch size channels-last and NCHW in fp32 (and compiled, and bf16, if asked), interleaved;
    with `what_if`, the WHAT_IFS at the first batch size instead (bf16 if asked)."""
    if what_if:
        return {"header": header(), "rounds": rounds, "rates": measure(what_ifs(batches[0], bf16), rounds),
                "bf16": bf16}
    configs: dict[str, tuple[int, object]] = {}
    for batch in batches:
        configs[f"batch {batch}, channels-last"] = (batch, training_step(batch, torch.channels_last, False))
        configs[f"batch {batch}, NCHW"] = (batch, training_step(batch, torch.contiguous_format, False))
        if compiled:
            configs[f"batch {batch}, channels-last, compiled"] = (batch, training_step(batch, torch.channels_last, True))
        if bf16:
            configs[f"batch {batch}, channels-last, bf16"] = (batch, training_step(batch, torch.channels_last, False, True))
    return {"header": header(), "rounds": rounds, "rates": measure(configs, rounds)}


def table(result: dict) -> str:
    lines = [result["header"], "", f"{'SimpleCNN training step':<48} {'median images/s':>16} {'range':>16}"]
    for name, values in result["rates"].items():
        lines.append(f"{name:<48} {statistics.median(values):>16,.0f} {min(values):>7,.0f}-{max(values):<8,.0f}")
    lines += ["", f"{result['rounds']} rounds of {IMAGES_PER_ROUND:,} images per configuration, interleaved; "
                  "forward + backward + AdamW on fixed random images (no data loading, no augmentation); "
                  + ("all under bf16 autocast" if result.get("bf16") else "fp32 unless marked bf16 (autocast)")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 144, 256])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd channels-last steps")
    parser.add_argument("--bf16", action="store_true", help="also time channels-last steps under bf16 autocast")
    parser.add_argument("--what-if", action="store_true", help="instead, time changes to the network at the "
                        "first batch size (fused AdamW, another max-pool, without dropout or BatchNorm)")
    args = parser.parse_args(argv)
    if args.rounds <= 0 or min(args.batches) <= 0:
        parser.error("--rounds and --batches must be positive")
    print(table(run(args.batches, args.rounds, args.compile, args.bf16, args.what_if)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
