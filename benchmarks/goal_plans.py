"""Do plans sampled with the goal go to it? Distance to the goal of plans with and without it.

    python -m dfplan.benchmarks.goal_plans [--task multi2d-large] [--starts 64] [--checkpoint P]

From `--starts` env resets (seeds 0..N-1; multi2d tasks draw a goal per reset), the shipped
planner samples one whole plan per start from noise to clean (its pyramid, no reward guidance),
once conditioned on the goal (its goal_weight) and once without it (goal_weight 0). Prints, for
each, the mean distance to the goal of the plan's last planned position and the closest one,
mean +- standard error over starts. A goal-conditioned model's plans should end nearer the goal.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import gymnasium as gym
import numpy as np
import torch

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.envs import get_task
from dfplan.planner import DiffusionForcingPlanner
from dfplan.policies import DiffusionForcingPolicy


def plan_distances(planner: DiffusionForcingPlanner, obs, goals, steps: int, seed: int):
    """(last, closest): (N,) distances to the goal of each start's sampled plan."""
    planner.reset(len(obs), [seed + k for k in range(len(obs))])
    plan = planner.sample(obs, steps, reward=None, goal=goals)
    distance = torch.linalg.vector_norm(
        plan.positions - torch.as_tensor(goals, dtype=plan.positions.dtype)[:, None], dim=-1
    )  # (N, H)
    return distance[:, -1].numpy(), distance.min(dim=1).values.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="multi2d-large")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--starts", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = get_task(args.task)
    planner = DiffusionForcingPolicy.from_pretrained(task.name, args.checkpoint, "cpu").planner
    env = gym.make(task.env_id)
    obs, goals = [], []
    for k in range(args.starts):
        o, info = env.reset(seed=args.seed + k)
        obs.append(o)
        goals.append(info["goal"])
    obs, goals = np.stack(obs), np.stack(goals)
    steps = planner.max_tokens * planner.frame_stack
    weight = planner.config.goal_weight
    print(f"{task.name}: {args.starts} starts, plans of {steps} steps, distance to the goal")
    for name, w in ((f"with the goal (goal_weight {weight:g})", weight), ("without it", 0.0)):
        variant = DiffusionForcingPlanner(
            planner.model, planner.normalizer, replace(planner.config, goal_weight=w)
        )
        last, closest = plan_distances(variant, obs, goals, steps, args.seed)
        sem = np.sqrt(len(last))
        print(
            f"  {name:34s} last {last.mean():5.2f} +- {last.std(ddof=1) / sem:4.2f}   "
            f"closest {closest.mean():5.2f} +- {closest.std(ddof=1) / sem:4.2f}"
        )


if __name__ == "__main__":
    main()
