"""Which device trains, and in which precision: decided at run time from what the hardware does.

    mnist-classifier train --device auto --precision auto     # the defaults

Owns: `resolve_device` (auto: CUDA, then Apple's MPS, then Intel's XPU, else the CPU; a
named one that is absent is a one-line error) and `choose_precision` (auto: bf16 autocast
where the hardware computes bf16 natively, fp32 elsewhere). The CPU model behind one
kind of machine changes from one machine to the next: on an AMD EPYC with AVX512-BF16,
SimpleCNN's forward + backward ran 1.6x faster under bf16 autocast; on an AVX2-only one
it ran ~7x slower (bf16 emulated). So the choice cannot live in a config file.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:  # imported where used: the CLI reads DEVICES and PRECISIONS without torch's ~1 s start-up,
    import torch  # and so do `serve`'s ONNX workers, which re-import the console script

DEVICES = ("auto", "cpu", "cuda", "mps", "xpu")
PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names (Linux)


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The device for `--device choice`; with several GPUs, the local rank's."""
    import torch

    if choice == "cpu":
        return torch.device("cpu")
    for kind in (("cuda", "mps", "xpu") if choice == "auto" else (choice,)):
        count = _device_count(kind)
        if count:
            return torch.device(kind, local_rank % count) if kind != "mps" else torch.device("mps")
        if choice != "auto":
            raise UserError(f"device {kind} asked for (--device, or device in the config), but this machine has no "
                            f"{_DEVICE_NAMES[kind]} that torch {torch.__version__} can use: use cpu or auto")
    return torch.device("cpu")


_DEVICE_NAMES = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)", "xpu": "Intel GPU (XPU)"}


def _device_count(kind: str) -> int:
    import torch

    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        return 1 if backend is not None and backend.is_available() else 0
    module = getattr(torch, kind, None)  # torch.xpu exists from 2.4 on
    return module.device_count() if module is not None and module.is_available() else 0


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor.to(device)`, without making the host wait when it goes to a CUDA GPU.

    A plain copy from ordinary host memory waits until the GPU has finished all the work
    queued before it. The training step draws its random numbers on the CPU (so that a run
    draws the same numbers on every device) and sends them over several times per step; from
    pinned memory each copy is queued like a kernel, and the host goes on queueing the step.
    (`torch.cuda.set_sync_debug_mode("warn")` finds no wait left in a step.)
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16"
    reason: str

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def choose_precision(requested: str, device: torch.device, cpu_flags: set[str] | None = None) -> Precision:
    """fp32 or bf16 autocast for `--precision requested` on `device` (see the module docstring)."""
    if requested not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    native, why = native_bf16(device, cpu_flags)
    if requested == "fp32":
        return Precision("fp32", "asked for: --precision fp32, or precision in the config")
    if requested == "bf16":
        return Precision("bf16", "asked for: --precision bf16, or precision in the config" + ("" if native else f"; {why}: expect it slower"))
    return Precision("bf16" if native else "fp32", f"auto: {why}")


def native_bf16(device: torch.device, cpu_flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether `device` computes bf16 in hardware, and the fact that decided it."""
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name(device)} computes bf16"
        return False, f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type != "cpu":
        return False, f"bf16 autocast not measured on {device.type}"
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    found = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
    if found:
        return True, f"this CPU computes bf16 natively ({', '.join(found)})"
    return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)"


def read_cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere (so: fp32)."""
    return set(_cpuinfo_field(("flags", "Features")).split())


def read_cpu_model() -> str:
    """The CPU's name as Linux gives it ("AMD EPYC"), else what the platform module knows:
    every benchmark names the CPU its figures came from."""
    return _cpuinfo_field(("model name",)) or platform.processor() or platform.machine() or "unknown CPU"


def _cpuinfo_field(names: tuple[str, ...]) -> str:
    """The first /proc/cpuinfo line starting with one of `names`, after its colon; "" when none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.startswith(names)), "")
    return line.partition(":")[2].strip()
