"""Planner decision rate: warm start vs planning from noise, MCG samples, batch 1 and 32.

    python -m dfplan.benchmarks.planner_speed [--task maze2d-large] [--device cpu] [--checkpoint P]
    python -m dfplan.benchmarks.planner_speed --only-shipped      # the shipped settings alone
    python -m dfplan.benchmarks.planner_speed --task maze2d-large-keepout --episode-steps 800

One decision = one call of the planner for the whole batch (every environment replans once), as
the policy makes it with no objective: conditioned on the goal, with the goal reward only when
guidance is on and the model is not told the goal.
Decisions per second counts environment decisions: batch size x calls per second. Uses the shipped
checkpoint of the task when there is one, else an untrained model of the shipped size (speed does
not depend on the weights). Prints one table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from dfplan.envs import get_task
from dfplan.guidance import GoalReward
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.factory import parse_overrides


def load_planner(task_name: str, checkpoint: str | None, device: str) -> DiffusionForcingPlanner:
    from dfplan.errors import UserError
    from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

    try:
        return DiffusionForcingPolicy.from_pretrained(task_name, checkpoint, device).planner
    except UserError:
        from dfplan.model import DiffusionForcingModel
        from dfplan.normalizer import Normalizer
        from dfplan.train import recommended_config

        print(f"(no checkpoint for {task_name}: timing an untrained model of the shipped size)")
        model = DiffusionForcingModel(recommended_config(task_name).model).to(device)
        ones = np.ones(4, np.float32)
        norm = Normalizer(ones * 3, ones, np.zeros(2, np.float32), np.ones(2, np.float32))
        return DiffusionForcingPlanner(model, norm, PlannerConfig())


def time_decisions(
    planner, batch: int, steps_left: int, min_seconds: float, warm: bool = True
) -> float:
    rng = np.random.default_rng(0)
    velocity_dims = planner.model.config.obs_dim - 2  # Maze2D: 2, PointMaze: none
    obs = np.concatenate(
        [rng.uniform(1, 3, (batch, 2)), rng.normal(0, 1, (batch, velocity_dims))], 1
    )
    goal = np.array([3.0, 3.0])
    goal_blind = planner.config.goal_weight == 0 or not planner.model.config.goal_dim
    guided = planner.config.guidance_scale > 0 and goal_blind  # as the policy guides
    reward = GoalReward(torch.tensor(goal)) if guided else None
    planner.reset(batch, list(range(batch)))
    planner.act(obs, reward, steps_left, goal)  # cold start (and warm-up)
    planner.act(obs, reward, steps_left, goal)
    calls, tic = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - tic < min_seconds:
        if not warm:
            planner.forget(range(batch))  # plan from noise every call
        planner.act(obs, reward, steps_left, goal)  # same plan length every call
        calls += 1
    if planner.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * calls / (time.perf_counter() - tic)


def time_episode(task_name: str, steps: int, device: str, planner: list[str]) -> tuple[float, int]:
    """(decisions per second, route searches) of the bench's df policy on one env of the task,
    episodes from seed 0 on (a new one where the last ends), as the bench runs them."""
    from dfplan.policies.factory import make_policy

    task = get_task(task_name)
    policy = make_policy("df", task, device=device, planner=planner)
    env = task.make_env()
    seed = 0

    def reset():
        policy.reset(seed=seed)
        return task.reset(env, seed)

    obs, info = reset()
    tic = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            seed += 1
            obs, info = reset()
    rate = steps / (time.perf_counter() - tic)
    routes = getattr(policy, "routes", None)
    return rate, (routes.searches if routes is not None and policy.objective is not None else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="maze2d-large")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--mcg", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument(
        "--planner", nargs="*", default=[], metavar="FIELD=VALUE", help="override settings"
    )
    parser.add_argument("--only-shipped", action="store_true", help="time the settings as given")
    parser.add_argument(
        "--episode-steps", type=int, default=0, help="also time the bench's policy for N steps"
    )
    args = parser.parse_args()
    task = get_task(args.task)
    base = load_planner(task.name, args.checkpoint, args.device)
    base.config = replace(base.config, **parse_overrides(args.planner))
    horizon = base.max_tokens * base.frame_stack
    steps_left = min(task.max_episode_steps, horizon) + 10
    print(
        f"{task.name}: {base.max_tokens} tokens x {base.frame_stack} frames, "
        f"{base.config.sampling_steps} sampling steps, refresh {base.config.refresh_rows} rows, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'planner':8s} {'mcg':>4s} "
        + " ".join(f"{'batch ' + str(b):>12s}" for b in args.batches)
        + "   (environment decisions per second)"
    )
    variants = [(True, base.config.mcg_samples)]
    if not args.only_shipped:
        variants = [(warm, mcg) for warm in (True, False) for mcg in args.mcg]
    for warm, mcg in variants:
        config = replace(base.config, mcg_samples=mcg)
        planner = DiffusionForcingPlanner(base.model, base.normalizer, config)
        rates = [
            time_decisions(planner, b, steps_left, args.min_seconds, warm) for b in args.batches
        ]
        name = "warm" if warm else "cold"
        print(f"{name:8s} {mcg:>4d} " + " ".join(f"{r:>12.1f}" for r in rates), flush=True)
    if args.episode_steps > 0:
        rate, searches = time_episode(task.name, args.episode_steps, args.device, args.planner)
        print(
            f"policy, one env of {task.name}, {args.episode_steps} steps from seed 0: "
            f"{rate:.1f} decisions/s ({searches} route searches)"
        )


if __name__ == "__main__":
    main()
