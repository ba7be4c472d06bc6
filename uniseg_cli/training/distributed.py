"""Distributed training under ``torchrun``: process group, device, reductions, DDP wrapping.

``init_distributed(device)`` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``);
with ``WORLD_SIZE`` > 1 it starts a process group, **gloo on CPU and NCCL on GPU**, one GPU per
local rank. Without those variables it returns a single-process context and every helper here
is a no-op, so the same code runs alone, under ``torchrun --nproc_per_node=1`` and on many GPUs.

Rules the training code keeps:

- **rank 0 alone writes** artifacts, checkpoints and logs (``ctx.is_main``); the others wait at
  :func:`barrier` where a file must exist before they read it.
- **statistics are summed across ranks** with :func:`all_reduce_sum` / :func:`all_reduce_numpy`
  (confusion matrices, pixel shares, histograms), so every rank decides from the same numbers.
- **each rank reads a distinct shard** of the data: :func:`shard` gives rank r the items
  r, r+W, r+2W, ...; training batches are seeded by (seed, rank, iteration).

**DDP and alternating freezing (decision).** :func:`wrap_ddp` wraps the module anew at every
phase switch, *after* ``requires_grad`` has been set for the phase (see
``training.engine.Trainer``). DDP registers gradient hooks only for the parameters that require
grad when it is built, so a re-wrap per phase keeps ``find_unused_parameters=False`` (no extra
graph traversal each step) while the set of trained parameters changes; frozen parameters get no
hooks and keep ``grad=None``, so AdamW never touches them. Building a DDP wrapper broadcasts
rank 0's parameters and buffers, which also re-synchronises the ranks at every phase start.
``find_unused_parameters=True`` remains available for step functions that skip some trainable
parameters on some iterations.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from uniseg_cli.errors import UsageError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # "gloo" / "nccl" when a process group is up

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def resolve_device(spec: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when a GPU is present, else ``cpu``; also ``cpu``, ``cuda``, ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} CUDA device(s)",
                             hint="start at most one process per GPU (torchrun --nproc_per_node), or use --device cpu.")
        return torch.device(f"cuda:{local_rank}")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: no CUDA device is available on this machine",
                             hint="use --device cpu (or auto).")
        if spec == "cuda":
            return resolve_device("auto", local_rank)
        try:
            idx = int(spec.split(":", 1)[1])
        except (IndexError, ValueError):
            raise UsageError(f"--device {spec!r} is not a device", hint="use auto, cpu, cuda or cuda:N.") from None
        if idx >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)", hint="pick an index below that.")
        return torch.device(f"cuda:{idx}")
    raise UsageError(f"--device {spec!r} is not a device", hint="use auto, cpu, cuda or cuda:N.")


def init_distributed(device: str | None = "auto", timeout_s: int = 1800) -> DistContext:
    """Start (or join) the process group described by torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world <= 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op alone) and return it."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_numpy(a: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """Sum a numpy array over ranks (float64 / int64 kept exact); returns a new array."""
    if not _active():
        return np.array(a, copy=True)
    dev = device if device is not None else (torch.device("cuda", torch.cuda.current_device())
                                            if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def broadcast_tensor(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` on every rank with rank ``src``'s value (in place)."""
    if _active():
        dist.broadcast(t, src=src)
    return t


def broadcast_module_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank's BN
    statistics carry its own last batch; call this to make the ranks identical again.
    """
    if _active():
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of ``items`` (rank r takes r, r+W, ...)."""
    return list(items[ctx.rank :: ctx.world_size])


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap in DDP when distributed and something is trainable; otherwise return ``module`` itself.

    Call again after every change of ``requires_grad`` (the engine does, at each phase start).
    """
    if not ctx.enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    kw = {"device_ids": [ctx.device.index]} if ctx.device.type == "cuda" else {}
    return DDP(module, find_unused_parameters=find_unused_parameters, **kw)


def convert_sync_bn(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """BatchNorm → SyncBatchNorm under multi-GPU DDP (as the reference does in stages 2/3); CPU/gloo keeps plain BN."""
    if ctx.enabled and ctx.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
