"""PointMaze oracle expert: the ceiling row of OGBench PointMaze tables.

It reads the maze's oracle, OGBench's `get_oracle_subgoal` (BFS over the maze cells: the next
cell on a shortest path to the goal's cell), which planners may not. Action: the unit direction
to that cell's centre, OGBench's data-generating rule without its noise; once in the goal's cell,
the direction to the goal itself (the cell centre can be farther than the 1.0 success radius).
"""

from __future__ import annotations

import numpy as np

from dfplan.policies.common import batch_goals


class SubgoalOracleExpert:
    """Batched policy: `reset(goal=None, seed=None)`, `act(obs, info)`: obs (B, 2) or (2,) ->
    actions (B, 2) or (2,); the goal comes from info["goal"] or reset(goal=)."""

    def __init__(self, task):
        # A private env, only for its maze map and oracle; it is never stepped.
        self._maze = task.make_env().unwrapped
        self.goal = None

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = None if goal is None else np.asarray(goal, dtype=np.float64)

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        positions = np.atleast_2d(obs)[:, :2]
        goals = batch_goals(len(positions), info, self.goal, "SubgoalOracleExpert")
        actions = np.stack([self._direction(p, g) for p, g in zip(positions, goals, strict=True)])
        return actions[0] if single else actions

    def _direction(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        maze = self._maze
        if maze.xy_to_ij(xy) == maze.xy_to_ij(goal):
            target = goal
        else:
            target, _ = maze.get_oracle_subgoal(xy, goal)
        step = target - xy
        return step / (np.linalg.norm(step) + 1e-6)  # OGBench's normalisation
