"""Fine-tune a shipped goal-conditioned checkpoint briefly, optionally adding goal-offset inputs
or distilling its classifier-free guidance into one pass.

    python -m lab.finetune_probe maze2d-large --out RUN [--octaves 6] [--steps 2000]
        [--checkpoint STEM] [--distill-goal-weight W]

Starts from the shipped weights (or --checkpoint's); a new goal-offset input (`--octaves`)
starts at zero, so step 0 plans exactly as the model it starts from. Fresh AdamW, cosine 1e-4 ->
1e-5, no EMA, batch 64, the recipe's window and goal dropout. Writes RUN/latest.* for
`lab/eval_runs.sh`. A probe: what a few thousand steps of a change buy, before paying for a full
training run.

With --distill-goal-weight W the loss is not the data's: the model with its goal learns the
checkpoint's guided prediction x0_none + W (x0_goal - x0_none), without its goal the checkpoint's
own unconditional one (goal-free sampling keeps working), at the training loss's per-token noise
levels on the data's windows. The result plans with goal_weight 1: one pass per row instead of
two.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from dfplan import diffusion, schedules
from dfplan.checkpoint import load_checkpoint, save_checkpoint, shipped_checkpoint
from dfplan.envs import get_task
from dfplan.envs.datasets import load_trajectories
from dfplan.loss import diffusion_loss, noisy_batch, noisy_token_mse
from dfplan.model import DiffusionForcingModel
from dfplan.normalizer import Normalizer
from dfplan.train import TrainConfig, lr_at
from dfplan.windows import WindowSampler, training_goals


def pyramid_levels(batch: int, tokens: int, steps: int, num_levels: int, generator) -> torch.Tensor:
    """(B, T) model levels as a pyramid row puts them: step level clamp(t + c, 0, S) for one
    offset c per window, drawn from -S+1..S-1, mapped to the model's levels as the planner does."""
    c = torch.randint(-steps + 1, steps, (batch, 1), generator=generator)
    step = (torch.arange(tokens)[None, :] + c).clamp(0, steps)
    return schedules.to_train_levels(step, steps, num_levels)


def guidance_distillation_loss(
    student,
    teacher,
    first_obs,
    x0,
    generator,
    goals,
    goal_weight: float,
    goal_dropout: float,
    pyramid_share: float = 0.0,
    steps: int = 10,
) -> torch.Tensor:
    """MSE between the student's x0 and the teacher's: guided at `goal_weight` for windows that
    keep their goal, unconditional for the `goal_dropout` fraction that does not; noisy tokens.
    A `pyramid_share` of the windows takes its levels from a pyramid row (`pyramid_levels`)."""
    x_noisy, levels, noise = noisy_batch(x0, teacher.abar, teacher.config.num_levels, generator)
    if pyramid_share:
        b, t = levels.shape
        rows = pyramid_levels(b, t, steps, teacher.config.num_levels, generator)
        use = (torch.rand(b, generator=generator) < pyramid_share)[:, None]
        levels = torch.where(use, rows, levels)
        x_noisy = diffusion.q_sample(x0, levels, teacher.abar, noise)
    b = x0.shape[0]
    keep = torch.rand(b, generator=generator) >= goal_dropout
    with torch.no_grad():
        x0_goal, x0_none = teacher.predict_x0_with_and_without_goal(
            x_noisy, levels, first_obs, goals
        )
        guided = x0_none + goal_weight * (x0_goal - x0_none)
        target = torch.where(keep[:, None, None], guided, x0_none)
    pred = student.predict_x0(x_noisy, levels, first_obs, goals, keep)
    return noisy_token_mse(pred, target, levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--octaves", type=int, default=None, help="add goal-offset octaves (default: as it is)"
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--checkpoint", default=None, help="start here (default: the shipped one)")
    parser.add_argument("--distill-goal-weight", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--pyramid-share", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    task = get_task(args.task)
    base, meta = load_checkpoint(args.checkpoint or shipped_checkpoint(task), task=task.name)
    octaves = base.config.goal_offset_octaves if args.octaves is None else args.octaves
    config = dataclasses.replace(base.config, goal_offset_octaves=octaves)
    model = DiffusionForcingModel(config)
    model.load_state_dict(base.state_dict(), strict=False)
    if octaves and not base.config.goal_offset_octaves:
        torch.nn.init.zeros_(model.offset_in.weight)
        torch.nn.init.zeros_(model.offset_in.bias)
    model.train()
    teacher = base.eval().requires_grad_(False)
    data = load_trajectories(task.dataset_id, task)
    normalizer = Normalizer.from_dict(meta["normalizer"])
    window, dropout = meta["window"], meta["train_config"]["goal_dropout"]
    segment = meta["train_config"].get("hindsight_segment")
    goals, _ = training_goals(data, segment, meta["train_config"]["seed"])
    sampler = WindowSampler(data, window, config.frame_stack, normalizer, args.seed, goals)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    schedule = TrainConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, final_lr_ratio=0.1)
    start = time.time()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        first_obs, tokens, goals = sampler.sample(64)
        if args.distill_goal_weight:
            loss = guidance_distillation_loss(
                model,
                teacher,
                first_obs,
                tokens,
                generator,
                goals,
                args.distill_goal_weight,
                dropout,
                args.pyramid_share,
                meta["planner"]["sampling_steps"],
            )
        else:
            loss = diffusion_loss(
                model, first_obs, tokens, generator, goals=goals, goal_dropout=dropout
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "train_step": meta["train_step"] + args.steps}
    if args.distill_goal_weight:
        meta["planner"] = {**meta["planner"], "goal_weight": 1.0}
    save_checkpoint(out / "latest", model.eval(), meta)
    print(f"checkpoint: {out / 'latest'}")


if __name__ == "__main__":
    main()
