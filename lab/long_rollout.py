"""Long rollouts: does sampling autoregressively for 10x the training horizon stay bounded?

    python -m lab.long_rollout --task maze2d-umaze [--horizons 10] [--samples 16]

From N real start states (env resets, seeds seed..seed+N-1) the model rolls out, one token at a
time with a sliding context window (dfplan.rollout), `horizons` x its training window. The
rollout is cut into segments of one training window each; per segment the table shows the share
of positions inside walls or off the grid, the largest |value| of any normalised dimension, and
the mean speed. Bounded = these stay at the first segment's values instead of growing. Run for
a clean context (level 0) and a slightly noised one (the paper's stabiliser) side by side.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from dfplan.envs import get_task
from dfplan.model import tokens_to_frames
from dfplan.rollout import rollout
from lab.model_probes import wall_fraction


def segment_stats(planner, tokens: torch.Tensor, layout: np.ndarray) -> list[dict]:
    """Per training-window segment of (N, T, D) normalised tokens: walls, max |x|, speed."""
    mc = planner.model.config
    out = []
    for lo in range(0, tokens.shape[1], mc.max_tokens):
        seg = tokens[:, lo : lo + mc.max_tokens]
        frames = tokens_to_frames(seg, mc.frame_stack)
        obs = planner.normalizer.denormalize_obs(frames[..., : mc.obs_dim]).cpu().numpy()
        out.append(
            {
                "steps": f"{lo * mc.frame_stack}-{(lo + seg.shape[1]) * mc.frame_stack}",
                "wall_fraction": wall_fraction(layout, obs[..., :2]),
                "max_abs_normalised": float(seg.abs().max()),
                "mean_speed": float(np.linalg.norm(obs[..., 2:4], axis=-1).mean()),
            }
        )
    return out


def main() -> None:
    from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="maze2d-umaze")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--horizons", type=int, default=10, help="rollout length in windows")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per token")
    parser.add_argument("--context-levels", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    task = get_task(args.task)
    policy = DiffusionForcingPolicy.from_pretrained(task.name, args.checkpoint, args.device)
    planner = policy.planner
    env = gym.make(task.env_id)
    starts = np.stack([env.reset(seed=args.seed + k)[0] for k in range(args.samples)])
    first = planner.normalizer.normalize_obs(torch.tensor(starts, dtype=torch.float32))
    mc = planner.model.config
    tokens = args.horizons * mc.max_tokens
    print(
        f"{task.name}: {args.samples} rollouts of {tokens * mc.frame_stack} steps "
        f"({args.horizons} x the {mc.max_tokens * mc.frame_stack}-step training window), "
        f"{args.steps} DDIM steps per token"
    )
    for level in args.context_levels:
        g = torch.Generator(device=args.device).manual_seed(args.seed)
        tic = time.perf_counter()
        out = rollout(planner.model, first.to(args.device), tokens, args.steps, level, g)
        seconds = time.perf_counter() - tic
        print(f"\ncontext level {level} of {args.steps} ({seconds:.0f} s)")
        print(f"{'steps':>12s} {'in walls':>9s} {'max |x| (norm.)':>16s} {'mean speed':>11s}")
        for row in segment_stats(planner, out, env.unwrapped.layout):
            print(
                f"{row['steps']:>12s} {row['wall_fraction']:>9.2%} "
                f"{row['max_abs_normalised']:>16.2f} {row['mean_speed']:>11.2f}"
            )


if __name__ == "__main__":
    main()
