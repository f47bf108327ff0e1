"""Uniform random actions: the floor every benchmark table needs."""

from __future__ import annotations

import numpy as np


class RandomPolicy:
    def __init__(self, task_or_env=None):
        self.seed: int | None = None
        self.rngs: list[np.random.Generator] = []

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.seed = seed
        self.rngs = []

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        obs = np.asarray(obs)
        batch = np.atleast_2d(obs)
        while len(self.rngs) < len(batch):
            # Environment k of a batch draws from seed + k, as if it ran alone.
            k = len(self.rngs)
            self.rngs.append(np.random.default_rng(None if self.seed is None else self.seed + k))
        actions = np.stack([rng.uniform(-1.0, 1.0, size=2) for rng in self.rngs[: len(batch)]])
        return actions[0] if obs.ndim == 1 else actions
