"""The processes of a ``torchrun`` launch, as the training loop needs them.

``torchrun --nproc_per_node=N train.py ...`` starts N copies of the script with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment. ``start`` joins them into one process
group (NCCL between GPUs, gloo between CPU processes); a plain ``python train.py`` is a group of one,
where every method below is free.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


def world_size() -> int:
    """How many processes torchrun started, on every machine (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """How many processes torchrun started on this machine (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Ranks:
    """This process among its peers; rank 0 (`main`) alone writes files and prints."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the GPU of this process on its machine
    host_group: dist.ProcessGroup | None = None  # gloo: agreements on host values (no GPU involved)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, kind: str) -> torch.device:
        """This process's device of `kind` ("cpu" or "cuda")."""
        return torch.device("cuda", self.local_rank) if kind == "cuda" else torch.device(kind)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor`, summed in place over the processes."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true in any process: every process then takes the same branch (a
        Ctrl-C reaches the processes at slightly different steps)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.host_group)
        return bool(value)

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others do (it unpacks or downloads a dataset once)."""
        if not self.main:
            dist.barrier(group=self.host_group)
        yield
        if self.main and self.world > 1:
            dist.barrier(group=self.host_group)


def start(device_kind: str) -> Ranks:
    """Joins torchrun's processes (backend NCCL on "cuda", gloo on "cpu"); a group of one without it."""
    world = world_size()
    if world == 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        host_group = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
        host_group = dist.group.WORLD
    return Ranks(rank, world, local_rank, host_group)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
