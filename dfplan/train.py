"""Training: windows of expert data -> Diffusion Forcing loss -> checkpoints (nanoGPT-style loop).

`model_kind="diffuser"` (`dfplan train TASK --model diffuser`) trains the Diffuser baseline's
temporal U-Net (dfplan.temporal_unet) in the same loop: same windows (one env step per row, the
window is the plan horizon), optimizer, EMA, checkpoints, resume and DDP; only the model and the
loss (`diffuser_loss`: one level per window, first and last states inpainted) differ.

One pass of the loop: sample B windows (never across episodes), give every token of every window
its own uniformly drawn noise level, noise the tokens, predict x0 (or eps / v), MSE, AdamW step
with linear warm-up and gradient clipping, optional EMA. Rank 0 logs `metrics.jsonl`, draws
`curve.png` and writes `latest.*` checkpoints atomically; `resume=True` continues a run exactly
(on CPU with a fixed seed, N steps + N resumed steps give the same weights as 2N steps).

Under `torchrun --nproc_per_node N` (RANK / WORLD_SIZE set) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA) and rank r samples with seed + r.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from dfplan import diffusion, recipe
from dfplan.checkpoint import (
    MODEL_KINDS,
    SHIPPED_SUFFIX,
    atomic_write_bytes,
    atomic_write_files,
    checkpoint_files,
    ensure_writable_dir,
    flatten_optimizer,
    load_checkpoint,
    load_resume,
    remove_stale_temps,
    resume_files,
    resume_stem,
    unflatten_optimizer,
)
from dfplan.envs.tasks import get_task
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.model import DiffusionForcingModel, ModelConfig, frames_to_tokens
from dfplan.normalizer import Normalizer
from dfplan.temporal_unet import TemporalUNet, UNetConfig, inpaint, window_to_plan

CHECKPOINT_NAME = "latest"


@dataclass
class TrainConfig:
    task: str = "maze2d-umaze"  # CLI task name; its maze picks the defaults in RECOMMENDED
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
    model_kind: str = "df"  # "df": the DF transformer; "diffuser": the temporal U-Net baseline
    model: ModelConfig | UNetConfig = field(default_factory=ModelConfig)  # model_kind's config

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known and k != "model"}
        config_cls = MODEL_KINDS[d.get("model_kind", "df")][0]
        return cls(**kwargs, model=config_cls(**d.get("model", {})))


def recipe_configs(task: str, kind: str = "df") -> list[TrainConfig]:
    """The training stages of the task's recipe (dfplan/recipes/MAZE.json) for a model kind:
    stage 1 trains from scratch, each later one resumes the run with its changes."""
    entry = recipe.model_recipe(get_task(task).maze, kind)
    model_cls = MODEL_KINDS[kind][0]
    model = model_cls(**entry["model"])
    stages, fields_so_far = [], {}
    for stage in entry["stages"]:
        fields_so_far.update(stage)
        stages.append(TrainConfig(task=task, model_kind=kind, model=model, **fields_so_far))
    return stages


def recommended_config(task: str, kind: str = "df") -> TrainConfig:
    """The first training stage of the task's recipe for a model kind."""
    return recipe_configs(task, kind)[0]


def dfplan_home() -> Path:
    return Path(os.environ.get("DFPLAN_HOME", "~/.cache/dfplan")).expanduser()


def default_out(task: str, kind: str = "df") -> Path:
    """$DFPLAN_HOME/runs/TASK (TASK-diffuser for the baseline, named as its shipped stem)."""
    return dfplan_home() / "runs" / (task + SHIPPED_SUFFIX[kind])


# -- data ------------------------------------------------------------------------------------
def dataset_fingerprint(data: Trajectories) -> str:
    """Short hash of observations, actions, episode ends and goal labels (when the data has
    them): same data, same fingerprint."""
    h = hashlib.sha256()
    arrays = [data.observations, data.actions, data.episode_bounds()]
    if "goal" in data.infos:
        arrays.append(data.infos["goal"])
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def dataset_goals(data: Trajectories) -> np.ndarray | None:
    """(N, 2) goal position per row (the target the data was heading for), or None."""
    goal = data.infos.get("goal")
    if goal is None:
        return None
    goal = np.asarray(goal, dtype=np.float32)
    if goal.shape != (len(data), 2):
        raise UserError(
            f"the dataset's infos/goal has shape {goal.shape}, expected ({len(data)}, 2)"
        )
    return goal


class WindowSampler:
    """Uniformly drawn stride-1 windows of `window` frames that never cross an episode end.

    Frame i of an episode is [obs_{i+1}, action_i] (normalised), so an episode of L rows has L - 1
    frames and L - window valid starts. `sample(B)` returns first_obs (B, obs_dim), the
    observation before the window's first frame, tokens (B, window / frame_stack, token_dim) and
    goals (B, window / frame_stack, 2): each token's goal is the normalised goal label of the row
    its first frame starts from (None when the data has no goal labels). Its randomness is one
    CPU torch.Generator whose state resumes the sampler exactly.
    """

    def __init__(
        self,
        data: Trajectories,
        window: int,
        frame_stack: int,
        normalizer: Normalizer,
        seed: int,
        goals: np.ndarray | None = None,
    ):
        if window < 1 or window % frame_stack:
            raise UserError(f"window ({window}) must be a positive multiple of {frame_stack}")
        bounds = data.episode_bounds()
        lengths = bounds[:, 1] - bounds[:, 0]
        starts = [np.arange(s, e - window) for s, e in bounds if e - s > window]
        if not starts:
            raise UserError(
                f"no episode is long enough for windows of {window} steps (the longest has "
                f"{lengths.max()} rows, {window + 1} needed); use a smaller --window"
            )
        self.window, self.frame_stack = window, frame_stack
        self.starts = torch.from_numpy(np.concatenate(starts))  # (S,) int64 row indices
        obs = torch.from_numpy(normalizer.normalize_obs(data.observations).astype(np.float32))
        act = torch.from_numpy(normalizer.normalize_act(data.actions).astype(np.float32))
        self.obs = obs  # (N, obs_dim)
        # Row t's frame [o_{t+1}, a_t]; rows whose t + 1 is in the next episode are never used.
        self.frames = torch.cat([obs[1:], act[:-1]], dim=1)  # (N - 1, obs_dim + act_dim)
        self.goals = None
        if goals is not None:
            self.goals = torch.from_numpy(normalizer.normalize_goal(goals).astype(np.float32))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        pick = torch.randint(len(self.starts), (batch_size,), generator=self.generator)
        start = self.starts[pick]  # (B,)
        rows = start[:, None] + torch.arange(self.window)  # (B, window)
        tokens = frames_to_tokens(self.frames[rows], self.frame_stack)  # (B, T, token_dim)
        goals = None
        if self.goals is not None:
            goals = self.goals[rows[:, :: self.frame_stack]]  # (B, T, 2)
        return self.obs[start], tokens, goals


# -- the loss --------------------------------------------------------------------------------
def sample_levels(
    shape: tuple[int, int], num_levels: int, generator: torch.Generator, device=None
) -> torch.Tensor:
    """(B, T) levels drawn uniformly from {0, ..., K}, independently per token and per sample.

    Level 0 (clean) is included so the model sees exactly clean context tokens, as the planner
    feeds it once the near future is committed; those tokens carry no loss.
    """
    return torch.randint(0, num_levels + 1, shape, generator=generator, device=device)


def noisy_batch(
    x0: torch.Tensor, abar: torch.Tensor, num_levels: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean tokens (B, T, D) -> (x_noisy (B, T, D), levels (B, T), noise (B, T, D))."""
    levels = sample_levels(x0.shape[:2], num_levels, generator, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return diffusion.q_sample(x0, levels, abar, noise), levels, noise


def diffusion_loss(
    model: DiffusionForcingModel,
    first_obs: torch.Tensor,
    x0: torch.Tensor,
    generator: torch.Generator,
    net: torch.nn.Module | None = None,
    goals: torch.Tensor | None = None,
    goal_dropout: float = 0.0,
) -> torch.Tensor:
    """Plain MSE on the model's parametrisation, averaged over noisy (level > 0) tokens.

    `net` is what runs the forward pass (a DDP wrapper of `model`); `model` gives config and abar.
    goals: (B, T, goal_dim) per-token goals or None; a `goal_dropout` fraction of the windows is
    trained with the "no goal" embedding instead.
    """
    cfg = model.config
    x_noisy, levels, noise = noisy_batch(x0, model.abar, cfg.num_levels, generator)
    has_goal = None
    if goals is not None:
        keep = torch.rand(x0.shape[0], generator=generator, device=x0.device)
        has_goal = keep >= goal_dropout  # (B,)
    pred = (net or model)(x_noisy, levels, first_obs, goals, has_goal).float()  # (B, T, D)
    if cfg.prediction == "x0":
        target = x0
    elif cfg.prediction == "eps":
        target = noise
    else:
        target = diffusion.v_from_x0_eps(x0, noise, levels, model.abar)
    per_token = (pred - target).pow(2).mean(-1)  # (B, T)
    noisy = (levels > 0).float()  # a clean token has nothing to denoise (eps, v undefined)
    return (per_token * noisy).sum() / noisy.sum().clamp(min=1.0)


def diffuser_loss(
    model: TemporalUNet,
    first_obs: torch.Tensor,
    frames: torch.Tensor,
    generator: torch.Generator,
    net: torch.nn.Module | None = None,
    goals: torch.Tensor | None = None,
    goal_dropout: float = 0.0,
) -> torch.Tensor:
    """Diffuser's loss: MSE of the predicted clean plan, with one noise level per window.

    first_obs (B, obs_dim) and frames (B, H, frame_dim) are a WindowSampler batch (frame_stack 1),
    turned into plan rows [o_t, a_t]. As in Diffuser, the first and last states are inpainted
    (set to their true values) in the noisy input and in the prediction, so they carry no loss.
    Goals are ignored: Diffuser's goal is the inpainted last state.
    """
    x0 = window_to_plan(first_obs, frames)  # (B, H, D)
    b, h, _ = x0.shape
    od = model.config.obs_dim
    levels = torch.randint(
        1, model.config.num_levels + 1, (b,), generator=generator, device=x0.device
    )
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_noisy = diffusion.q_sample(x0, levels[:, None].expand(b, h), model.abar, noise)
    first, last = x0[:, 0, :od], x0[:, -1, :od]
    pred = (net or model)(inpaint(x_noisy, first, last), levels).float()
    return (inpaint(pred, first, last) - x0).pow(2).mean()


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


# -- distributed helpers ---------------------------------------------------------------------
def _setup_distributed(device: str) -> tuple[int, int, torch.device, bool]:
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


def _gather(t: torch.Tensor, world: int, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on CPU (RNG states: uint8)."""
    if world == 1:
        return [t.cpu()]
    comm = device if device.type == "cuda" else torch.device("cpu")  # nccl needs CUDA tensors
    local = t.to(comm)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


# -- outputs ---------------------------------------------------------------------------------
def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return records


def write_curve(metrics_path: Path, png_path: Path, title: str) -> None:
    """Loss vs step from metrics.jsonl, as a PNG (no pyplot: no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = _read_metrics(metrics_path)
    if not records:
        return
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (MSE, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())


# -- the training loop -----------------------------------------------------------------------
def train(config: TrainConfig, data: Trajectories, planner: dict | None = None) -> Path:
    """Train (or resume) a Diffusion Forcing model on `data`; returns the checkpoint stem.

    planner: settings written into the checkpoint ("planner", and "planner_tuning" when given),
    so the trained model plans as its recipe says.

    Writes into the run folder: `latest.safetensors` + `latest.json` (the model: EMA weights if
    EMA is on), `latest.resume.*` (optimizer, EMA, RNG, step), `metrics.jsonl`, `curve.png`.
    """
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
    goals = None
    if not diffuser and mcfg.goal_dim:
        goals = dataset_goals(data)
        if goals is None:
            tqdm.write(
                "the dataset has no goal labels (infos/goal): training an unconditional model"
            )
            mcfg = config.model = dataclasses.replace(mcfg, goal_dim=0)
    if (data.obs_dim, data.act_dim) != (mcfg.obs_dim, mcfg.action_dim):
        raise UserError(
            f"the dataset has observations of size {data.obs_dim} and actions of size "
            f"{data.act_dim}; the model expects {mcfg.obs_dim} and {mcfg.action_dim}"
        )
    rank, world, device, started = _setup_distributed(config.device)
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
            state = _load_resume_state(stem, config, fingerprint)
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
            step = _apply_resume_state(state, raw, ema, opt, sampler, noise_gen, rank, world)
        if world > 1:
            dist.barrier()  # every rank has read the old files before rank 0 writes new ones
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            # A run killed mid-save leaves hidden temp files; they hold nothing worth keeping.
            ends = (".safetensors", ".json", ".resume.safetensors", ".resume.json")
            names = [stem.name + end for end in ends] + ["metrics.jsonl", "curve.png"]
            remove_stale_temps(*(out / name for name in names))
            kept = [r for r in _read_metrics(metrics_path) if r["step"] <= step]
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
        if planner is not None:
            meta["planner"] = {k: v for k, v in planner.items() if k != "planner_tuning"}
            if planner.get("planner_tuning"):
                meta["planner_tuning"] = planner["planner_tuning"]

        def save() -> None:
            _save(stem, raw, ema, opt, sampler, noise_gen, meta, step, world, device, is_main)
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


def _save(stem, raw, ema, opt, sampler, noise_gen, meta, step, world, device, is_main) -> None:
    """Checkpoint + resume state. Every rank joins (RNG states are gathered); rank 0 writes."""
    rng = {
        "torch": torch.get_rng_state(),
        "data": sampler.generator.get_state(),
        "noise": noise_gen.get_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    gathered = {name: _gather(t, world, device) for name, t in rng.items()}
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
    # One write for all four files: serialising and syncing end before the first rename, so a
    # kill cannot leave a checkpoint without its matching resume state (short of the renames).
    atomic_write_files({**files, **resume_files(stem, tensors, info)})


def _load_resume_state(stem: Path, config: TrainConfig, fingerprint: str) -> dict:
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


def _apply_resume_state(state, raw, ema, opt, sampler, noise_gen, rank, world) -> int:
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


# -- CLI glue --------------------------------------------------------------------------------
# flag -> TrainConfig field; all default to None so only flags given override the base config.
_TRAIN_FLAGS = {
    "steps": int,
    "batch_size": int,
    "lr": float,
    "warmup": int,
    "weight_decay": float,
    "grad_clip": float,
    "ema_decay": float,
    "final_lr_ratio": float,
    "goal_dropout": float,
    "window": int,
    "seed": int,
    "checkpoint_every": int,
    "log_every": int,
    "out": str,
    "device": str,
    "dataset": str,
}
_MODEL_FLAGS = {
    "n_layer": int,
    "n_head": int,
    "n_embd": int,
    "prediction": str,
    "dropout": float,
}
_UNET_FLAGS = {"dim": int}  # settings of the Diffuser U-Net (--model diffuser)
_CHOICES = {"prediction": ("x0", "eps", "v")}
_HELP = {
    "steps": "total optimizer steps (default: per maze, see dfplan.train.RECOMMENDED)",
    "batch_size": "windows per step and per process (default 64)",
    "lr": "AdamW learning rate (default 4e-4)",
    "warmup": "linear warm-up steps (default 200)",
    "final_lr_ratio": "learning rate at the last step over the peak, cosine decay (default 0.1)",
    "goal_dropout": "fraction of windows trained without their goal (default 0.15)",
    "weight_decay": "AdamW weight decay (default 1e-4)",
    "grad_clip": "gradient norm clip (default 1.0)",
    "ema_decay": "EMA decay of saved weights, 0 = off (default 0)",
    "window": "env steps per training window, a multiple of 10 (default: per maze)",
    "seed": "random seed (default 0)",
    "checkpoint_every": "steps between checkpoints (default 1000)",
    "log_every": "steps between metrics.jsonl records (default 50)",
    "out": "run folder (default: $DFPLAN_HOME/runs/TASK, or TASK-diffuser)",
    "device": "auto, cpu, cuda or cuda:N (default auto)",
    "dataset": "Minari dataset id or folder, or a D4RL .hdf5 file (default: the task's dataset)",
    "n_layer": "transformer blocks (default 4)",
    "n_head": "attention heads (default 4)",
    "n_embd": "transformer width (default 128)",
    "prediction": "what the network predicts: x0, eps or v (default x0)",
    "dropout": "dropout rate (default 0)",
    "dim": "--model diffuser: U-Net channels at full time resolution (default 32)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dfplan train TASK ...`: the task, then optional TrainConfig overrides."""
    parser.add_argument("task", help="task name, e.g. maze2d-umaze, maze2d-large")
    parser.add_argument(
        "--model",
        choices=tuple(MODEL_KINDS),
        default=None,
        help="df: the Diffusion Forcing transformer (default); diffuser: the Diffuser baseline's "
        "temporal U-Net (its defaults: dfplan.train.RECOMMENDED_DIFFUSER; --window is its horizon)",
    )
    for name, kind in {**_TRAIN_FLAGS, **_MODEL_FLAGS, **_UNET_FLAGS}.items():
        flag = "--" + name.replace("_", "-")
        extra = {"choices": _CHOICES[name]} if name in _CHOICES else {}
        parser.add_argument(flag, type=kind, default=None, help=_HELP[name], **extra)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    """`dfplan train`: follow the task's recipe (flags override every stage), or continue a run
    with --resume; load the dataset, train stage by stage. Returns the exit code."""
    from dfplan.envs.datasets import load_trajectories

    task = get_task(args.task)
    kind = args.model or "df"
    out = Path(args.out).expanduser() if args.out else default_out(task.name, kind)
    ensure_writable_dir(out, "--out", "the training run")  # before the dataset loads
    stages = recipe_configs(task.name, kind)
    stored = out / f"{CHECKPOINT_NAME}.json"
    if args.resume and stored.exists():
        try:
            saved_meta = json.loads(stored.read_text())
            saved = TrainConfig.from_dict(saved_meta["train_config"])
            reached = int(saved_meta["train_step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{stored} is corrupt ({e}); start a new run with another --out"
            ) from None
        if args.model is not None and args.model != saved.model_kind:
            raise UserError(
                f"the run in {out} trains a '{saved.model_kind}' model, not '{args.model}'; "
                f"resume it with --model {saved.model_kind}, or start a new run with another --out"
            )
        recipe_run = saved.model_kind == kind and (saved.model, saved.window) == (
            stages[0].model,
            stages[0].window,
        )
        # A run of the recipe continues with its remaining stages; any other run with its
        # own stored settings.
        later = [stage for stage in stages if stage.steps > reached]
        stages = (later or stages[-1:]) if recipe_run else [saved]
    configs = [
        _with_flags(stage, args, task.name, out, resume=args.resume or i > 0)
        for i, stage in enumerate(stages)
    ]
    if configs[0].device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"--device {configs[0].device} requested but no CUDA GPU is available; use cpu"
        )
    planner = recipe.planner_settings(task.maze, configs[0].model_kind)
    data = load_trajectories(configs[0].dataset or task.dataset_id)
    for config in configs:
        if config.resume and stored.exists():
            done = int(json.loads(stored.read_text()).get("train_step", 0))
            if done >= config.steps and config is not configs[-1]:
                continue  # this stage is behind the run already
        stem = train(config, data, planner)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {stem}.safetensors + {stem.name}.json")
    return 0


def _with_flags(
    config: TrainConfig, args: argparse.Namespace, task: str, out: Path, resume: bool
) -> TrainConfig:
    """`config` with the command line's flags applied (model flags checked against its kind)."""
    own, other = (
        (_UNET_FLAGS, _MODEL_FLAGS)
        if config.model_kind == "diffuser"
        else (_MODEL_FLAGS, _UNET_FLAGS)
    )
    for name in other:
        if getattr(args, name) is not None:
            flags = ", ".join("--" + n.replace("_", "-") for n in own)
            raise UserError(
                f"--{name.replace('_', '-')} is not a setting of the {config.model_kind} model; "
                f"its settings are {flags} and --window"
            )
    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    model_overrides = {k: getattr(args, k) for k in own if getattr(args, k) is not None}
    if args.window is not None and config.model_kind == "diffuser":
        model_overrides["horizon"] = args.window  # the U-Net plans as far as it was trained
    elif args.window is not None:  # positions must cover the new window
        model_overrides.setdefault("max_tokens", args.window // config.model.frame_stack)
    return TrainConfig(
        **{
            **asdict(config),
            **overrides,
            "task": task,
            "out": str(out),
            "resume": resume,
            "amp": config.amp and not args.no_amp,
            "progress": not args.no_progress,
            "model": type(config.model)(**{**asdict(config.model), **model_overrides}),
        }
    )
