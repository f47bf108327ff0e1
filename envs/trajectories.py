"""The in-memory trajectory structure every reader returns, whatever the file format.

Flat, D4RL-style arrays over N steps: row t holds the observation o_t, the action a_t taken there,
the reward r_t received for it, and whether the episode ends after it (terminal or timeout).
Episodes are the runs of rows between ends; the next observation of a row is the observation of
the following row in the same episode (so each episode's last action has no recorded successor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trajectories:
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    terminals: np.ndarray  # (N,) bool: the episode ended in a terminal state after this step
    timeouts: np.ndarray  # (N,) bool: the episode was cut after this step
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # per-step extras, (N, ...)
    metadata: dict = field(default_factory=dict)  # e.g. generation settings

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    def episode_bounds(self) -> np.ndarray:
        """(E, 2) int64 array of [start, end) row ranges, one per episode."""
        ends = np.flatnonzero(self.terminals | self.timeouts) + 1
        if len(ends) == 0 or ends[-1] != len(self):
            ends = np.append(ends, len(self))
        starts = np.concatenate([[0], ends[:-1]])
        return np.stack([starts, ends], axis=1).astype(np.int64)
