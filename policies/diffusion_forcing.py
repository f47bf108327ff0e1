"""The Diffusion Forcing planner as a policy: drop it into any gymnasium loop, single or vector.

    policy = DiffusionForcingPolicy.from_pretrained("maze2d-large")
    policy.reset(seed=0)
    action = policy.act(obs, info)        # (4,) -> (2,) or (B, 4) -> (B, 2)

The goal is read from `info["goal"]` when given (else from `reset(goal=...)`); the policy counts
steps since reset to know how much of the episode is left (the plan never runs past it). A
position jump larger than one physics step can make is taken as an environment reset (vector
envs reset sub-environments on their own), as is reaching the time limit; that environment's
clock and plan start afresh. A changed goal also restarts that environment's plan.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dfplan.envs.maze2d import RESET_JUMP
from dfplan.errors import UserError
from dfplan.guidance import GoalReward
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig


class DiffusionForcingPolicy:
    def __init__(self, planner: DiffusionForcingPlanner, max_episode_steps: int):
        self.planner = planner
        self.max_episode_steps = max_episode_steps
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
        **planner_overrides,
    ) -> DiffusionForcingPolicy:
        """Load the checkpoint shipped for `task` (or `checkpoint`) with its tuned planner settings.

        `planner_overrides` replace fields of `PlannerConfig`, e.g. `mcg_samples=1`.
        """
        from dfplan.checkpoint import load_checkpoint, shipped_checkpoint
        from dfplan.envs import TASKS, get_task
        from dfplan.normalizer import Normalizer

        spec = get_task(task)
        stem = checkpoint if checkpoint is not None else shipped_checkpoint(spec)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta = load_checkpoint(stem, device=device)
        trained_on = get_task(meta["task"]) if meta.get("task") in TASKS else None
        if trained_on is None or trained_on.maze != spec.maze:
            raise UserError(
                f"checkpoint {stem} was trained for '{meta.get('task')}', which is not the "
                f"{spec.maze} maze of {spec.name}; use a checkpoint trained on {spec.dataset_task}"
            )
        try:
            config = replace(PlannerConfig(**meta.get("planner", {})), **planner_overrides)
            config.validate()
            normalizer = Normalizer.from_dict(meta["normalizer"])
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"bad planner settings or checkpoint metadata ({stem}): {e}") from None
        planner = DiffusionForcingPlanner(model, normalizer, config)
        policy = cls(planner, spec.max_episode_steps)
        policy.checkpoint = str(stem)
        return policy

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = None if goal is None else np.asarray(goal, dtype=np.float64)
        self.seed = seed
        self.batch = None  # the planner is sized on the first act()

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        obs = np.atleast_2d(obs)
        if not np.all(np.isfinite(obs)):
            raise ValueError("observation contains NaN or infinite values")
        goal = info.get("goal") if info is not None else None
        goal = self.goal if goal is None else goal
        if goal is None:
            raise ValueError("DiffusionForcingPolicy needs a goal: info['goal'] or reset(goal=)")
        goals = np.broadcast_to(np.asarray(goal, dtype=np.float64), (len(obs), 2))
        if self.batch != len(obs):
            seeds = None if self.seed is None else [self.seed + k for k in range(len(obs))]
            self.planner.reset(len(obs), seeds)
            self.batch = len(obs)
            self.t = np.zeros(len(obs), dtype=np.int64)
            self.last = obs[:, :2].copy()
            self.last_goals = goals.copy()
        # A new episode in some env (vector envs reset on their own): the ball jumped farther
        # than one step can move it, or the time limit has passed. Its clock starts again.
        new_episode = np.linalg.norm(obs[:, :2] - self.last, axis=1) > RESET_JUMP
        new_episode |= self.t >= self.max_episode_steps
        self.t[new_episode] = 0
        # A new goal makes the old plan worthless: plan that env from scratch.
        stale = new_episode | np.any(goals != self.last_goals, axis=1)
        if stale.any():
            self.planner.forget(np.flatnonzero(stale))
        steps_left = np.maximum(self.max_episode_steps - self.t, 1)
        reward = GoalReward(torch.tensor(goals, dtype=torch.float32))
        actions = self.planner.act(obs, reward, steps_left)
        self.t += 1
        self.last = obs[:, :2].copy()
        self.last_goals = goals.copy()
        return actions[0] if single else actions
