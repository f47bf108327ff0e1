"""What the learned policies share: loading a task's checkpoint, goals, per-env episode clocks.

`DiffusionForcingPolicy` and `DiffuserPolicy` are `PlannerPolicy`s: a planner built from a
checkpoint, acting on batches of environments that may reset on their own (vector envs) and whose
goals may change (Multi2D). `EpisodeClock` tells them which environments started a new episode or
got a new goal, so their plans can be dropped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from dfplan.envs.maze2d import MAX_SPEED
from dfplan.errors import UserError


def check_obs(obs) -> np.ndarray:
    """(D,) or (B, D) observations -> (B, D) float64; NaN or infinite values are refused."""
    obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
    if not np.all(np.isfinite(obs)):
        raise ValueError("observation contains NaN or infinite values")
    return obs


def keep_in_maze(obs: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(B, D) observations with positions clipped to the inside of the maze and velocities (Maze2D:
    D = 4) to twice the env's speed limit (it clips them to MAX_SPEED before each step).

    The env never produces anything outside these, so its observations pass unchanged; an
    observation far outside (a glitch, another frame of reference) would otherwise overflow the
    planner's float32 arithmetic into NaN actions. It is planned from the nearest maze point.
    bounds: the task's `position_bounds()`.
    """
    low, high = bounds
    speed = 2 * MAX_SPEED
    return np.concatenate([obs[:, :2].clip(low, high), obs[:, 2:].clip(-speed, speed)], axis=1)


def batch_goals(
    batch: int,
    info: dict | None,
    default,
    who: str,
    maze: str | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(B, 2) goals from info["goal"] (one per env, or one for all), else from `default`.

    With `bounds` (the task's `position_bounds()`), goals outside them or not finite are refused:
    nothing could reach them."""
    goal = info.get("goal") if info is not None else None
    goal = default if goal is None else goal
    if goal is None:
        raise ValueError(f"{who} needs a goal: info['goal'] or reset(goal=)")
    goals = np.broadcast_to(np.asarray(goal, dtype=np.float64), (batch, 2))
    if bounds is None:
        return goals
    low, high = bounds
    outside = ~np.all(np.isfinite(goals) & (goals >= low) & (goals <= high), axis=1)
    if outside.any():
        x, y = goals[np.argmax(outside)]
        raise ValueError(
            f"goal ({x:g}, {y:g}) is outside the {maze} maze: goals lie in x [{low[0]:g}, "
            f"{high[0]:g}], y [{low[1]:g}, {high[1]:g}] (the env's position frame)"
        )
    return goals


def load_for_task(task: str, checkpoint, device: str | None, kind: str):
    """(Task, stem, model, meta) of the `kind` checkpoint shipped for `task` (or `checkpoint`),
    on `device` (None: cuda if available); UserError (one line) for a checkpoint of another
    maze or kind."""
    import torch

    from dfplan.checkpoint import load_checkpoint, shipped_checkpoint
    from dfplan.envs import ALL_TASKS, get_task

    spec = get_task(task)
    stem = checkpoint if checkpoint is not None else shipped_checkpoint(spec, kind)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_checkpoint(stem, device=device, kind=kind)
    trained_on = get_task(meta["task"]) if meta.get("task") in ALL_TASKS else None
    if trained_on is None or trained_on.dataset_task != spec.dataset_task:
        raise UserError(
            f"checkpoint {stem} was trained for '{meta.get('task')}', which is not the "
            f"{spec.maze} maze of {spec.name}; use a checkpoint trained on {spec.dataset_task}"
        )
    return spec, stem, model, meta


class EpisodeClock:
    """Steps since reset per environment of a batch, and which plans went stale.

    A new episode starts in an environment when its ball jumps farther than one physics step can
    move it (vector envs reset sub-environments on their own) or its time limit has passed; its
    clock restarts. A plan is stale on a new episode or when the environment's goal changed.
    Call `update` before acting and `advance` after.
    """

    def __init__(
        self, max_episode_steps: int, obs: np.ndarray, goals: np.ndarray, reset_jump: float
    ):
        self.max_episode_steps = max_episode_steps
        self.reset_jump = reset_jump
        self.t = np.zeros(len(obs), dtype=np.int64)  # (B,) steps since the env's reset
        self.last = obs[:, :2].copy()
        self.last_goals = goals.copy()

    def update(self, obs: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """(B,) bool: environments whose plan must be dropped (new episode or new goal)."""
        new_episode = np.linalg.norm(obs[:, :2] - self.last, axis=1) > self.reset_jump
        new_episode |= self.t >= self.max_episode_steps
        self.t[new_episode] = 0
        return new_episode | np.any(goals != self.last_goals, axis=1)

    def advance(self, obs: np.ndarray, goals: np.ndarray) -> None:
        self.t += 1
        self.last = obs[:, :2].copy()
        self.last_goals = goals.copy()


class PlannerPolicy:
    """Base of the policies around a trained planner: loading, `reset`, per-batch state.

    Subclasses set KIND (the checkpoint's MODEL_KINDS name), CONFIG (the planner settings
    dataclass, stored in the checkpoint as "planner") and PLANNER (built as
    PLANNER(model, normalizer, config), with `reset(batch_size, seeds)`), and write `act`,
    starting it with `_begin`.
    """

    KIND: str
    CONFIG: type
    PLANNER: type

    def __init__(self, planner, task):
        self.planner = planner
        self.task = task  # a registry Task: its maze bounds goals and positions
        self.max_episode_steps = task.max_episode_steps
        self.bounds = task.position_bounds()  # once, not on every act()
        self.goal: np.ndarray | None = None
        self.seed: int | None = None
        self.batch: int | None = None
        self.checkpoint: str | None = None  # where the weights came from, for result files

    @classmethod
    def from_pretrained(
        cls,
        task: str,
        checkpoint: str | Path | None = None,
        device: str | None = None,
        planner_key: str = "planner",
        objective=None,
        **planner_overrides,
    ):
        """Load the checkpoint of this kind shipped for `task` (or `checkpoint`) with its tuned
        planner settings (the checkpoint JSON's `planner_key` entry); `planner_overrides`
        replace fields of CONFIG. `objective` (policies that plan with one): a callable on a
        plan, see dfplan.guidance.

        A checkpoint of another maze or kind, or with bad settings, raises UserError (one line).
        """
        from dfplan.normalizer import Normalizer

        spec, stem, model, meta = load_for_task(task, checkpoint, device, cls.KIND)
        try:
            if planner_key != "planner" and planner_key not in meta:
                raise KeyError(f"no '{planner_key}' settings")
            settings = meta.get(planner_key, {})
            config = replace(cls.CONFIG.from_dict(settings), **planner_overrides)
            config.validate()
            normalizer = Normalizer.from_dict(meta["normalizer"])
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"bad planner settings or checkpoint metadata ({stem}): {e}") from None
        policy = cls(cls.PLANNER(model, normalizer, config), spec)
        policy.checkpoint = str(stem)
        try:
            policy._load_extras(meta)
            if objective is not None:
                policy.set_objective(objective)
        except (TypeError, ValueError) as e:
            raise UserError(f"{e} ({stem})") from None
        return policy

    def _load_extras(self, meta: dict) -> None:
        """Read what else the checkpoint ships for this kind of policy (default: nothing)."""

    def set_objective(self, objective) -> None:
        raise ValueError(f"{type(self).__name__} does not plan with an objective")

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = None if goal is None else np.asarray(goal, dtype=np.float64)
        self.seed = seed
        self.batch = None  # the planner is sized on the first act()

    def _begin(self, obs, info: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The start of every `act`: checked (B, 4) observations, (B, 2) goals, and which envs'
        plans are stale. A new batch size resets the planner (env k seeded `seed + k`)."""
        obs = keep_in_maze(check_obs(obs), self.bounds)
        b = len(obs)
        goals = batch_goals(b, info, self.goal, type(self).__name__, self.task.maze, self.bounds)
        if self.batch != b:
            self.planner.reset(b, None if self.seed is None else [self.seed + k for k in range(b)])
            self.batch = b
            self.clock = EpisodeClock(self.max_episode_steps, obs, goals, self.task.reset_jump)
            self._new_batch(b)
        return obs, goals, self.clock.update(obs, goals)

    def _new_batch(self, batch: int) -> None:
        """Size per-environment state for a new batch (subclasses that keep some)."""
