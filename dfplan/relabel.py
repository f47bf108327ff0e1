"""Hindsight goal relabelling: goals for an episode's states from the same episode's future.

OGBench's datasets hold no goals; every method in its tables learns them this way. OGBench's GCBC
draws, for the state at time t, a state at a time uniform in t+1..T. Here an episode is cut into
segments that each head for the state at their end, so the labels read like a goal-directed
dataset's (the form the Maze2D models learn from), and every goal is still a future state of the
row's own episode.
"""

from __future__ import annotations

import numpy as np


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
