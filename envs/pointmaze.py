"""OGBench PointMaze tasks: registry entries (data) and the one way to build their envs.

`pointmaze-{medium,large,giant,teleport}-{navigate,stitch}` are OGBench 1.2.2's own envs
(`pointmaze-MAZE-v0`), unchanged: a kinematic point, observation = position (x, y), action in
[-1, 1]^2, five fixed evaluation tasks per maze, success within 1.0 of the goal, termination at
the goal, 1000 steps. Nothing here re-implements the env; `make_env` builds OGBench's. A maze's
navigate and stitch tasks share env and evaluation; they differ only in their dataset (`kind`,
see `pointmaze_data.py`).
"""

from __future__ import annotations

import os
import tempfile
import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class PointMazeTask:
    name: str  # CLI name, e.g. "pointmaze-giant-navigate"
    maze: str  # OGBench maze type: medium, large, giant, teleport
    data_episodes: int  # OGBench's dataset of this kind: episodes (train split) ...
    data_episode_steps: int  # ... of this many steps each
    kind: str = "navigate"  # OGBench's dataset type: navigate or stitch (same env and eval)
    max_episode_steps: int = 1000  # OGBench's evaluation time limit
    eval_tasks: int = 5  # OGBench's fixed evaluation tasks, task_id 1..5
    zones: tuple = ()  # no keep-out zones; the bench reads this field on every task

    family: ClassVar[str] = "pointmaze"
    # One step moves the point at most 0.2 * sqrt(2); a longer jump is a reset (or a teleport,
    # which the policies then take for one: their plan starts afresh from the exit).
    reset_jump: ClassVar[float] = 1.0

    @property
    def recipe(self) -> str:
        """The recipe (dfplan/recipes/RECIPE.json) of this task's models: pointmaze-MAZE for
        the navigate data, pointmaze-MAZE-stitch for the stitch data."""
        return f"pointmaze-{self.maze}" + ("" if self.kind == "navigate" else f"-{self.kind}")

    def position_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the positions the point can have: the free cells' extent."""
        if self.maze not in _BOUNDS:
            maze = self.make_env().unwrapped
            free = np.argwhere(maze.maze_map == 0)
            xy = np.array([maze.ij_to_xy(tuple(ij)) for ij in free])
            half = maze._maze_unit / 2
            _BOUNDS[self.maze] = (xy.min(axis=0) - half, xy.max(axis=0) + half)
        return _BOUNDS[self.maze]

    @property
    def env_id(self) -> str:
        return f"pointmaze-{self.maze}-v0"  # OGBench's registered id

    @property
    def dataset_task(self) -> str:
        return self.name

    @property
    def dataset_id(self) -> str:
        return f"dfplan/{self.name}-v0"

    @property
    def val_dataset_id(self) -> str:
        return f"dfplan/{self.name}-val-v0"

    def make_env(self, **kwargs) -> gym.Env:
        """OGBench's env (kwargs go to it, e.g. terminate_at_goal=False), with its global-RNG
        draws isolated per env (see `OwnGlobalRandom`)."""
        import ogbench

        dataset_name = f"pointmaze-{self.maze}-navigate-v0"  # env_only: nothing is downloaded
        with _maze_files_removed():
            env = ogbench.make_env_and_datasets(dataset_name, env_only=True, **kwargs)
        return OwnGlobalRandom(env)

    def reset(self, env: gym.Env, seed: int) -> tuple[np.ndarray, dict]:
        """Starts the bench's episode with this seed: OGBench's evaluation task of the seed."""
        return env.reset(seed=seed, options={"task_id": self.eval_task_id(seed)})

    def eval_task_id(self, seed: int) -> int:
        """OGBench's evaluation task of the episode with this seed: 1 + seed % 5, so a run of
        consecutive seeds cycles through the five tasks and an episode depends on its seed only
        (not on its place in a shard, chunk or seed list)."""
        return 1 + seed % self.eval_tasks

    def score(self, env: gym.Env, raw_return: float, success: bool) -> float:
        """No D4RL normalisation exists for PointMaze: 100 per success, so the mean is the
        success rate in %."""
        return 100.0 * bool(success)


_BOUNDS: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per maze, from its map (built once)


@contextmanager
def _maze_files_removed():
    """OGBench writes each env's maze XML with tempfile.mkstemp and keeps neither the descriptor
    nor the path: one open file and one file in /tmp per env, and the bench builds one env per
    episode. MuJoCo has read the file once the env is built, so close and delete it then."""
    from ogbench.locomaze import maze as maze_module

    made = []

    def mkstemp(*args, **kwargs):
        fd, path = tempfile.mkstemp(*args, **kwargs)
        made.append((fd, path))
        return fd, path

    maze_module.tempfile = types.SimpleNamespace(mkstemp=mkstemp)  # this module's use only
    try:
        yield
    finally:
        maze_module.tempfile = tempfile
        for fd, path in made:
            os.close(fd)
            os.unlink(path)


class OwnGlobalRandom(gym.Wrapper):
    """Gives the env its own stream of numpy's global RNG, and the goal to every step's info.

    OGBench draws the start and goal noise (reset, set_goal) and teleport exits (step) from
    `np.random`, not from the env's seeded generator. Without this, an episode would depend on
    whatever else used the global RNG (its neighbours in a lock-step batch). reset(seed=s)
    seeds the stream with s; unseeded resets continue it. OGBench gives the goal in the reset
    info only; here every step's info holds the current goal too, as Maze2D's does, so a loop
    can hand the last info to a policy.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._state = np.random.RandomState().get_state()  # fresh entropy until seeded

    def _isolated(self, fn, *args, **kwargs):
        outside = np.random.get_state()
        np.random.set_state(self._state)
        try:
            return fn(*args, **kwargs)
        finally:
            self._state = np.random.get_state()
            np.random.set_state(outside)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._state = np.random.RandomState(seed).get_state()
        obs, info = self._isolated(self.env.reset, seed=seed, options=options)
        self._goal = info["goal"]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self._isolated(self.env.step, action)
        return obs, reward, terminated, truncated, {**info, "goal": self._goal}

    def set_goal(self, goal_ij: tuple[int, int]) -> None:
        """OGBench's set_goal (cell + the same noise as at reset), drawn from this env's stream."""
        self._isolated(self.env.unwrapped.set_goal, goal_ij)
        self._goal = np.array(self.env.unwrapped.cur_goal_xy)


# Sizes of OGBench's datasets (its data_gen_scripts/commands.sh): (episodes, steps per episode).
_DATA_SIZES = {
    ("navigate", "medium"): (1000, 1001),
    ("navigate", "large"): (1000, 1001),
    ("navigate", "giant"): (500, 2001),
    ("navigate", "teleport"): (1000, 1001),
    ("stitch", "medium"): (5000, 201),
    ("stitch", "large"): (5000, 201),
    ("stitch", "giant"): (5000, 201),
    ("stitch", "teleport"): (5000, 201),
}
POINTMAZE_TASKS: dict[str, PointMazeTask] = {
    f"pointmaze-{maze}-{kind}": PointMazeTask(f"pointmaze-{maze}-{kind}", maze, *sizes, kind=kind)
    for (kind, maze), sizes in _DATA_SIZES.items()
}
