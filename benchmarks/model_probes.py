"""Model-quality probes: is an unguided sample from the model a plausible, physical trajectory?

    python -m dfplan.benchmarks.model_probes --task maze2d-umaze [--checkpoint P] [--samples 100]
        [--planner FIELD=VALUE ...]

For each of N real start states (env resets with seeds seed..seed+N-1) the model samples one
whole plan without guidance (the configured schedule run to the end, from pure noise). Then:
(a) wall fraction: the share of planned positions whose centre lies in a wall cell (or outside
    the maze);
(b) dynamics consistency: the plan's actions, replayed open-loop in the real env from the same
    start, give positions p_env(t); the error is ||p_env(t) - p_plan(t)||, reported at step 100
    (and 50, and the mean over the horizon).
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np

from dfplan.envs import get_task
from dfplan.envs.layouts import WALL


def wall_fraction(layout: np.ndarray, positions: np.ndarray) -> float:
    """Share of (..., 2) qpos positions whose centre is in a wall cell or off the grid."""
    cells = np.floor(positions + 0.7).astype(int)  # wall cell (i, j) spans [i - 0.7, i + 0.3)
    h, w = layout.shape
    inside = (cells[..., 0] >= 0) & (cells[..., 0] < h) & (cells[..., 1] >= 0) & (cells[..., 1] < w)
    walls = np.ones(positions.shape[:-1], dtype=bool)
    walls[inside] = layout[cells[inside][:, 0], cells[inside][:, 1]] == WALL
    return float(walls.mean())


def replay(task, start_qpos, start_qvel, actions: np.ndarray) -> np.ndarray:
    """Positions after each of `actions` (H, 2), replayed open-loop from the given state."""
    env = gym.make(task.env_id, max_episode_steps=len(actions) + 1).unwrapped
    env.reset(seed=0)
    env.set_state(start_qpos, start_qvel)
    out = np.empty((len(actions), 2))
    for t, a in enumerate(actions):
        obs, *_ = env.step(np.clip(a, -1, 1))
        out[t] = obs[:2]
    return out


def probe(planner, task, samples: int = 100, seed: int = 0, batch: int = 50) -> dict:
    env = gym.make(task.env_id)
    starts = [env.reset(seed=seed + k)[0] for k in range(samples)]
    steps = planner.max_tokens * planner.frame_stack
    all_positions, errors = [], []
    for lo in range(0, samples, batch):
        obs = np.stack(starts[lo : lo + batch])
        planner.reset(len(obs), list(range(seed + lo, seed + lo + len(obs))))
        plan = planner.sample(obs, steps)
        positions = plan.positions.cpu().numpy()
        actions = plan.actions.cpu().numpy()
        all_positions.append(positions)
        for k, o in enumerate(obs):
            real = replay(task, o[:2], o[2:], actions[k])
            errors.append(np.linalg.norm(real - positions[k], axis=1))
    errors = np.stack(errors)  # (N, H)
    return {
        "task": task.name,
        "samples": samples,
        "horizon": steps,
        "wall_fraction": wall_fraction(env.unwrapped.layout, np.concatenate(all_positions)),
        "dyn_error_at_50": float(errors[:, 49].mean()) if steps >= 50 else None,
        "dyn_error_at_100": float(errors[:, 99].mean()) if steps >= 100 else None,
        "dyn_error_mean": float(errors.mean()),
    }


def main() -> None:
    from dfplan.benchmarks.bench import make_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="maze2d-umaze")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planner", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    task = get_task(args.task)
    policy = make_policy("df", task, args.checkpoint, args.device, args.planner)
    result = probe(policy.planner, task, args.samples, args.seed)
    result["checkpoint"] = policy.checkpoint
    result["planner_overrides"] = args.planner
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
