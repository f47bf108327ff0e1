"""The Diffusion Forcing training loss: every token of every window gets its own noise level."""

from __future__ import annotations

import torch

from dfplan import diffusion, schedules
from dfplan.model import DiffusionForcingModel


def sample_levels(
    shape: tuple[int, int], num_levels: int, generator: torch.Generator, device=None
) -> torch.Tensor:
    """(B, T) levels drawn uniformly from {0, ..., K}, independently per token and per sample.

    Level 0 (clean) is included so the model sees exactly clean context tokens, as the planner
    feeds it once the near future is committed; those tokens carry no loss.
    """
    return torch.randint(0, num_levels + 1, shape, generator=generator, device=device)


def noisy_batch(
    x0: torch.Tensor, abar: torch.Tensor, num_levels: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean tokens (B, T, D) -> (x_noisy (B, T, D), levels (B, T), noise (B, T, D))."""
    levels = sample_levels(x0.shape[:2], num_levels, generator, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return diffusion.q_sample(x0, levels, abar, noise), levels, noise


def diffusion_loss(
    model: DiffusionForcingModel,
    first_obs: torch.Tensor,
    x0: torch.Tensor,
    generator: torch.Generator,
    net: torch.nn.Module | None = None,
    goals: torch.Tensor | None = None,
    goal_dropout: float = 0.0,
) -> torch.Tensor:
    """Plain MSE on the model's parametrisation, averaged over noisy (level > 0) tokens.

    `net` is what runs the forward pass (a DDP wrapper of `model`); `model` gives config and abar.
    goals: (B, T, goal_dim) per-token goals or None; a `goal_dropout` fraction of the windows is
    trained with the "no goal" embedding instead.
    """
    cfg = model.config
    x_noisy, levels, noise = noisy_batch(x0, model.abar, cfg.num_levels, generator)
    has_goal = None
    if goals is not None:
        keep = torch.rand(x0.shape[0], generator=generator, device=x0.device)
        has_goal = keep >= goal_dropout  # (B,)
    pred = (net or model)(x_noisy, levels, first_obs, goals, has_goal).float()  # (B, T, D)
    if cfg.prediction == "x0":
        target = x0
    elif cfg.prediction == "eps":
        target = noise
    else:
        target = diffusion.v_from_x0_eps(x0, noise, levels, model.abar)
    return noisy_token_mse(pred, target, levels)


def noisy_token_mse(pred: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """MSE of (B, T, D) predictions averaged over the tokens with level > 0 (a clean token has
    nothing to denoise: eps and v are undefined there)."""
    per_token = (pred - target).pow(2).mean(-1)  # (B, T)
    noisy = (levels > 0).float()
    return (per_token * noisy).sum() / noisy.sum().clamp(min=1.0)


def pyramid_levels(
    batch: int, tokens: int, steps: int, num_levels: int, generator: torch.Generator, device=None
) -> torch.Tensor:
    """(B, T) model levels as a pyramid row of `steps` sampling steps puts them: step level
    clamp(t + c, 0, steps) for one offset c per window, drawn from -steps+1..steps-1 (the rows
    a planner runs from a cold start or a warm one), mapped to the model's levels as it does."""
    c = torch.randint(-steps + 1, steps, (batch, 1), generator=generator, device=device)
    step = (torch.arange(tokens, device=device)[None, :] + c).clamp(0, steps)
    return schedules.to_train_levels(step, steps, num_levels).to(device)


def guidance_distillation_loss(
    student: DiffusionForcingModel,
    teacher: DiffusionForcingModel,
    first_obs: torch.Tensor,
    x0: torch.Tensor,
    generator: torch.Generator,
    goals: torch.Tensor,
    goal_weight: float,
    goal_dropout: float,
    sampling_steps: int,
    net: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Classifier-free guidance distilled into one pass: MSE between the student's x0 and the
    teacher's guided x0_none + w (x0_goal - x0_none) for windows that keep their goal, and the
    teacher's unconditional x0 for the `goal_dropout` fraction that does not (so goal-free
    sampling keeps working), over noisy tokens. Half the windows take their levels from a
    pyramid row (`pyramid_levels`), where the planner spends its passes; the other half
    independent levels, as in training."""
    x_noisy, levels, noise = noisy_batch(x0, teacher.abar, teacher.config.num_levels, generator)
    b, t = levels.shape
    rows = pyramid_levels(b, t, sampling_steps, teacher.config.num_levels, generator, x0.device)
    from_row = torch.rand(b, 1, generator=generator, device=x0.device) < 0.5
    levels = torch.where(from_row, rows, levels)
    x_noisy = diffusion.q_sample(x0, levels, teacher.abar, noise)
    keep = torch.rand(b, generator=generator, device=x0.device) >= goal_dropout
    with torch.no_grad():
        x0_goal, x0_none = teacher.predict_x0_with_and_without_goal(
            x_noisy, levels, first_obs, goals
        )
        guided = x0_none + goal_weight * (x0_goal - x0_none)
        target = torch.where(keep[:, None, None], guided, x0_none)
    out = (net or student)(x_noisy, levels, first_obs, goals, keep)
    pred = student.to_x0(x_noisy, out.float(), levels)
    return noisy_token_mse(pred, target, levels)
