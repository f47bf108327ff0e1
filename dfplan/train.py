"""Training: windows of expert data -> Diffusion Forcing loss -> checkpoints (nanoGPT-style loop).

`model_kind="diffuser"` (`dfplan train TASK --model diffuser`) trains the Diffuser baseline's
temporal U-Net (dfplan.policies.diffuser_unet) in the same loop: same windows (one env step per
row, the window is the plan horizon), optimizer, EMA, checkpoints, resume and DDP; only the model
and the loss (`diffuser_loss`: one level per window, first and last states inpainted) differ.

One pass of the loop: sample B windows (never across episodes), give every token of every window
its own uniformly drawn noise level, noise the tokens, predict x0 (or eps / v), MSE, AdamW step
with linear warm-up and gradient clipping, optional EMA. Rank 0 logs `metrics.jsonl`, draws
`curve.png` and writes `latest.*` checkpoints atomically; `resume=True` continues a run exactly
(on CPU with a fixed seed, N steps + N resumed steps give the same weights as 2N steps).

Under `torchrun --nproc_per_node N` (RANK / WORLD_SIZE set) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA) and rank r samples with seed + r.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from dfplan import recipe
from dfplan.checkpoint import (
    MODEL_KINDS,
)
from dfplan.distributed import setup_distributed
from dfplan.envs.tasks import get_task
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.files import (
    atomic_write_bytes,
    remove_stale_temps,
)
from dfplan.loss import diffusion_loss
from dfplan.model import ModelConfig
from dfplan.normalizer import Normalizer
from dfplan.policies.diffuser_unet import UNetConfig, diffuser_loss
from dfplan.routes import landmarks_meta
from dfplan.run_state import apply_state, finish_interrupted_save, load_state, save_state
from dfplan.train_log import read_metrics, write_curve
from dfplan.windows import WindowSampler, dataset_fingerprint, training_goals

CHECKPOINT_NAME = "latest"


@dataclass
class TrainConfig:
    task: str = "maze2d-umaze"  # CLI task name; `dfplan train` fills the rest from its recipe
    dataset: str | None = None  # Minari id, folder or D4RL hdf5; None: the task's dataset id
    steps: int = 20_000  # total optimizer steps (a resumed run continues up to this)
    batch_size: int = 64  # windows per step and per rank
    lr: float = 4e-4  # AdamW peak learning rate (the probe's; official 2e-4 at batch 2048)
    warmup: int = 200  # linear warm-up steps, then cosine decay to final_lr_ratio * lr at `steps`
    final_lr_ratio: float = 0.1  # learning rate at the last step over the peak (1 = constant)
    goal_dropout: float = 0.15  # fraction of windows trained without their goal ("no goal"
    # embedding), so one checkpoint samples with and without the goal (classifier-free guidance)
    weight_decay: float = 1e-4  # AdamW, on matrices only (not biases, norms)
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.0  # EMA of weights saved instead of raw weights; 0 = off (official)
    window: int = 300  # env steps per training window; a multiple of model.frame_stack
    seed: int = 0  # model init, window and noise sampling (rank r uses seed + r)
    checkpoint_every: int = 1000  # steps between `latest.*` checkpoints (and one at the end)
    log_every: int = 50  # steps between metrics.jsonl records
    out: str | None = None  # run folder; None: $DFPLAN_HOME/runs/<task>
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    resume: bool = False  # continue the run in `out` from its latest checkpoint
    progress: bool = True  # tqdm bar on rank 0
    # Data without goal labels (OGBench's): goals relabelled from each episode's future, in
    # segments of (min, max) steps that head for their last state; None: the data's labels.
    hindsight_segment: list[int] | None = None
    # With hindsight goals: the waypoint graph of the data (dfplan.waypoints.WaypointConfig
    # fields), shipped in the checkpoint, that routes the planner across the maze.
    waypoints: dict | None = None
    model_kind: str = "df"  # "df": the DF transformer; "diffuser": the temporal U-Net baseline;
    # "gcbc": the goal-conditioned behaviour cloning MLP (policies/gcbc.py)
    model: ModelConfig | UNetConfig = field(default_factory=ModelConfig)  # model_kind's config

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known and k != "model"}
        config_cls = MODEL_KINDS[d.get("model_kind", "df")][0]
        return cls(**kwargs, model=config_cls(**d.get("model", {})))


def waypoint_meta(data: Trajectories, settings: dict) -> dict:
    """The data's waypoint graph as a checkpoint JSON stores it."""
    from dfplan.waypoints import WaypointConfig, WaypointGraph

    try:
        config = WaypointConfig(**settings)
        graph = WaypointGraph.build(data.observations[:, :2], data.episode_bounds(), config)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad waypoints settings {settings}: {e}") from None
    return graph.to_meta()


def recipe_configs(task: str, name: str = "df") -> list[TrainConfig]:
    """The training stages of one model of the task's recipe (dfplan/recipes/MAZE.json; `name`
    from recipe.MODELS): stage 1 trains from scratch, each later one resumes with its changes."""
    entry = recipe.model_recipe(get_task(task).recipe, name)
    kind = recipe.MODELS[name][0]
    model_cls = MODEL_KINDS[kind][0]
    model = model_cls(**entry["model"])
    stages, fields_so_far = [], {}
    for stage in entry["stages"]:
        fields_so_far.update(stage)
        stages.append(TrainConfig(task=task, model_kind=kind, model=model, **fields_so_far))
    return stages


def recommended_config(task: str, name: str = "df") -> TrainConfig:
    """The first training stage of one model of the task's recipe."""
    return recipe_configs(task, name)[0]


def dfplan_home() -> Path:
    return Path(os.environ.get("DFPLAN_HOME", "~/.cache/dfplan")).expanduser()


def default_out(task: str, name: str = "df") -> Path:
    """$DFPLAN_HOME/runs/TASK, or TASK-paper, TASK-diffuser: named as the shipped stem."""
    return dfplan_home() / "runs" / (task + recipe.MODELS[name][1])


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up from lr / warmup to lr over `warmup` steps, then cosine decay to
    final_lr_ratio * lr at `steps` (the probe's schedule: the score rose with the decayed rate)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(config.steps - config.warmup, 1)
    progress = min(1.0, (step - config.warmup) / span)
    floor = config.final_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))


def train(config: TrainConfig, data: Trajectories, planner_meta: dict | None = None) -> Path:
    """Train (or resume) a Diffusion Forcing model on `data`; returns the checkpoint stem.

    planner_meta: entries written into the checkpoint JSON as they are ("planner" settings and
    the like, see `recipe.planner_meta`), so the trained model plans as its recipe says.

    Writes into the run folder: `latest.safetensors` + `latest.json` (the model: EMA weights if
    EMA is on), `latest.resume.*` (optimizer, EMA, RNG, step), `metrics.jsonl`, `curve.png`.
    """
    if config.model_kind == "gcbc":  # a plain regression: its own short loop
        from dfplan.policies.gcbc import train_gcbc

        return train_gcbc(config, data, planner_meta)
    task = get_task(config.task)
    mcfg = config.model
    try:
        mcfg.validate()
    except ValueError as e:
        raise UserError(f"invalid model settings: {e}") from None
    for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
        if getattr(config, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be >= 1, got {getattr(config, name)}")
    for name in ("lr", "weight_decay", "grad_clip", "warmup"):
        if getattr(config, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    if config.model_kind not in MODEL_KINDS or not isinstance(
        mcfg, MODEL_KINDS[config.model_kind][0]
    ):
        raise UserError(f"unknown model '{config.model_kind}'; use {' or '.join(MODEL_KINDS)}")
    diffuser = config.model_kind == "diffuser"
    if not diffuser and not 0 <= mcfg.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {mcfg.dropout}")
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        raise UserError(f"unknown device '{config.device}'; use auto, cpu, cuda or cuda:N")
    if diffuser and config.window != mcfg.horizon:
        raise UserError(f"--window {config.window} must equal the U-Net's horizon {mcfg.horizon}")
    tokens_fit = diffuser or (
        config.window % mcfg.frame_stack == 0
        and config.window // mcfg.frame_stack <= mcfg.max_tokens
    )
    if not tokens_fit:
        raise UserError(
            f"--window {config.window} must be a multiple of {mcfg.frame_stack} and at most "
            f"{mcfg.max_tokens * mcfg.frame_stack} (max_tokens x frame_stack)"
        )
    for name in ("goal_dropout", "final_lr_ratio"):
        if not 0 <= getattr(config, name) <= 1:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be in [0, 1], got {getattr(config, name)}")
    goals, labelled = None, False
    if not diffuser and mcfg.goal_dim:
        goals, labelled = training_goals(data, config.hindsight_segment, config.seed)
        if goals is None:
            tqdm.write(
                "the dataset has no goal labels (infos/goal): training an unconditional model"
            )
            mcfg = dataclasses.replace(mcfg, goal_dim=0)
            config = dataclasses.replace(config, model=mcfg)  # the caller's config stays as it was
    if (data.obs_dim, data.act_dim) != (mcfg.obs_dim, mcfg.action_dim):
        raise UserError(
            f"the dataset has observations of size {data.obs_dim} and actions of size "
            f"{data.act_dim}; the model expects {mcfg.obs_dim} and {mcfg.action_dim}"
        )
    rank, world, device, started = setup_distributed(config.device)
    out = Path(config.out).expanduser() if config.out else default_out(task.name, config.model_kind)
    stem = out / CHECKPOINT_NAME
    metrics_path = out / "metrics.jsonl"
    fingerprint = dataset_fingerprint(data)
    is_main = rank == 0
    try:
        # Everything is built from the seed first, then overwritten by the resume state.
        torch.manual_seed(config.seed)
        raw = MODEL_KINDS[config.model_kind][1](mcfg).to(device)
        ema = copy.deepcopy(raw).requires_grad_(False) if config.ema_decay > 0 else None
        opt = make_optimizer(raw, config)
        torch.manual_seed(config.seed + rank)  # dropout: same init everywhere, masks per rank
        step = 0
        normalizer = Normalizer.from_trajectories(data)
        noise_gen = torch.Generator(device).manual_seed(config.seed + rank)
        if config.resume:
            if is_main:
                finish_interrupted_save(stem)
            if world > 1:
                dist.barrier()  # rank 0 has finished an interrupted save before anyone reads
            state = load_state(stem, config, fingerprint)
            normalizer = state["normalizer"]
        elif stem.with_name(stem.name + ".json").exists():
            raise UserError(
                f"{out} already holds a training run; pass --resume to continue it, "
                "or choose another --out (or delete that folder)"
            )
        sampler = WindowSampler(
            data, config.window, mcfg.frame_stack, normalizer, config.seed + rank, goals
        )
        if config.resume:
            step = apply_state(state, raw, ema, opt, sampler, noise_gen, rank, world)
        if world > 1:
            dist.barrier()  # every rank has read the old files before rank 0 writes new ones
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            # A run killed mid-save leaves hidden temp files; they hold nothing worth keeping.
            ends = (".safetensors", ".json", ".resume.safetensors", ".resume.json")
            names = [stem.name + end for end in ends] + ["metrics.jsonl", "curve.png"]
            remove_stale_temps(*(out / name for name in names))
            kept = [r for r in read_metrics(metrics_path) if r["step"] <= step]
            atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        net = raw
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(raw, device_ids=ids)
        use_amp = config.amp and device.type == "cuda"
        meta = {
            "task": task.name,
            "dataset": config.dataset or task.dataset_id,
            "dataset_fingerprint": fingerprint,
            "normalizer": normalizer.to_dict(),
            "window": config.window,
            "train_config": asdict(config),
        }
        meta.update(planner_meta or {})
        if labelled:  # route search's candidate subgoals: the goals the data drove to
            meta["landmarks"] = landmarks_meta(goals)
        if config.waypoints is not None:
            meta["waypoints"] = waypoint_meta(data, config.waypoints)

        def save() -> None:
            save_state(stem, raw, ema, opt, sampler, noise_gen, meta, step, world, device, is_main)
            if is_main:
                title = "Diffuser (temporal U-Net)" if diffuser else "Diffusion Forcing"
                write_curve(metrics_path, out / "curve.png", f"{task.name}: {title}")

        bar = tqdm(
            total=config.steps,
            initial=step,
            disable=not (config.progress and is_main),
            unit="step",
            desc=f"train {task.name}",
        )
        raw.train()
        loss_sum = torch.zeros((), device=device)
        if step >= config.steps and is_main:
            tqdm.write(f"{stem} is already at step {step} (>= {config.steps}): nothing to do")
        tic, last_step = time.perf_counter(), step
        while step < config.steps:
            first_obs, tokens, goals = sampler.sample(config.batch_size)
            first_obs, tokens = first_obs.to(device), tokens.to(device)
            goals = goals.to(device) if goals is not None else None
            lr = lr_at(step, config)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = (diffuser_loss if diffuser else diffusion_loss)(
                    raw, first_obs, tokens, noise_gen, net, goals, config.goal_dropout
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), config.grad_clip)
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), raw.parameters(), strict=True):
                        pe.lerp_(p, 1.0 - config.ema_decay)
            step += 1
            loss_sum += loss.detach()
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                if world > 1:
                    dist.all_reduce(loss_sum)
                mean_loss = loss_sum.item() / (world * (step - last_step))
                seconds = time.perf_counter() - tic
                rate = (step - last_step) / max(seconds, 1e-9)
                record = {
                    "step": step,
                    "loss": mean_loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "steps_per_s": rate,
                    "samples_per_s": rate * config.batch_size * world,
                    "time": time.time(),
                }
                if is_main:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                loss_sum.zero_()
                tic, last_step = time.perf_counter(), step
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
        bar.close()
        if world > 1:
            dist.barrier()
        return stem
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
