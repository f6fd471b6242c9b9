"""torchrun support: who am I, which device is mine, and how ranks agree.

`torchrun --nproc_per_node=N -m mnist_classifier train ...` sets RANK, WORLD_SIZE
and LOCAL_RANK; a plain `mnist-classifier train` is the world_size == 1 case of the
same code. CPU ranks talk over gloo, GPU ranks over NCCL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .cores import usable_cores
from .hardware import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    main_pid: int | None = None  # rank 0's process, on every rank: whether it still lives tells why a rank is stopped

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun); readable before `setup`."""
    return int(os.environ.get("RANK", "0"))


def setup(device_choice: str = "auto", num_threads: int | None = None) -> Context:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launched_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    if num_threads:
        torch.set_num_threads(num_threads)
    elif device.type == "cpu" and world_size > 1:
        # Ranks on one machine share its cores; oversubscribing them is slower than idle.
        # (One process keeps torch's default: one thread per physical core.)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        torch.set_num_threads(max(1, usable_cores() // max(1, local_world)))
    main_pid = int(gather_scalar(float(os.getpid()))[0]) if world_size > 1 else os.getpid()
    return Context(rank, local_rank, world_size, device, main_pid)


def main_rank_gone(ctx: Context) -> bool:
    """Whether rank 0 has ended (killed, out of memory) while this rank lives on. torchrun then
    stops the others with SIGTERM, as it does when the whole job is stopped; only here no rank 0
    is left to name the resume point, so another rank must."""
    if ctx.is_main or ctx.main_pid is None:
        return False
    try:
        os.kill(ctx.main_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user took its number: rank 0 is gone
        return True
    try:  # Linux: a zombie (ended, not yet reaped by torchrun) still answers the signal above
        with open(f"/proc/{ctx.main_pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# What gloo and NCCL say when a peer process is gone (killed, out of memory, crashed).
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted")


def lost_a_peer(error: BaseException, ctx: Context) -> str | None:
    """Why a collective failed when it was another process of this run ending, in a few words
    (gloo's own message names a C++ source line); None for any other error."""
    if not ctx.distributed:
        return None
    sign = next((sign for sign in PEER_GONE if sign in str(error)), None)
    if sign is None and not isinstance(error, getattr(dist, "DistError", ())):
        return None
    return sign.lower() if sign else type(error).__name__


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over all ranks (identity in a single process)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_scalar(value: float) -> list[float]:
    """Every rank's value of a float, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    values = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(values, torch.tensor([value], dtype=torch.float64))
    return [v.item() for v in values]


def all_succeeded(succeeded: bool) -> bool:
    """Whether every rank's `succeeded` is true, on every rank: a step only one rank takes (a save,
    the checkpoint claim) fails for all together, each rank still at the same collective."""
    if not dist.is_initialized():
        return succeeded
    failures = torch.tensor([0.0 if succeeded else 1.0])
    dist.all_reduce(failures, op=dist.ReduceOp.SUM)
    return failures.item() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
