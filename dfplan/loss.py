"""The Diffusion Forcing training loss: every token of every window gets its own noise level."""

from __future__ import annotations

import torch

from dfplan import diffusion
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
