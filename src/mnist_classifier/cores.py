"""How many CPU cores this process may use: its affinity, not the machine's count.

A container started with `--cpuset-cpus`, `taskset`, or a batch scheduler gives a process
fewer cores than `os.cpu_count()` reports; sizing thread pools or worker processes by the
machine's count then oversubscribes the cores it has, and each extra `serve` worker costs its
memory for nothing. Free of torch, so that the server's ONNX workers do not import it.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (Linux's affinity mask), else the machine's count; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
