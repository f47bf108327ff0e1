"""Hindsight goal relabelling: goals for an episode's states from the same episode's future.

OGBench's GCBC trains on goals drawn this way (actor_p_trajgoal=1, uniform, no geometric
sampling): for the state at time t, a state of the same trajectory at a time uniform in
t+1..T. OGBench rounds a uniform real between t+1 and T; here the integer is uniform outright.
"""

from __future__ import annotations

import numpy as np


def sample_future_goals(
    observations: np.ndarray, rng: np.random.Generator, times: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(goals, indices) for the states at `times` (default 0..T-1) of one episode.

    observations: (T + 1, D), the episode's states; indices[n] is uniform in times[n]+1..T and
    goals[n] = observations[indices[n]].
    """
    observations = np.asarray(observations)
    last = len(observations) - 1  # T: the final state has no future to draw from
    if last < 1:
        raise ValueError(f"an episode needs at least 2 observations, got {len(observations)}")
    times = np.arange(last) if times is None else np.asarray(times, dtype=np.int64)
    if times.size and (times.min() < 0 or times.max() >= last):
        raise ValueError(f"times must lie in 0..{last - 1} (a future state must exist)")
    indices = rng.integers(times + 1, last + 1)  # high is exclusive: t+1..T
    return observations[indices], indices
