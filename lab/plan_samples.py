"""Print whole plans sampled from one start state, unguided and guided, to see what the model
and the guidance propose.

    python -m lab.plan_samples maze2d-umaze --seed 2013 [--samples 6]
        [--checkpoint P] [--planner FIELD=VALUE ...]

For the env reset with `--seed`, the planner samples `--samples` whole plans from pure noise
(its configured schedule, run to the end) without and with the goal reward, and prints each
plan's position every `--every` steps, and whether it crosses a wall.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

from dfplan.envs import get_task
from dfplan.guidance import GoalReward
from dfplan.policies import make_policy
from lab.model_probes import wall_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--steps", type=int, default=None, help="plan length (default: horizon)")
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--planner", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    task = get_task(args.task)
    planner = make_policy("df", task, args.checkpoint, "cpu", args.planner).planner
    env = gym.make(task.env_id)
    obs, info = env.reset(seed=args.seed)
    steps = args.steps or planner.max_tokens * planner.frame_stack
    print(f"{task.name} seed {args.seed}: start {obs[:2].round(2)}, goal {info['goal']}")
    goal = torch.tensor(info["goal"], dtype=torch.float32)
    for reward in (None, GoalReward(goal)):
        planner.reset(args.samples, list(range(args.samples)))
        plan = planner.sample(np.repeat(obs[None], args.samples, 0), steps, reward)
        positions = plan.positions.cpu().numpy()
        print("guided" if reward else "unguided")
        for k in range(args.samples):
            walls = wall_fraction(env.unwrapped.layout, positions[k])
            path = " ".join(
                f"({positions[k, t, 0]:.1f},{positions[k, t, 1]:.1f})"
                for t in range(0, steps, args.every)
            )
            print(f"  {path}  in walls {walls:.0%}")


if __name__ == "__main__":
    main()
