"""`dfplan train TASK`: the command line around the trainer. It follows the task's recipe stage by
stage (flags override every stage) or continues a run with --resume, and writes the recipe's
planner settings into the checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from dfplan import recipe
from dfplan.envs.tasks import get_task
from dfplan.errors import UserError
from dfplan.files import ensure_writable_dir
from dfplan.train import CHECKPOINT_NAME, TrainConfig, default_out, recipe_configs, train

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
    "goal_offset_octaves": int,
}
_UNET_FLAGS = {"dim": int}  # settings of the Diffuser U-Net (--model diffuser)
_CHOICES = {"prediction": ("x0", "eps", "v")}
_HELP = {
    "steps": "total optimizer steps (default: the recipe's)",
    "batch_size": "windows per step and per process (default: the recipe's)",
    "lr": "AdamW learning rate (default: the recipe's)",
    "warmup": "linear warm-up steps (default 200)",
    "final_lr_ratio": "learning rate at the last step over the peak, cosine decay (default 0.1)",
    "goal_dropout": "fraction of windows trained without their goal (default 0.15)",
    "weight_decay": "AdamW weight decay (default 1e-4)",
    "grad_clip": "gradient norm clip (default 1.0)",
    "ema_decay": "EMA decay of saved weights, 0 = off (default 0)",
    "window": "env steps per training window, a multiple of 10 (default: the recipe's)",
    "seed": "random seed (default 0)",
    "checkpoint_every": "steps between checkpoints (default 1000)",
    "log_every": "steps between metrics.jsonl records (default 50)",
    "out": "run folder (default: $DFPLAN_HOME/runs/TASK, or TASK-diffuser)",
    "device": "auto, cpu, cuda or cuda:N (default auto)",
    "dataset": "Minari dataset id or folder, or a D4RL .hdf5 file (default: the task's dataset)",
    "n_layer": "transformer blocks (default: the recipe's)",
    "n_head": "attention heads (default: the recipe's)",
    "n_embd": "transformer width (default: the recipe's)",
    "prediction": "what the network predicts: x0, eps or v (default x0)",
    "dropout": "dropout rate (default 0)",
    "goal_offset_octaves": "octaves of the goal-offset features, 0 = off (default: the recipe's)",
    "dim": "--model diffuser: U-Net channels at full time resolution (default 32)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `dfplan train TASK ...`: the task, then optional TrainConfig overrides."""
    parser.add_argument("task", help="task name, e.g. maze2d-umaze, maze2d-large")
    parser.add_argument(
        "--model",
        choices=tuple(recipe.MODELS),
        default=None,
        help="which model of the recipe: df, the goal-conditioned Diffusion Forcing transformer "
        "(default); df-paper, the unconditional one of the paper's setting, where the recipe has "
        "it; diffuser, the Diffuser baseline's temporal U-Net (--window is its horizon); gcbc, "
        "goal-conditioned behaviour cloning (an MLP, minutes)",
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
    name = args.model or "df"  # which model of the recipe
    kind = recipe.MODELS[name][0]
    out = Path(args.out).expanduser() if args.out else default_out(task.name, name)
    ensure_writable_dir(out, "--out", "the training run")  # before the dataset loads
    stages = recipe_configs(task.name, name)
    stored = out / f"{CHECKPOINT_NAME}.json"
    reached = 0  # steps the run in `out` has trained
    if args.resume and stored.exists():
        try:
            saved_meta = json.loads(stored.read_text())
            saved = TrainConfig.from_dict(saved_meta["train_config"])
            reached = int(saved_meta["train_step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{stored} is corrupt ({e}); start a new run with another --out"
            ) from None
        if args.model is not None and kind != saved.model_kind:
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
    planner_meta = recipe.planner_meta(task.recipe, name)
    data = load_trajectories(configs[0].dataset or task.dataset_id)
    for config in configs:
        if reached >= config.steps and config is not configs[-1]:
            continue  # flags made this stage end where the run already is
        stem = train(config, data, planner_meta)
        reached = max(reached, config.steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {stem}.safetensors + {stem.name}.json")
    return 0


def _with_flags(
    config: TrainConfig, args: argparse.Namespace, task: str, out: Path, resume: bool
) -> TrainConfig:
    """`config` with the command line's flags applied (model flags checked against its kind)."""
    own, other = {
        "diffuser": (_UNET_FLAGS, _MODEL_FLAGS),
        "gcbc": ({}, {**_MODEL_FLAGS, **_UNET_FLAGS}),
    }.get(config.model_kind, (_MODEL_FLAGS, _UNET_FLAGS))
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
    elif args.window is not None and config.model_kind == "df":  # positions cover the window
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
