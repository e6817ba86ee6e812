"""Process-group helpers: the same ``ssp_train fit`` runs alone or under ``torchrun``.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the default process group is
created with NCCL on GPUs and gloo on CPUs; each rank trains on its shard of every epoch
(``DistributedSampler``) through ``DistributedDataParallel``. Rank 0 alone validates, logs
and writes checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
import os

import torch
from torch import nn
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    """Global rank (0 when not distributed)."""
    world_size: int
    """Number of processes (1 when not distributed)."""
    local_rank: int
    """Rank on this machine (selects the GPU)."""
    device: torch.device
    """Device this rank computes on."""

    @property
    def distributed(self) -> bool:
        """Return whether a process group with more than one rank is active."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Return whether this is rank 0 (the one that logs and writes)."""
        return self.rank == 0


class DeviceError(ValueError):
    """A device this machine does not have (bad input: the recipe or the flag names it)."""


def device_problem(key: str, pref: str) -> str | None:
    """Return why device ``pref`` (of recipe key or flag ``key``) is unusable here, or None."""
    if not isinstance(pref, str) or not pref.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return (f"{key} is {pref!r} but CUDA is not available on this machine; use "
                f"{key}=cpu or auto")
    index = pref.partition(":")[2]
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        return (f"{key} is {pref!r} but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return None


def resolve_device(pref: str, local_rank: int = 0, key: str = "run.device") -> torch.device:
    """Return the device for ``pref`` ("auto", "cpu", "cuda", "cuda:N").

    A CUDA device this machine lacks raises :class:`DeviceError` naming ``key``.
    """
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(key, pref)
    if problem:
        raise DeviceError(problem)
    if pref.startswith("cuda"):
        return torch.device(pref if ":" in pref else f"cuda:{local_rank}")
    return torch.device("cpu")


def init_distributed(device_pref: str) -> DistInfo:
    """Join the torchrun process group if there is one; return this process's place in it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(info: DistInfo) -> None:
    """Leave the process group (no-op when not distributed)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.distributed:
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Return rank 0's ``flag`` on every rank (e.g. "stop: rank 0 failed validation")."""
    if not info.distributed:
        return flag
    t = torch.tensor([int(flag)], device=info.device if info.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_ranks(info: DistInfo, flag: bool) -> bool:
    """Return whether ``flag`` holds on every rank (e.g. "my loss is finite").

    Each rank must call it at the same point: a rank that stops alone leaves the others
    waiting in their next collective until the process group times out.
    """
    if not info.distributed:
        return flag
    t = torch.tensor([int(flag)], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_over_ranks(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Return the mean of each value over all ranks (for logging)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    dev = info.device if info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def broadcast_buffers(info: DistInfo, module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch
    every rank still holds the statistics of its own last batch; this makes them rank 0's
    (the ones rank 0 validates and checkpoints) before replicas are compared.
    """
    if not info.distributed:
        return
    for buf in module.buffers():
        if buf.device.type == "cpu" or info.device.type == "cuda":
            dist.broadcast(buf.data, src=0)


def parameter_fingerprint(module: nn.Module) -> torch.Tensor:
    """Return a float64 vector (sum, sum of squares per tensor) that tells replicas apart."""
    parts = []
    for t in list(module.parameters()) + list(module.buffers()):
        t = t.detach().double()
        parts.append(torch.stack([t.sum(), t.pow(2).sum()]))
    return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.float64)


def gather_fingerprints(info: DistInfo, module: nn.Module) -> list[torch.Tensor]:
    """Return every rank's :func:`parameter_fingerprint` (one entry when not distributed)."""
    mine = parameter_fingerprint(module)
    if not info.distributed:
        return [mine]
    dev = info.device if info.device.type == "cuda" else torch.device("cpu")
    out = [torch.zeros_like(mine, device=dev) for _ in range(info.world_size)]
    dist.all_gather(out, mine.to(dev))
    return [o.cpu() for o in out]
