"""`make install`: the project's virtual environment in .venv, built once.

Two make commands started together (`make train` in one terminal, `make test` in another)
would both create .venv and run pip into it at once; the second then fails half-way. This
holds a lock while it installs, so the second waits and finds the work done. The lock is
the kernel's (fcntl), so a killed install leaves nothing to clean up; a venv left without
pip by a killed `python -m venv` is built again.
"""
from __future__ import annotations

import fcntl
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"
LOCK = ROOT / ".venv.lock"
INPUTS = ("pyproject.toml", "constraints.txt")  # a change to either reinstalls
# PyPI's torch for Linux on x86-64 is the CUDA build (several GB of nvidia-* wheels); PyTorch's CPU
# index holds the same release as 2.13.0+cpu, which pip prefers (a local version sorts above the plain
# one). Elsewhere PyPI's wheel is a CPU build already. An open range would also pull the CUDA build.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_requirement() -> list[str]:
    """pip's arguments for the CPU build of torch alone, without its dependencies: a machine that
    cannot reach the CPU index (it has the wheel on disk, say) retries it for each package it looks up."""
    if sys.platform == "linux" and platform.machine() == "x86_64":
        return ["torch==2.13.0", "--no-deps", "--extra-index-url", CPU_INDEX, "--retries", "2"]
    return ["torch==2.13.0", "--no-deps"]


# torch first, then its dependencies from the usual index, then the project (which finds torch there).
STEPS = (torch_requirement(), ["torch==2.13.0"], ["-e", ".[dev]"])


def up_to_date() -> bool:
    return STAMP.exists() and all(STAMP.stat().st_mtime >= (ROOT / name).stat().st_mtime for name in INPUTS)


def has_pip(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-m", "pip", "--version"],
                                              capture_output=True).returncode == 0


def install() -> None:
    python = VENV / "bin" / "python"
    if not has_pip(python):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    for packages in STEPS:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", "constraints.txt", *packages],
                       check=True, cwd=ROOT)
    STAMP.touch()


def main() -> int:
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another make is installing {VENV.name}: waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date():
            return 0
        try:
            install()
        except subprocess.CalledProcessError as error:
            print(f"error: `{' '.join(map(str, error.cmd))}` failed (exit {error.returncode}); fix what it "
                  "printed above, then run make again", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
