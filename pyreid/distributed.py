"""Which process this is, and the few collectives pyreid needs under ``torch.distributed``.

One process without ``torchrun`` is world size 1 on the same code path: every
function here is then a no-op that returns its input. Under ``torchrun``
(``torchrun --nproc-per-node N -m pyreid train ...``), :func:`init_from_env`
starts the process group from the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...). Nothing here holds
global state beyond torch.distributed's own process group.

Collectives run on the backend's device: CUDA tensors for NCCL, CPU tensors
for gloo; results come back on the input's device.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "current", "init_from_env", "shutdown", "all_gather_rows", "broadcast", "all_reduce_sum",
           "gather_objects_equal"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> DistInfo:
    """This process's rank, world size and local rank (0, 1, 0 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def init_from_env(use_cuda: bool, timeout_minutes: float = 30.0) -> DistInfo:
    """Start the process group when torchrun launched several processes (``WORLD_SIZE`` > 1).

    NCCL when training on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on
    CPU. Returns :func:`current` (world size 1 when there is nothing to start).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return current()


def shutdown() -> None:
    """Destroy the process group :func:`init_from_env` started (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(t: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0 in rank order; ranks may hold different row counts."""
    if not _active():
        return t
    device = _comm_device(t)
    x = t.to(device)
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=device, dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, counts)]).to(t.device)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (same shape and dtype everywhere)."""
    if not _active():
        return t
    x = t.to(_comm_device(t)).contiguous()
    dist.broadcast(x, src)
    return x.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``t``."""
    if not _active():
        return t
    x = t.to(_comm_device(t)).clone()
    dist.all_reduce(x)
    return x.to(t.device)


def gather_objects_equal(values: List[float]) -> Optional[List[List[float]]]:
    """Every rank's list of numbers (for consistency checks); None without a process group."""
    if not _active():
        return None
    out: List = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return out
