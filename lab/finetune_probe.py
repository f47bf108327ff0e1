"""Fine-tune a shipped goal-conditioned checkpoint briefly, optionally adding goal-offset inputs.

    python -m lab.finetune_probe maze2d-large --out RUN [--octaves 6] [--steps 2000]
        [--checkpoint STEM]

Starts from the shipped weights (or --checkpoint's); a new goal-offset input (`--octaves`)
starts at zero, so step 0 plans exactly as the model it starts from. Fresh AdamW, cosine 1e-4 ->
1e-5, no EMA, batch 64, the recipe's window and goal dropout. Writes RUN/latest.* for
`lab/eval_runs.sh`. A probe: what a few thousand steps of a change buy, before paying for a full
training run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from dfplan.checkpoint import load_checkpoint, save_checkpoint, shipped_checkpoint
from dfplan.envs import get_task
from dfplan.envs.datasets import load_trajectories
from dfplan.loss import diffusion_loss
from dfplan.model import DiffusionForcingModel
from dfplan.normalizer import Normalizer
from dfplan.train import TrainConfig, lr_at
from dfplan.windows import WindowSampler, dataset_goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--out", required=True)
    parser.add_argument("--octaves", type=int, default=0, help="goal-offset octaves (0: none)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--checkpoint", default=None, help="start here (default: the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    task = get_task(args.task)
    base, meta = load_checkpoint(args.checkpoint or shipped_checkpoint(task), task=task.name)
    config = dataclasses.replace(base.config, goal_offset_octaves=args.octaves)
    model = DiffusionForcingModel(config)
    model.load_state_dict(base.state_dict(), strict=False)
    if args.octaves:
        torch.nn.init.zeros_(model.offset_in.weight)
        torch.nn.init.zeros_(model.offset_in.bias)
    model.train()
    data = load_trajectories(task.dataset_id, task)
    normalizer = Normalizer.from_dict(meta["normalizer"])
    window, dropout = meta["window"], meta["train_config"]["goal_dropout"]
    sampler = WindowSampler(
        data, window, config.frame_stack, normalizer, args.seed, dataset_goals(data)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    schedule = TrainConfig(steps=args.steps, lr=1e-4, warmup=0, final_lr_ratio=0.1)
    start = time.time()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        first_obs, tokens, goals = sampler.sample(64)
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
    save_checkpoint(
        out / "latest", model.eval(), {**meta, "train_step": meta["train_step"] + args.steps}
    )
    print(f"checkpoint: {out / 'latest'}")


if __name__ == "__main__":
    main()
