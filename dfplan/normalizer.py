"""Per-dimension z-score normalisation of observations and actions, stored in checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfplan.envs.trajectories import Trajectories


@dataclass
class Normalizer:
    """Per-dimension z-scores of observations and actions (official: per-dimension too)."""

    obs_mean: np.ndarray  # (obs_dim,) float32
    obs_std: np.ndarray
    act_mean: np.ndarray  # (act_dim,) float32
    act_std: np.ndarray

    MIN_STD = 1e-6  # a constant dimension is centred, not blown up

    @classmethod
    def from_trajectories(cls, data: Trajectories) -> Normalizer:
        obs = data.observations.astype(np.float64)
        act = data.actions.astype(np.float64)
        return cls(
            obs.mean(0).astype(np.float32),
            np.maximum(obs.std(0), cls.MIN_STD).astype(np.float32),
            act.mean(0).astype(np.float32),
            np.maximum(act.std(0), cls.MIN_STD).astype(np.float32),
        )

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k).tolist() for k in ("obs_mean", "obs_std", "act_mean", "act_std")
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(**{k: np.asarray(d[k], dtype=np.float32) for k in cls.__annotations__ if k in d})

    @staticmethod
    def _cast(x, v: np.ndarray):
        return torch.as_tensor(v, dtype=x.dtype, device=x.device) if torch.is_tensor(x) else v

    def normalize_obs(self, x):
        """numpy array or tensor (..., obs_dim) -> same type, z-scored."""
        return (x - self._cast(x, self.obs_mean)) / self._cast(x, self.obs_std)

    def denormalize_obs(self, x):
        return x * self._cast(x, self.obs_std) + self._cast(x, self.obs_mean)

    def normalize_goal(self, x):
        """Goal positions (..., 2) -> z-scored like the observation's positions."""
        return (x - self._cast(x, self.obs_mean[:2])) / self._cast(x, self.obs_std[:2])

    def normalize_act(self, x):
        return (x - self._cast(x, self.act_mean)) / self._cast(x, self.act_std)

    def denormalize_act(self, x):
        return x * self._cast(x, self.act_std) + self._cast(x, self.act_mean)
