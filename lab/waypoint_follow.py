"""Do the data's waypoint routes cross a PointMaze? A probe of the graph alone, no model.

    dfplan data pointmaze-giant-navigate --episodes 40
    python -m lab.waypoint_follow pointmaze-giant-navigate --episodes 10

Builds the waypoint graph (dfplan.waypoints) of the task's dataset and drives each evaluation
episode (seeds 0..N-1, task 1 + seed % 5, OGBench's protocol) by heading straight for the waypoint
`--lookahead` steps along the route, at full speed. Straight lines cut corners, so this needs a
short lookahead and short edges (`--max-lag`); the planner, which sees walls in its plans, does
not. Prints per-episode success and steps, and the success rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dfplan.envs import get_task
from dfplan.envs.datasets import load_trajectories
from dfplan.waypoints import WaypointConfig, WaypointGraph


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--lookahead", type=int, default=8)
    p.add_argument("--max-lag", type=int, default=12)
    args = p.parse_args()
    task = get_task(args.task)
    data = load_trajectories(task.dataset_id)
    tic = time.perf_counter()
    config = WaypointConfig(max_lag=args.max_lag, lookahead=args.lookahead)
    graph = WaypointGraph.build(data.observations[:, :2], data.episode_bounds(), config)
    print(
        f"{len(data)} steps of data; graph: {len(graph.nodes)} nodes, {graph.steps.nnz} edges, "
        f"{time.perf_counter() - tic:.1f} s"
    )
    successes = []
    env = task.make_env()
    for seed in range(args.episodes):
        obs, info = task.reset(env, seed)
        steps = 0
        while True:
            steps += 1
            step = graph.targets(obs[None, :2], info["goal"][None])[0] - obs[:2]
            obs, _, terminated, truncated, step_info = env.step(
                step / (np.linalg.norm(step) + 1e-6)
            )
            if terminated or truncated:  # at the goal, or the time limit
                break
        successes.append(step_info["success"])
        print(
            f"seed {seed} task {task.eval_task_id(seed)}: success {step_info['success']} at {steps}"
        )
    print(f"success {np.mean(successes):.0%} over {len(successes)} episodes")


if __name__ == "__main__":
    main()
