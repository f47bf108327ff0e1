"""Tasks are data: one registry entry per CLI task name, one code path for all of them.

Two families: Maze2D (D4RL-faithful, our envs; `TASKS`) and OGBench PointMaze (OGBench's envs;
`envs/pointmaze.py`). Both give the bench `make_env`, `eval_task_id` and `score`; `get_task`
looks up either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from dfplan.envs.pointmaze import POINTMAZE_TASKS, PointMazeTask
from dfplan.errors import UserError

if TYPE_CHECKING:
    import gymnasium as gym


@dataclass(frozen=True)
class Task:
    name: str  # CLI name, e.g. "maze2d-large"
    maze: str  # key into layouts.LAYOUTS
    multi_goal: bool  # True: goal redrawn every episode (Multi2D); False: D4RL's fixed goal
    max_episode_steps: int  # D4RL time limit
    ref_min_score: float  # D4RL normalisation constants (raw return of random / "expert")
    ref_max_score: float
    # Keep-out zones (x, y, radius) in the qpos frame: the env reports info["cost"] = 1 inside
    # one, never starts or puts a goal in one, and the planner is handed them as an objective.
    zones: tuple[tuple[float, float, float], ...] = ()

    family: ClassVar[str] = "maze2d"

    @property
    def reset_jump(self) -> float:
        """A position jump larger than one step can make: the env was reset."""
        from dfplan.envs.maze2d import RESET_JUMP

        return RESET_JUMP

    @property
    def recipe(self) -> str:
        """The recipe (dfplan/recipes/RECIPE.json) of this task's models."""
        return self.maze

    def position_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the positions a ball can have: goals outside are refused."""
        from dfplan.envs.layouts import LAYOUTS, inner_bounds, parse_layout

        return inner_bounds(parse_layout(LAYOUTS[self.maze]))

    @property
    def env_id(self) -> str:
        return f"dfplan/{self.name}-v1"

    @property
    def dataset_task(self) -> str:
        """Multi2D and keep-out tasks share the Maze2D dataset of the same maze."""
        return f"maze2d-{self.maze}"

    @property
    def dataset_id(self) -> str:
        return f"dfplan/{self.dataset_task}-expert-v1"

    def make_env(self) -> gym.Env:
        import gymnasium as gym

        return gym.make(self.env_id, zones=self.zones)

    def reset(self, env: gym.Env, seed: int) -> tuple[np.ndarray, dict]:
        """Starts the bench's episode with this seed (its start, and its goal on Multi2D)."""
        return env.reset(seed=seed)

    def eval_task_id(self, seed: int) -> None:
        """Maze2D has no list of evaluation tasks: the seed alone sets start (and goal)."""
        return None

    def score(self, env: gym.Env, raw_return: float, success: bool) -> float:
        """D4RL-normalised return."""
        return env.unwrapped.normalized_score(raw_return)


_MAZES = {
    # maze: (time limit, ref_min, ref_max); dataset sizes are in the recipes (dfplan/recipes)
    "umaze": (300, 23.85, 161.86),
    "medium": (600, 13.13, 277.39),
    "large": (800, 6.7, 273.99),
}

TASKS: dict[str, Task] = {
    f"{prefix}-{maze}": Task(f"{prefix}-{maze}", maze, prefix == "multi2d", *consts)
    for prefix in ("maze2d", "multi2d")
    for maze, consts in _MAZES.items()
}

# Keep-out scenarios: the same dynamics, reward and normalisation, one zone on the link most
# shortest routes take where a detour exists (docs/results.md gives the share of routes it cuts).
# large: cell (4, 6), the link between the top-left rooms and the corridor to the goal (detour
# through column 10); medium: cell (3, 3), the link from the top-left rooms to the goal's side
# (detour through the loop of the bottom-left).
_ZONES = {"large": ((4.0, 6.0, 0.6),), "medium": ((3.0, 3.0, 0.6),)}
for _prefix, _maze in (("maze2d", "large"), ("maze2d", "medium"), ("multi2d", "large")):
    _base = TASKS[f"{_prefix}-{_maze}"]
    _name = f"{_base.name}-keepout"
    TASKS[_name] = Task(_name, _maze, _base.multi_goal, *_MAZES[_maze], zones=_ZONES[_maze])


# Every task of both families, by CLI name (TASKS stays the Maze2D ones: our registered envs).
ALL_TASKS: dict[str, Task | PointMazeTask] = {**TASKS, **POINTMAZE_TASKS}


def get_task(name: str) -> Task | PointMazeTask:
    """Task by CLI name; a clear error listing the valid names otherwise."""
    if name not in ALL_TASKS:
        raise UserError(f"unknown task '{name}'; valid tasks: {', '.join(ALL_TASKS)}")
    return ALL_TASKS[name]
