"""Which process this is. One process without torchrun is world size 1 on the same code path.

The engine asks :func:`current` once and passes the answer down; nothing here
holds global state. Under ``torchrun`` the multi-GPU layer initialises the
process group before the engine starts; only the process with ``is_main``
writes files, logs and draws progress bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

__all__ = ["DistInfo", "current"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """This process's rank and the world size (0 and 1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()
