"""Model-quality probes: is an unguided sample from the model a plausible, physical trajectory?

    python -m lab.model_probes --task maze2d-umaze [--checkpoint P] [--samples 100]
        [--planner FIELD=VALUE ...]

For each of N real start states (env resets with seeds seed..seed+N-1) the model samples one
whole plan without guidance (the configured schedule run to the end, from pure noise). Then:
(a) wall fraction: the share of planned positions whose centre lies in a wall cell (or outside
    the maze);
(b) dynamics consistency: the plan's actions, replayed open-loop in the real env from the same
    start, give positions p_env(t); the error is ||p_env(t) - p_plan(t)||, reported at step 100
    (and 50, and the mean over the horizon);
(c) start offset: ||p_plan(1) - o_0||, how far the plan's first position is from the agent (a
    real step moves it at most ~0.05).
With --denoise, also the model's own precision on dataset windows: every token noised to one
level, the error of its x0 estimate of the first frame's position (which o_0 all but fixes).
With --replay-floor, what (b) asks of a model: the same replay error for the dataset's own
actions plus Gaussian noise (sigma 0 replays the data exactly: it came from this env).
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
    all_positions, errors, offsets = [], [], []
    for lo in range(0, samples, batch):
        obs = np.stack(starts[lo : lo + batch])
        planner.reset(len(obs), list(range(seed + lo, seed + lo + len(obs))))
        plan = planner.sample(obs, steps)
        positions = plan.positions.cpu().numpy()
        actions = plan.actions.cpu().numpy()
        all_positions.append(positions)
        offsets.append(np.linalg.norm(positions[:, 0] - obs[:, :2], axis=1))
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
        "start_offset": float(np.concatenate(offsets).mean()),
    }


def denoise_errors(
    model, normalizer, data, levels=(1000, 200, 50), windows: int = 256, seed: int = 0
) -> dict:
    """Mean distance between the x0 estimate of the first frame's position and the true one, on
    `windows` dataset windows with every token at one level, per level."""
    import torch

    from dfplan import diffusion
    from dfplan.windows import WindowSampler, dataset_goals

    cfg = model.config
    goals = dataset_goals(data) if cfg.goal_dim else None
    sampler = WindowSampler(
        data, cfg.max_tokens * cfg.frame_stack, cfg.frame_stack, normalizer, seed, goals
    )
    first_obs, tokens, goals = sampler.sample(windows)
    std = torch.as_tensor(normalizer.obs_std[:2], dtype=tokens.dtype)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for level in levels:
        lv = torch.full(tokens.shape[:2], level)
        noise = torch.randn(tokens.shape, generator=generator)
        with torch.no_grad():
            noisy = diffusion.q_sample(tokens, lv, model.abar, noise)
            x0 = model.predict_x0(noisy, lv, first_obs, goals)
        error = ((x0[:, 0, :2] - tokens[:, 0, :2]) * std).norm(dim=-1).mean()
        out[f"first_frame_error_at_level_{level}"] = float(error)
    return out


def replay_floor(
    task, data, sigmas=(0.0, 0.03, 0.1), windows: int = 40, horizon: int = 100, seed: int = 0
) -> dict:
    """Mean position error after `horizon` steps of replaying `windows` dataset windows' own
    actions, plus N(0, sigma) noise (then clipped to [-1, 1]), open-loop from the window's first
    state, per sigma. Windows stay inside one episode."""
    rng = np.random.default_rng(seed)
    bounds = [(s, e) for s, e in data.episode_bounds() if e - s > horizon]
    if not bounds:
        raise ValueError(f"no episode is longer than {horizon} steps")
    picks = rng.integers(len(bounds), size=windows)
    starts = [rng.integers(bounds[k][0], bounds[k][1] - horizon) for k in picks]
    obs, out = data.observations, {}
    for sigma in sigmas:
        errors = []
        for s in starts:
            actions = data.actions[s : s + horizon]
            actions = actions + rng.normal(0.0, sigma, size=actions.shape)
            real = replay(task, obs[s, :2], obs[s, 2:], actions)
            errors.append(np.linalg.norm(real[-1] - obs[s + horizon, :2]))
        out[f"replay_floor_at_{horizon}_sigma_{sigma}"] = float(np.mean(errors))
    return out


def main() -> None:
    from dfplan.policies import make_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="maze2d-umaze")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planner", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--denoise", action="store_true", help="also the x0 precision check")
    parser.add_argument(
        "--replay-floor", action="store_true", help="also the replay error of noisy data actions"
    )
    args = parser.parse_args()
    task = get_task(args.task)
    policy = make_policy("df", task, args.checkpoint, args.device, args.planner)
    result = probe(policy.planner, task, args.samples, args.seed)
    result["checkpoint"] = policy.checkpoint
    result["planner_overrides"] = args.planner
    if args.denoise or args.replay_floor:
        from dfplan.envs.datasets import load_trajectories

        data = load_trajectories(task.dataset_id, task)
        planner = policy.planner
        if args.denoise:
            result.update(denoise_errors(planner.model, planner.normalizer, data))
        if args.replay_floor:
            result.update(replay_floor(task, data, seed=args.seed))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
