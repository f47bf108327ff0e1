"""Uniform random actions: the floor every benchmark table needs."""

from __future__ import annotations

import numpy as np


class RandomPolicy:
    def __init__(self, task_or_env=None):
        self.rng = np.random.default_rng()

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        obs = np.asarray(obs)
        shape = (2,) if obs.ndim == 1 else (len(obs), 2)
        return self.rng.uniform(-1.0, 1.0, size=shape)
