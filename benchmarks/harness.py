"""Run a policy for N episodes on a task under the benchmark protocol; per-episode records.

Protocol: D4RL-faithful env, full time limit, sparse reward (radius 0.5), the policy's own actions,
episode k reset with seed `seed + k`. Episodes run in lock-step batches: the policy sees
(B, 4) observations and returns (B, 2) actions, and is reset once per batch with the batch's first
seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from dfplan.envs.tasks import Task


@dataclass
class EpisodeRecord:
    seed: int
    raw_return: float
    normalized: float
    success: bool  # reached the goal (within 0.5) at least once
    first_success_step: int | None  # 1-based step of the first success, None if never
    final_position: list[float] | None = None  # (x, y) at the end of the episode
    zone_steps: int = 0  # steps that ended inside a keep-out zone (info["cost"] summed)
    energy: float = 0.0  # action energy: sum over steps of ||a_t||^2 (actions clipped to [-1, 1])
    success_steps: list[int] | None = None  # not stored by default; used by success curves

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("success_steps")
        return d


def step_bar(task: Task, episodes: int, desc: str | None = None, disable: bool = False) -> tqdm:
    """The bench's progress bar: environment steps of all episodes, so a single long batch
    shows progress (the caller adds how many have reached the goal as a postfix)."""
    total = episodes * task.max_episode_steps
    return tqdm(total=total, desc=desc or task.name, disable=disable, unit="step", unit_scale=True)


def run_episodes(
    task: Task,
    policy,
    episodes: int,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    seed_list: list[int] | None = None,
    policy_seed: int | None = None,
    report: Callable[[int, int], None] | None = None,
) -> tuple[list[EpisodeRecord], float]:
    """Returns the per-episode records and the number of policy decisions per second.

    Episodes use seeds seed..seed+episodes-1, or the seeds of `seed_list` when given (tuning
    sets, failure cases). A batch's policy is reset with the batch's first episode seed, or
    with `policy_seed` + the batch's offset when given. `report(steps, reached)`, if given, is
    called after every batched step with the environment steps just taken and the episodes that
    first reached the goal on it (a worker process feeds its parent's progress bar this way).
    """
    all_seeds = list(seed_list) if seed_list is not None else list(range(seed, seed + episodes))
    episodes = len(all_seeds)
    records: list[EpisodeRecord] = []
    decisions, act_seconds = 0, 0.0
    bar = step_bar(task, episodes, disable=not progress)
    for start in range(0, episodes, batch_size):
        seeds = all_seeds[start : start + batch_size]
        envs = [gym.make(task.env_id, zones=task.zones) for _ in seeds]
        resets = [env.reset(seed=s) for env, s in zip(envs, seeds, strict=True)]
        obs = np.stack([r[0] for r in resets])
        infos = [r[1] for r in resets]
        policy.reset(seed=seeds[0] if policy_seed is None else policy_seed + start)
        returns = np.zeros(len(seeds))
        costs, energy = np.zeros(len(seeds), dtype=np.int64), np.zeros(len(seeds))
        first = [None] * len(seeds)
        for t in range(1, task.max_episode_steps + 1):
            info = {"goal": np.stack([i["goal"] for i in infos])}
            tic = time.perf_counter()
            actions = policy.act(obs, info)
            act_seconds += time.perf_counter() - tic
            decisions += len(seeds)
            steps = [env.step(a) for env, a in zip(envs, actions, strict=True)]
            obs = np.stack([s[0] for s in steps])
            infos = [s[4] for s in steps]
            energy += (np.clip(np.asarray(actions, dtype=np.float64), -1, 1) ** 2).sum(axis=1)
            arrived = 0
            for k, s in enumerate(steps):
                returns[k] += s[1]
                costs[k] += s[4].get("cost", 0.0) > 0
                if first[k] is None and s[4]["success"]:
                    first[k] = t
                    arrived += 1
            bar.update(len(seeds))
            if report is not None:
                report(len(seeds), arrived)
            if t % 50 == 0:
                reached = sum(f is not None for f in first) + sum(r.success for r in records)
                bar.set_postfix(reached=f"{reached}/{len(records) + len(seeds)}", refresh=False)
        for env in envs:
            env.close()
        for k, s in enumerate(seeds):
            norm = envs[k].unwrapped.normalized_score(returns[k])
            final = [float(v) for v in obs[k, :2]]
            records.append(
                EpisodeRecord(
                    s,
                    float(returns[k]),
                    norm,
                    first[k] is not None,
                    first[k],
                    final,
                    zone_steps=int(costs[k]),
                    energy=float(energy[k]),
                )
            )
        if progress:
            score = np.mean([r.normalized for r in records])
            tqdm.write(f"{len(records)}/{episodes} episodes done, running score {score:.1f}")
    bar.close()
    return records, decisions / max(act_seconds, 1e-9)


def summarize(records: list[EpisodeRecord]) -> dict:
    norm = np.array([r.normalized for r in records])
    firsts = [r.first_success_step for r in records if r.first_success_step is not None]
    return {
        "episodes": len(records),
        "normalized_mean": float(norm.mean()),
        "normalized_sem": float(norm.std(ddof=1) / np.sqrt(len(norm))) if len(norm) > 1 else 0.0,
        "raw_mean": float(np.mean([r.raw_return for r in records])),
        "success_rate": float(np.mean([r.success for r in records])),
        "steps_to_goal_mean": float(np.mean(firsts)) if firsts else None,
        "zone_steps_mean": float(np.mean([r.zone_steps for r in records])),
        "zone_entered_rate": float(np.mean([r.zone_steps > 0 for r in records])),
        "energy_mean": float(np.mean([r.energy for r in records])),
    }
