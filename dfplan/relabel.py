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


def segment_goals(
    positions: np.ndarray, bounds: np.ndarray, rng: np.random.Generator, lengths: tuple[int, int]
) -> np.ndarray:
    """(N, 2) hindsight goal per row: each episode is cut into consecutive segments of lengths
    uniform in lengths[0]..lengths[1] (the last one shorter), and every row of a segment gets the
    position the episode reached at the segment's end.

    So the labels look like a goal-directed dataset's: one goal held for a while, reached, then
    the next; and every goal is a future state of the row's own episode. positions: (N, 2);
    bounds: (E, 2) [start, end) rows per episode (Trajectories.episode_bounds).
    """
    low, high = lengths
    if not 1 <= low <= high:
        raise ValueError(f"segment lengths must satisfy 1 <= min <= max, got {lengths}")
    goals = np.empty((len(positions), 2), dtype=np.float32)
    for start, end in bounds:
        a = start
        while a < end:
            b = min(a + int(rng.integers(low, high + 1)), end - 1)  # the goal's row
            if b == a:  # the episode's last row is its own goal
                goals[a] = positions[a]
                break
            goals[a:b] = positions[b]
            a = b
    return goals
