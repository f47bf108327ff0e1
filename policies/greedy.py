"""Map-blind greedy baseline: D4RL's PD controller aimed straight at the goal.

It knows where the goal is but not where the walls are, so it reaches the goal only when nothing
blocks the straight line (or the walls happen to guide it there), and then stays. A learned
planner should beat it; it shows how much of a score the maze's geometry alone gives away.
"""

from __future__ import annotations

import numpy as np

from dfplan.policies.common import batch_goals, check_obs
from dfplan.policies.expert import D_GAIN, P_GAIN


class GreedyPolicy:
    def __init__(self, task_or_env=None):
        self.goal = None

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = goal

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        single = np.ndim(obs) == 1
        obs = check_obs(obs)
        goals = batch_goals(len(obs), info, self.goal, "GreedyPolicy")
        actions = np.clip(P_GAIN * (goals - obs[:, :2]) + D_GAIN * obs[:, 2:], -1.0, 1.0)
        return actions[0] if single else actions
