"""Data-parallel training under torchrun: process-group set-up and the few collectives the trainer needs.

`torchrun --nproc-per-node N -m charrnn train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment. Each owns a disjoint slice of the training streams; gradients are
averaged by DistributedDataParallel, so N processes with batch B/N each take the same steps as one
process with batch B. Rank 0 alone evaluates, writes checkpoints and logs, and decides when to stop.
Without those variables every function here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charrnn.core.errors import CharRNNError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CharRNNError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    return World(rank, size, local)


def init(world: World, device: torch.device) -> bool:
    """Join the process group (NCCL between GPUs, gloo between CPU processes); True if this call created it."""
    if world.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)
        return True
    return False


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def broadcast_floats(world: World, values: list[float], device: torch.device) -> list[float]:
    """Rank 0's values, on every rank."""
    if not world.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def broadcast_flags(world: World, flags: list[bool], device: torch.device) -> list[bool]:
    """Rank 0's flags, on every rank: clocks and signals differ between processes, rank 0 decides."""
    return [v != 0.0 for v in broadcast_floats(world, [float(f) for f in flags], device)]


def mean(world: World, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks."""
    if not world.active:
        return value
    t = value.detach().clone()
    dist.all_reduce(t)
    return t / world.size


def gather_rows(world: World, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Every rank's (L, b, H) hidden-state rows, concatenated in rank order into (L, B, H)."""
    if not world.active:
        return state
    out = []
    for s in state:
        parts = [torch.empty_like(s) for _ in range(world.size)]
        dist.all_gather(parts, s.contiguous())
        out.append(torch.cat(parts, dim=1))
    return tuple(out)


def gather_objects(world: World, obj) -> list:
    """`obj` from every rank, in rank order."""
    if not world.active:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
