"""Sampling schedules: the noise-level matrix K[m, t] of Diffusion Forcing.

Row m of the matrix gives, for every token t of the plan, the noise level it has after denoising
row m; row 0 is where sampling starts and the last row must be all zeros (clean). Levels are in
sampling-step units, 0 (clean) .. `steps` (pure noise); `to_train_levels` maps them onto the
model's 0..K training levels (DDIM's evenly spaced sub-sequence).

Shapes: a schedule is a (M + 1, T) int64 tensor for M denoising rows over T tokens.
"""

from __future__ import annotations

import math

import torch


def full_sequence(tokens: int, steps: int) -> torch.Tensor:
    """Every token shares one level: full-sequence diffusion (each column is S, S-1, ..., 0)."""
    rows = torch.arange(steps, -1, -1)
    return rows[:, None].expand(steps + 1, tokens).clone()


def autoregressive(tokens: int, steps: int) -> torch.Tensor:
    """One token at a time: token t is fully denoised before token t + 1 starts."""
    m = torch.arange(tokens * steps + 1)[:, None]
    t = torch.arange(tokens)[None, :]
    return (steps - (m - t * steps)).clamp(0, steps)


def pyramid(tokens: int, steps: int, uncertainty: float = 1.0) -> torch.Tensor:
    """Diffusion Forcing's causal-uncertainty schedule: token t lags token t - 1.

    Row m puts token t at level `steps - (m - ceil(uncertainty * t))` (clamped), so near tokens are
    committed first while far tokens stay noisier. `uncertainty` is the lag in rows per token:
    0 gives the full-sequence schedule, 1 the paper's pyramid, larger values a steeper one.
    """
    if uncertainty < 0:
        raise ValueError(f"uncertainty must be >= 0, got {uncertainty}")
    lag = torch.tensor([math.ceil(uncertainty * t) for t in range(tokens)], dtype=torch.long)
    rows = steps + int(lag[-1]) + 1 if tokens else 1
    m = torch.arange(rows)[:, None]
    return (steps - (m - lag[None, :])).clamp(0, steps)


def validate(schedule: torch.Tensor, steps: int) -> torch.Tensor:
    """Check a user's schedule matrix; returns it as int64. Raises ValueError naming the problem."""
    schedule = torch.as_tensor(schedule)
    if schedule.ndim != 2 or schedule.shape[0] < 2 or schedule.shape[1] < 1:
        raise ValueError(
            f"a schedule is a (rows >= 2, tokens >= 1) matrix, got {tuple(schedule.shape)}"
        )
    if schedule.dtype.is_floating_point and not torch.equal(schedule, schedule.round()):
        raise ValueError("schedule levels must be integers")
    schedule = schedule.long()
    if schedule.min() < 0 or schedule.max() > steps:
        raise ValueError(f"schedule levels must lie in [0, {steps}]")
    if (schedule[-1] != 0).any():
        raise ValueError("the last row of a schedule must be all zeros (clean tokens)")
    if (schedule[1:] > schedule[:-1]).any():
        m = int((schedule[1:] > schedule[:-1]).any(dim=1).nonzero()[0]) + 1
        raise ValueError(f"schedule levels must not increase down the rows (row {m} does)")
    return schedule


def to_train_levels(schedule: torch.Tensor, steps: int, num_levels: int) -> torch.Tensor:
    """Sampling-step levels 0..steps -> training levels 0..num_levels, evenly spaced (DDIM)."""
    return torch.round(schedule.double() * num_levels / steps).long()
