"""Map-aware waypoint expert: D4RL's data-generating controller, as a batched policy.

Grid shortest path (BFS over 4-connected free cells; the same cells as D4RL's Q-iteration planner
on these mazes) from the agent's cell to the goal's cell, intermediate waypoints jittered by
-U(0, 0.2) per axis, and D4RL's PD rule `clip(10 * (waypoint - pos) - 1 * vel, -1, 1)`, moving to
the next waypoint within 0.1. Once within 0.1 of the goal cell it holds there with the same rule.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from dfplan.envs.layouts import LAYOUTS, WALL, parse_layout
from dfplan.envs.maze2d import RESET_JUMP
from dfplan.policies.common import batch_goals

P_GAIN, D_GAIN = 10.0, -1.0  # D4RL's waypoint controller gains
SOLVE_RADIUS = 0.1  # a waypoint (or the goal cell) counts as reached within this distance
VEL_THRESH = 0.1  # D4RL: only advance when the per-step displacement is below this
ZONE_MARGIN = 0.3  # the zone-aware expert walls off cells this close to a zone's edge


def shortest_path(layout: np.ndarray, start: tuple[int, int], goal: tuple[int, int]):
    """Cells from `start` (excluded) to `goal` (included) along a BFS shortest path."""
    if start == goal:
        return [goal]
    parent = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        i, j = cell
        for nxt in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if nxt not in parent and layout[nxt] != WALL:
                parent[nxt] = cell
                queue.append(nxt)
    if goal not in parent:
        raise ValueError(f"no path from cell {start} to cell {goal}")
    path = []
    cell = goal
    while cell != start:
        path.append(cell)
        cell = parent[cell]
    return path[::-1]


def nearest_free_cell(layout: np.ndarray, position) -> tuple[int, int]:
    """D4RL's cell of a position (rounded), moved to the nearest free cell if needed."""
    cell = (int(round(position[0])), int(round(position[1])))
    h, w = layout.shape
    if 0 <= cell[0] < h and 0 <= cell[1] < w and layout[cell] != WALL:
        return cell
    free = np.argwhere(layout != WALL)
    k = np.argmin(np.linalg.norm(free - np.asarray(position[:2]), axis=1))
    return int(free[k][0]), int(free[k][1])


class WaypointFollower:
    """One environment's waypoint-following state (D4RL's WaypointController, simplified)."""

    def __init__(self, layout: np.ndarray, rng: np.random.Generator):
        self.layout = layout
        self.rng = rng
        self.target_cell: tuple[int, int] | None = None
        self.waypoints: list[np.ndarray] = []
        self.index = 0
        self.prev_position: np.ndarray | None = None

    def _plan(self, position: np.ndarray, target_cell: tuple[int, int]) -> None:
        cells = shortest_path(self.layout, nearest_free_cell(self.layout, position), target_cell)
        waypoints = [np.asarray(c, dtype=np.float64) for c in cells]
        for w in waypoints[:-1]:
            w -= self.rng.uniform(0.0, 0.2, size=2)
        self.target_cell = target_cell
        self.waypoints = waypoints
        self.index = 0
        self.prev_position = position.copy()

    def action(self, position: np.ndarray, velocity: np.ndarray, goal) -> tuple[np.ndarray, bool]:
        """PD action toward the current waypoint, and whether the goal cell is reached."""
        target_cell = nearest_free_cell(self.layout, goal)
        jumped = (
            self.prev_position is not None
            and np.linalg.norm(position - self.prev_position) > RESET_JUMP
        )
        if target_cell != self.target_cell or jumped:
            self._plan(position, target_cell)
        target = np.asarray(self.target_cell, dtype=np.float64)
        reached = np.linalg.norm(position - target) < SOLVE_RADIUS
        waypoint = target if reached else self.waypoints[self.index]
        action = np.clip(P_GAIN * (waypoint - position) + D_GAIN * velocity, -1.0, 1.0)
        step = np.linalg.norm(self.prev_position - position)
        close = np.linalg.norm(position - waypoint) < SOLVE_RADIUS
        if not reached and close and step < VEL_THRESH and self.index < len(self.waypoints) - 1:
            self.index += 1
        self.prev_position = position.copy()
        return action, bool(reached)


class WaypointExpert:
    """Batched waypoint expert following the dfplan policy protocol.

    `WaypointExpert("maze2d-large")` (a task name, a maze name, or an env), then
    `reset(goal=None, seed=None)` and `act(obs, info)`: obs (B, 4) or (4,) -> actions (B, 2)
    or (2,).
    The goal comes from `info["goal"]` ((B, 2) or (2,)) when given, else from `reset(goal=...)`.
    With keep-out `zones` ((x, y, radius), ...) it routes around them: every cell whose centre
    lies within radius + 0.3 of a zone's centre counts as a wall (the zone-aware expert).
    """

    def __init__(self, task_or_env, zones=()):
        self.layout = _layout_of(task_or_env).copy()
        cells = np.argwhere(self.layout != WALL)
        for x, y, r in zones:
            for i, j in cells[np.linalg.norm(cells - (x, y), axis=1) < r + ZONE_MARGIN]:
                self.layout[i, j] = WALL
        self.goal: np.ndarray | None = None
        self.seed: int | None = None
        self.followers: list[WaypointFollower] = []

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = None if goal is None else np.asarray(goal, dtype=np.float64)
        self.seed = seed
        self.followers = []

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        obs = np.atleast_2d(obs)
        goals = batch_goals(len(obs), info, self.goal, "WaypointExpert")
        while len(self.followers) < len(obs):
            # Environment k of a batch draws its jitter from seed + k, as if it ran alone.
            k = len(self.followers)
            rng = np.random.default_rng(None if self.seed is None else self.seed + k)
            self.followers.append(WaypointFollower(self.layout, rng))
        pairs = zip(self.followers, obs, goals, strict=False)  # followers may outnumber obs
        actions = np.stack([f.action(o[:2], o[2:4], g)[0] for f, o, g in pairs])
        return actions[0] if single else actions


def _layout_of(task_or_env) -> np.ndarray:
    if isinstance(task_or_env, str):
        from dfplan.envs.tasks import TASKS

        maze = TASKS[task_or_env].maze if task_or_env in TASKS else task_or_env
        if maze not in LAYOUTS:
            from dfplan.envs.tasks import get_task

            get_task(task_or_env)  # raises the clear unknown-task error
        return parse_layout(LAYOUTS[maze])
    env = getattr(task_or_env, "unwrapped", task_or_env)
    if hasattr(env, "layout"):
        return env.layout
    # A gymnasium vector env: every sub-env shares the maze.
    return np.asarray(task_or_env.get_attr("layout")[0])
