"""Run a policy for N episodes on a task under the benchmark protocol; per-episode records.

Protocol: the task's env (`task.make_env()`), full time limit, the policy's own actions, episode
k reset with seed `seed + k`. Maze2D: D4RL-faithful env, sparse reward (radius 0.5), never
terminates. OGBench PointMaze: OGBench's protocol, the episode with seed s runs evaluation task
`1 + s % 5` (reset option task_id), success within 1.0 of the goal ends it, score 100 * success.
Episodes run in lock-step batches: the policy sees (B, obs_dim) observations and returns (B, 2)
actions, and is reset once per batch with the batch's first seed. An env that terminated takes
no more actions: the policy keeps getting its last observation, and its action is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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
    task_id: int | None = None  # OGBench evaluation task (PointMaze); None on Maze2D

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("success_steps")
        if d["task_id"] is None:  # Maze2D records keep their exact old form
            d.pop("task_id")
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
        envs = [task.make_env() for _ in seeds]
        resets = [task.reset(env, s) for env, s in zip(envs, seeds, strict=True)]
        obs = np.stack([r[0] for r in resets])
        infos = [r[1] for r in resets]
        policy.reset(seed=seeds[0] if policy_seed is None else policy_seed + start)
        returns = np.zeros(len(seeds))
        costs, energy = np.zeros(len(seeds), dtype=np.int64), np.zeros(len(seeds))
        first = [None] * len(seeds)
        done = np.zeros(len(seeds), bool)  # terminated (PointMaze at its goal); Maze2D never
        for t in range(1, task.max_episode_steps + 1):
            info = {"goal": np.stack([i["goal"] for i in infos])}
            tic = time.perf_counter()
            actions = policy.act(obs, info)
            act_seconds += time.perf_counter() - tic
            decisions += len(seeds)
            arrived = 0
            obs = obs.copy()  # a fresh array per step: the policy may hold on to the last one
            for k in np.flatnonzero(~done):
                o, reward, terminated, _, step_info = envs[k].step(actions[k])
                obs[k] = o
                infos[k] = step_info
                energy[k] += (np.clip(np.asarray(actions[k], dtype=np.float64), -1, 1) ** 2).sum()
                returns[k] += reward
                costs[k] += step_info.get("cost", 0.0) > 0
                if first[k] is None and step_info["success"]:
                    first[k] = t
                    arrived += 1
                done[k] = terminated
            bar.update(len(seeds))
            if report is not None:
                report(len(seeds), arrived)
            if t % 50 == 0:
                reached = sum(f is not None for f in first) + sum(r.success for r in records)
                bar.set_postfix(reached=f"{reached}/{len(records) + len(seeds)}", refresh=False)
            if done.all():  # every episode ended: count the steps they will not take
                left = len(seeds) * (task.max_episode_steps - t)
                bar.update(left)
                if report is not None:
                    report(left, 0)
                break
        for env in envs:
            env.close()
        for k, s in enumerate(seeds):
            norm = task.score(envs[k], returns[k], first[k] is not None)
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
                    task_id=task.eval_task_id(s),
                )
            )
        if progress:
            score = np.mean([r.normalized for r in records])
            tqdm.write(f"{len(records)}/{episodes} episodes done, running score {score:.1f}")
    bar.close()
    return records, decisions / max(act_seconds, 1e-9)


def summarize(records: list[EpisodeRecord]) -> dict:
    """Means over the episodes; success_by_task ({task_id: rate}) on PointMaze, else None."""
    norm = np.array([r.normalized for r in records])
    success = np.array([r.success for r in records], dtype=np.float64)
    firsts = [r.first_success_step for r in records if r.first_success_step is not None]
    by_task = None
    if any(r.task_id is not None for r in records):
        ids = sorted({r.task_id for r in records})
        by_task = {i: float(np.mean([r.success for r in records if r.task_id == i])) for i in ids}
    return {
        "episodes": len(records),
        "normalized_mean": float(norm.mean()),
        "normalized_sem": float(norm.std(ddof=1) / np.sqrt(len(norm))) if len(norm) > 1 else 0.0,
        "raw_mean": float(np.mean([r.raw_return for r in records])),
        "success_rate": float(success.mean()),
        "success_sem": float(success.std(ddof=1) / np.sqrt(len(success)))
        if len(success) > 1
        else 0.0,
        "success_by_task": by_task,
        "steps_to_goal_mean": float(np.mean(firsts)) if firsts else None,
        "zone_steps_mean": float(np.mean([r.zone_steps for r in records])),
        "zone_entered_rate": float(np.mean([r.zone_steps > 0 for r in records])),
        "energy_mean": float(np.mean([r.energy for r in records])),
    }
