"""torchrun support for training: one process per rank (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from dfplan.errors import UserError


def setup_distributed(device: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether we initialised the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} requested but no CUDA GPU is available; use cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # one GPU per process: LOCAL_RANK's under torchrun
        local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device()
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        started = True
    return rank, world, dev, started


def gather(t: torch.Tensor, world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on CPU (RNG states: uint8)."""
    if world == 1:
        return [t.cpu()]
    comm = device if device.type == "cuda" else torch.device("cpu")  # nccl needs CUDA tensors
    local = t.to(comm)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]
