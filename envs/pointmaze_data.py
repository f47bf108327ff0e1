"""OGBench PointMaze data: OGBench's generation procedures (navigate and stitch), written as
Minari datasets; a reader returning the episodes as arrays.

Procedure (OGBench 1.2.2's data_gen_scripts/generate_locomaze.py, re-implemented): the env is
OGBench's with terminate_at_goal=False and a time limit of one episode. Each episode starts at a
uniformly random free cell; each step the action is the unit direction to the env's oracle
subgoal plus N(0, 0.5) noise, clipped to [-1, 1]. The two kinds (the task's `kind`) differ in
the goal only:
- navigate: the goal is a random "vertex" cell (a free cell that is not a straight hallway
  cell); on success a new vertex goal is drawn. 1,000 episodes of 1,001 steps (giant: 500 of
  2,001).
- stitch: the goal is a random cell exactly 4 steps from the start cell by BFS over free cells
  (up/down/left/right moves; teleporters play no part), or the start cell itself where there
  is none (only the teleport maze's walled-in exit cell (1, 7)). The goal is kept for the whole
  episode: on arrival the point keeps heading for it. 5,000 episodes of 201 steps, every maze.
Sizes are OGBench's (its commands.sh), plus 10% more episodes (at least one) as a validation
split, written as a second dataset.

Each Minari episode holds T + 1 observations (positions), T actions and rewards (the env's:
1 on a success step), no terminations, truncation at its last step; infos hold qpos, qvel and
`oracle_goal`, the goal the data expert was heading for: for analysis only, not for training
(OGBench's datasets carry no goals; training relabels goals from the future of the episode).
Seeded and deterministic: our draws use one numpy Generator, the env's own noise (start, goal)
its isolated stream (`OwnGlobalRandom`), seeded by the same seed.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dfplan.envs.datasets import (
    dataset_path,
    open_staging,
    publish,
    read_minari_episodes,
    write_staged,
)
from dfplan.envs.pointmaze import PointMazeTask
from dfplan.errors import UserError

NOISE = 0.5  # OGBench's --noise for every PointMaze dataset
STITCH_STEPS = 4  # a stitch episode's goal is this many BFS steps from its start cell


@dataclass(frozen=True)
class PointMazeDataConfig:
    task: str  # pointmaze-{medium,large,giant,teleport}-{navigate,stitch}
    episodes: int  # train episodes
    episode_steps: int  # steps (actions) per episode
    seed: int = 0
    noise: float = NOISE

    @property
    def val_episodes(self) -> int:
        return max(1, self.episodes // 10)  # OGBench's 10%; one for tiny test datasets


def maze_cells(maze_map: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(free cells, vertex cells) of an OGBench maze map (0 free, 1 wall; walls all round).

    Vertex cells are the free cells that are not straight hallway cells: a hallway cell has both
    up/down neighbours free and both left/right ones walls, or the other way round."""
    free, vertices = [], []
    for i, j in np.argwhere(maze_map == 0):
        i, j = int(i), int(j)
        free.append((i, j))
        up_down = maze_map[i - 1, j] == 0 and maze_map[i + 1, j] == 0
        left_right = maze_map[i, j - 1] == 0 and maze_map[i, j + 1] == 0
        vertical = up_down and maze_map[i, j - 1] == 1 and maze_map[i, j + 1] == 1
        horizontal = left_right and maze_map[i - 1, j] == 1 and maze_map[i + 1, j] == 1
        if not (vertical or horizontal):
            vertices.append((i, j))
    return free, vertices


def cells_at_distance(
    maze_map: np.ndarray, start: tuple[int, int], steps: int = STITCH_STEPS
) -> list[tuple[int, int]]:
    """The free cells exactly `steps` moves from `start` on a shortest path through free cells
    (BFS, up/down/left/right), in row-major order."""
    distance = {start: 0}
    frontier = [start]
    for d in range(1, steps + 1):
        reached = []
        for i, j in frontier:
            for cell in ((i - 1, j), (i, j - 1), (i + 1, j), (i, j + 1)):
                inside = 0 <= cell[0] < maze_map.shape[0] and 0 <= cell[1] < maze_map.shape[1]
                if inside and maze_map[cell] == 0 and cell not in distance:
                    distance[cell] = d
                    reached.append(cell)
        frontier = reached
    return sorted(frontier)


def generate_episodes(
    task: PointMazeTask, config: PointMazeDataConfig, count: int, progress: bool = True
) -> list[dict]:
    """`count` episodes of the task's kind (train, then validation ones) as dicts of arrays."""
    if task.kind not in ("navigate", "stitch"):
        raise ValueError(f"{task.name}: unknown dataset kind '{task.kind}'")
    rng = np.random.default_rng(config.seed)
    env = task.make_env(terminate_at_goal=False, max_episode_steps=config.episode_steps)
    maze = env.unwrapped
    free, vertices = maze_cells(maze.maze_map)
    steps = config.episode_steps
    bar = tqdm(total=count * steps, desc=f"data {task.name}", unit="step", disable=not progress)
    episodes = []
    for e in range(count):
        init_ij = free[rng.integers(len(free))]
        if task.kind == "stitch":
            near = cells_at_distance(maze.maze_map, init_ij)
            goal_ij = near[rng.integers(len(near))] if near else init_ij  # OGBench's fallback
        else:
            goal_ij = vertices[rng.integers(len(vertices))]
        options = {"task_info": {"init_ij": init_ij, "goal_ij": goal_ij}}
        # Seeded once: later resets continue the env's stream, so episodes differ.
        obs, _ = env.reset(seed=config.seed if e == 0 else None, options=options)
        observations = np.empty((steps + 1, 2), np.float32)
        goals = np.empty((steps + 1, 2), np.float32)
        positions = np.empty((steps + 1, 2), np.float32)
        velocities = np.empty((steps + 1, 2), np.float32)
        actions = np.empty((steps, 2), np.float32)
        rewards = np.empty(steps, np.float32)
        for t in range(steps):
            observations[t], goals[t] = obs, maze.cur_goal_xy
            positions[t], velocities[t] = maze.data.qpos, maze.data.qvel
            xy = maze.get_xy()
            subgoal, _ = maze.get_oracle_subgoal(xy, maze.cur_goal_xy)
            direction = (subgoal - xy) / (np.linalg.norm(subgoal - xy) + 1e-6)
            actions[t] = np.clip(direction + rng.normal(0.0, config.noise, 2), -1.0, 1.0)
            obs, rewards[t], terminated, truncated, info = env.step(actions[t])
            if terminated or truncated != (t == steps - 1):
                raise RuntimeError(f"{task.name}: episode ended at step {t + 1}, not {steps}")
            # Arrived: navigate draws the next goal; stitch keeps its goal to the episode's end.
            if info["success"] and task.kind == "navigate":
                env.set_goal(vertices[rng.integers(len(vertices))])
        observations[steps], goals[steps] = obs, maze.cur_goal_xy
        positions[steps], velocities[steps] = maze.data.qpos, maze.data.qvel
        episodes.append(
            {
                "observations": observations,
                "actions": actions,
                "rewards": rewards,
                "oracle_goal": goals,
                "qpos": positions,  # = the observation, except after a teleport
                "qvel": velocities,
            }
        )
        bar.update(steps)
    bar.close()
    env.close()
    return episodes


def _buffers(episodes: list[dict]) -> list:
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for k, ep in enumerate(episodes):
        n = len(ep["actions"])
        truncations = np.zeros(n, bool)
        truncations[-1] = True  # the time limit ends every episode
        buffers.append(
            EpisodeBuffer(
                id=k,
                observations=ep["observations"],
                actions=ep["actions"],
                rewards=ep["rewards"],
                terminations=np.zeros(n, bool),
                truncations=truncations,
                infos={
                    "oracle_goal": ep["oracle_goal"],  # analysis only, not for training
                    "qpos": ep["qpos"],
                    "qvel": ep["qvel"],
                },
            )
        )
    return buffers


def make_pointmaze_dataset(
    task: PointMazeTask, config: PointMazeDataConfig, force: bool = False, progress: bool = True
) -> tuple[Path, int, float]:
    """Generate and write the train and validation datasets; (train path, steps, seconds).

    Reuses existing complete datasets unless `force` (steps and seconds are then 0). Both are
    written in a hidden staging folder and renamed into place, validation first, so a train
    dataset in place means both are complete."""
    from gymnasium import spaces

    if config.episodes <= 0:
        raise UserError(f"--episodes must be a positive number, got {config.episodes}")
    if config.episode_steps <= 0:
        raise UserError(f"--episode-steps must be a positive number, got {config.episode_steps}")
    final = dataset_path(task.dataset_id)
    if final.exists() and dataset_path(task.val_dataset_id).exists() and not force:
        return final, 0, 0.0
    tic = time.perf_counter()
    staging = open_staging()
    episodes = generate_episodes(task, config, config.episodes + config.val_episodes, progress)
    common = {
        "env": task.env_id,  # OGBench's evaluation env (the data env differs in two settings)
        "observation_space": spaces.Box(-np.inf, np.inf, (2,), np.float32),
        "action_space": spaces.Box(-1.0, 1.0, (2,), np.float32),
        "algorithm_name": f"OGBench {task.kind} procedure (oracle subgoal + N(0, 0.5)), by dfplan",
    }
    split = config.episodes
    write_staged(staging, task.val_dataset_id, _buffers(episodes[split:]), asdict(config), **common)
    write_staged(staging, task.dataset_id, _buffers(episodes[:split]), asdict(config), **common)
    publish(staging, task.val_dataset_id)
    publish(staging, task.dataset_id)
    shutil.rmtree(staging, ignore_errors=True)
    steps = sum(len(ep["actions"]) for ep in episodes)
    return final, steps, time.perf_counter() - tic


# -- reader ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Episodes:
    """Episodes one after another: episode i's observations are
    observations[obs_starts[i]:obs_starts[i + 1]] (T_i + 1 of them), its actions
    actions[act_starts[i]:act_starts[i + 1]] (T_i)."""

    observations: np.ndarray  # (sum T_i + 1, 2)
    actions: np.ndarray  # (sum T_i, 2)
    obs_starts: np.ndarray  # (E + 1,)
    act_starts: np.ndarray  # (E + 1,)

    def __len__(self) -> int:
        return len(self.obs_starts) - 1

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(observations (T + 1, 2), actions (T, 2)) of episode i."""
        obs = self.observations[self.obs_starts[i] : self.obs_starts[i + 1]]
        return obs, self.actions[self.act_starts[i] : self.act_starts[i + 1]]


def read_episodes(source: str | os.PathLike) -> Episodes:
    """The episodes of a PointMaze dataset (a Minari id such as dfplan/pointmaze-giant-navigate-v0
    or its folder)."""
    path, _, episodes = read_minari_episodes(source, "pointmaze-giant-navigate")
    obs = [np.asarray(ep["observations"], np.float32) for ep in episodes]
    acts = [np.asarray(ep["actions"], np.float32) for ep in episodes]
    if any(len(o) != len(a) + 1 for o, a in zip(obs, acts, strict=True)):
        raise UserError(
            f"Minari dataset {path} is inconsistent: an episode lacks T + 1 observations"
        )
    return Episodes(
        observations=np.concatenate(obs),
        actions=np.concatenate(acts),
        obs_starts=np.cumsum([0] + [len(o) for o in obs]),
        act_starts=np.cumsum([0] + [len(a) for a in acts]),
    )
