"""Training windows: stride-1 slices of expert episodes, tokenised and normalised, with the goal
each token's data was heading for; and the fingerprint that ties a run to its data."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.model import frames_to_tokens
from dfplan.normalizer import Normalizer


def dataset_fingerprint(data: Trajectories) -> str:
    """Short hash of observations, actions, episode ends and goal labels (when the data has
    them): same data, same fingerprint."""
    h = hashlib.sha256()
    arrays = [data.observations, data.actions, data.episode_bounds()]
    if "goal" in data.infos:
        arrays.append(data.infos["goal"])
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def training_goals(
    data: Trajectories, hindsight_segment: list[int] | None, seed: int
) -> tuple[np.ndarray | None, bool]:
    """((N, 2) goal per row or None, whether they are the data's own labels).

    The data's goal labels where it has them; else, with `hindsight_segment` (min, max) steps,
    goals relabelled from each episode's own future (`dfplan.relabel.segment_goals`, seeded):
    how a model learns goals from data that holds none (OGBench's)."""
    goals = dataset_goals(data)
    if goals is not None or not hindsight_segment:
        return goals, goals is not None
    from dfplan.relabel import segment_goals

    rng = np.random.default_rng(seed)
    lengths = (int(hindsight_segment[0]), int(hindsight_segment[1]))
    try:
        return segment_goals(data.observations[:, :2], data.episode_bounds(), rng, lengths), False
    except ValueError as e:
        raise UserError(f"hindsight_segment: {e}") from None


def dataset_goals(data: Trajectories) -> np.ndarray | None:
    """(N, 2) goal position per row (the target the data was heading for), or None."""
    goal = data.infos.get("goal")
    if goal is None:
        return None
    goal = np.asarray(goal, dtype=np.float32)
    if goal.shape != (len(data), 2):
        raise UserError(
            f"the dataset's infos/goal has shape {goal.shape}, expected ({len(data)}, 2)"
        )
    return goal


class WindowSampler:
    """Uniformly drawn stride-1 windows of `window` frames that never cross an episode end.

    Frame i of an episode is [obs_{i+1}, action_i] (normalised), so an episode of L rows has L - 1
    frames and L - window valid starts. `sample(B)` returns first_obs (B, obs_dim), the
    observation before the window's first frame, tokens (B, window / frame_stack, token_dim) and
    goals (B, window / frame_stack, 2): each token's goal is the normalised goal label of the row
    its first frame starts from (None when the data has no goal labels). Its randomness is one
    CPU torch.Generator whose state resumes the sampler exactly.
    """

    def __init__(
        self,
        data: Trajectories,
        window: int,
        frame_stack: int,
        normalizer: Normalizer,
        seed: int,
        goals: np.ndarray | None = None,
    ):
        if window < 1 or window % frame_stack:
            raise UserError(f"window ({window}) must be a positive multiple of {frame_stack}")
        bounds = data.episode_bounds()
        lengths = bounds[:, 1] - bounds[:, 0]
        starts = [np.arange(s, e - window) for s, e in bounds if e - s > window]
        if not starts:
            raise UserError(
                f"no episode is long enough for windows of {window} steps (the longest has "
                f"{lengths.max()} rows, {window + 1} needed); use a smaller --window"
            )
        self.window, self.frame_stack = window, frame_stack
        self.starts = torch.from_numpy(np.concatenate(starts))  # (S,) int64 row indices
        obs = torch.from_numpy(normalizer.normalize_obs(data.observations).astype(np.float32))
        act = torch.from_numpy(normalizer.normalize_act(data.actions).astype(np.float32))
        self.obs = obs  # (N, obs_dim)
        # Row t's frame [o_{t+1}, a_t]; rows whose t + 1 is in the next episode are never used.
        self.frames = torch.cat([obs[1:], act[:-1]], dim=1)  # (N - 1, obs_dim + act_dim)
        self.goals = None
        if goals is not None:
            self.goals = torch.from_numpy(normalizer.normalize_goal(goals).astype(np.float32))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        pick = torch.randint(len(self.starts), (batch_size,), generator=self.generator)
        start = self.starts[pick]  # (B,)
        rows = start[:, None] + torch.arange(self.window)  # (B, window)
        tokens = frames_to_tokens(self.frames[rows], self.frame_stack)  # (B, T, token_dim)
        goals = None
        if self.goals is not None:
            goals = self.goals[rows[:, :: self.frame_stack]]  # (B, T, 2)
        return self.obs[start], tokens, goals
