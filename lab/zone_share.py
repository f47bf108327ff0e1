"""Which episodes of a keep-out task have a shortest route through a zone.

    python -m lab.zone_share maze2d-large-keepout --seed 0 --episodes 100

For each seed: reset the task's env, take the data-making expert's BFS route from the start cell
to the goal cell (zones ignored) and report whether a cell of it lies within radius + 0.3 of a
zone centre (the cells the zone-aware expert walls off). Prints the share and the seeds.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from dfplan.envs import get_task
from dfplan.policies.expert import ZONE_MARGIN, nearest_free_cell, shortest_path


def crossing_seeds(task_name: str, seeds) -> list[int]:
    task = get_task(task_name)
    env = gym.make(task.env_id)
    layout = env.unwrapped.layout
    out = []
    for s in seeds:
        obs, info = env.reset(seed=s)
        start = nearest_free_cell(layout, obs[:2])
        path = np.array(
            [start, *shortest_path(layout, start, nearest_free_cell(layout, info["goal"]))]
        )
        for x, y, r in task.zones:
            if np.any(np.linalg.norm(path - (x, y), axis=1) < r + ZONE_MARGIN):
                out.append(s)
                break
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=100)
    args = p.parse_args()
    seeds = range(args.seed, args.seed + args.episodes)
    hit = crossing_seeds(args.task, seeds)
    print(f"{args.task}: {len(hit)}/{len(seeds)} shortest routes cross a zone; seeds {hit}")


if __name__ == "__main__":
    main()
