"""The Diffusion Forcing planner as a policy: drop it into any gymnasium loop, single or vector.

    policy = DiffusionForcingPolicy.from_pretrained("maze2d-large")
    policy.reset(seed=0)
    action = policy.act(obs, info)        # (4,) -> (2,) or (B, 4) -> (B, 2)

The goal is read from `info["goal"]` when given (else from `reset(goal=...)`): a goal-conditioned
model is told it, and the reward guidance (when on) pulls toward it. The policy counts
steps since reset to know how much of the episode is left (the plan never runs past it). A
position jump larger than one physics step can make is taken as an environment reset (vector
envs reset sub-environments on their own), as is reaching the time limit; that environment's
clock and plan start afresh. A changed goal also restarts that environment's plan.
"""

from __future__ import annotations

import numpy as np
import torch

from dfplan.guidance import GoalReward
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.common import PlannerPolicy


class DiffusionForcingPolicy(PlannerPolicy):
    """`from_pretrained(task, checkpoint=None, device=None, **planner_overrides)` loads a DF
    checkpoint; the overrides replace `PlannerConfig` fields, e.g. `mcg_samples=1`."""

    KIND = "df"
    CONFIG = PlannerConfig
    PLANNER = DiffusionForcingPlanner

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        single = np.ndim(obs) == 1
        obs, goals, stale = self._begin(obs, info)
        # A new episode or a new goal makes an env's old plan worthless: plan it from scratch.
        if stale.any():
            self.planner.forget(np.flatnonzero(stale))
        steps_left = np.maximum(self.max_episode_steps - self.clock.t, 1)
        # Guidance off means no reward at all: no gradient, and no warm draw picked by it.
        reward = None
        if self.planner.config.guidance_scale > 0:
            reward = GoalReward(torch.tensor(goals, dtype=torch.float32))
        actions = self.planner.act(obs, reward, steps_left, goals)
        self.clock.advance(obs, goals)
        return actions[0] if single else actions
