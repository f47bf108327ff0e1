"""A training run's state on disk: the checkpoint plus everything to continue it exactly
(optimizer, EMA, every rank's random streams, step), saved together and checked on resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from dfplan.checkpoint import (
    SUFFIXES,
    checkpoint_files,
    file_save_id,
    flatten_optimizer,
    load_checkpoint,
    load_resume,
    resume_files,
    resume_stem,
    unflatten_optimizer,
)
from dfplan.distributed import gather
from dfplan.errors import UserError
from dfplan.files import atomic_write_files, temp_files
from dfplan.normalizer import Normalizer

if TYPE_CHECKING:
    from dfplan.train import TrainConfig


def save_state(stem, raw, ema, opt, sampler, noise_gen, meta, step, world, device, is_main) -> None:
    """Checkpoint + resume state. Every rank joins (RNG states are gathered); rank 0 writes."""
    rng = {
        "torch": torch.get_rng_state(),
        "data": sampler.generator.get_state(),
        "noise": noise_gen.get_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    gathered = {name: gather(t, world, device) for name, t in rng.items()}
    if not is_main:
        return
    model = ema if ema is not None else raw
    files, save_id = checkpoint_files(stem, model, {**meta, "train_step": step})
    tensors = {f"model.{k}": v for k, v in raw.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_info = flatten_optimizer(opt.state_dict())
    tensors.update(opt_tensors)
    for name, parts in gathered.items():
        tensors.update({f"rng.{name}.rank{r}": t for r, t in enumerate(parts)})
    info = {
        "step": step,
        "world_size": world,
        "checkpoint_save_id": save_id,
        "optimizer": opt_info,
        "train_config": meta["train_config"],
    }
    # One write for all four files, all carrying one save id: serialising and syncing end before
    # the first rename, so a kill during the renames leaves the rest as complete temp files
    # (`finish_interrupted_save`), and a kill before them leaves the last save as it was.
    atomic_write_files({**files, **resume_files(stem, tensors, info, save_id)})


def state_files(stem: Path) -> list[Path]:
    """The four files of a save, in the order `save_state` renames them into place."""
    rstem = resume_stem(stem)
    return [stem.with_name(s.name + end) for s in (stem, rstem) for end in SUFFIXES]


def finish_interrupted_save(stem: Path) -> None:
    """Rename into place what a kill during `save_state`'s renames left as temp files.

    STEM.safetensors is renamed first, so after such a kill it carries the new save id while
    later files still carry the old one (or are missing), and each of those has a temp file
    with the new id: complete, since every temp is synced before the first rename. Anything
    else (a kill before the renames, files from before shared save ids) is left as it is.
    """
    paths = state_files(stem)
    new = file_save_id(paths[0], ".safetensors") if paths[0].is_file() else None
    if new is None:
        return
    for path in paths[1:]:
        suffix = path.suffix
        if path.is_file() and file_save_id(path, suffix) == new:
            continue
        for tmp in temp_files(path):
            if file_save_id(tmp, suffix) == new:
                os.replace(tmp, path)
                break


def load_state(stem: Path, config: TrainConfig, fingerprint: str) -> dict:
    if not (stem.parent / f"{resume_stem(stem).name}.json").exists():
        raise UserError(
            f"nothing to resume in {stem.parent} (no {stem.name}.resume.json); "
            "drop --resume to start a new run"
        )
    loaded, meta = load_checkpoint(stem, task=config.task, kind=config.model_kind)
    tensors, info = load_resume(stem)
    if info.get("checkpoint_save_id") != meta.get("save_id"):
        raise UserError(
            f"{stem}.resume.* does not belong to {stem}.* (an interrupted save?); "
            "start a new run with another --out"
        )
    if loaded.config != config.model:  # dataclasses: equal settings, whatever JSON made of them
        raise UserError(
            f"the run in {stem.parent} was trained with model settings {meta['config']}; "
            "resume it with the same settings, or start a new run with another --out"
        )
    if meta.get("dataset_fingerprint") != fingerprint:
        raise UserError(
            f"the run in {stem.parent} was trained on other data (fingerprint "
            f"{meta.get('dataset_fingerprint')}, this dataset {fingerprint}); resume it on the "
            "same --dataset, or start a new run with another --out"
        )
    return {
        "tensors": tensors,
        "info": info,
        "normalizer": Normalizer.from_dict(meta["normalizer"]),
    }


def apply_state(state, raw, ema, opt, sampler, noise_gen, rank, world) -> int:
    tensors, info = state["tensors"], state["info"]
    device = next(raw.parameters()).device

    def sub(prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    raw.load_state_dict(sub("model."))
    if ema is not None:
        saved = sub("ema.")
        ema.load_state_dict(saved if saved else raw.state_dict())  # EMA newly switched on
    opt_state = unflatten_optimizer(tensors, info["optimizer"])
    opt.load_state_dict(opt_state)  # moves the state to the parameters' device
    step = int(info["step"])
    if info.get("world_size") == world:
        torch.set_rng_state(tensors[f"rng.torch.rank{rank}"])
        sampler.generator.set_state(tensors[f"rng.data.rank{rank}"])
        noise_gen.set_state(tensors[f"rng.noise.rank{rank}"].to(noise_gen.get_state().device))
        if device.type == "cuda" and f"rng.cuda.rank{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{rank}"], device)
    else:
        # Another number of ranks: the per-rank streams cannot continue; fresh ones, still
        # distinct per rank and per resume point. Training resumes, no longer bit-exact.
        tqdm.write(
            f"resuming a {info.get('world_size')}-rank run on {world} ranks: "
            "data order differs from an uninterrupted run"
        )
        reseed = (sampler.generator.initial_seed() + 1_000_003 * step) % 2**63
        sampler.generator.manual_seed(reseed)
        noise_gen.manual_seed(reseed + 1)
    return step
