"""Autoregressive rollouts past the training horizon, one token at a time.

Diffusion Forcing can generate sequences longer than the windows it was trained on: each new token
is denoised from pure noise while the tokens before it sit in a sliding window of `max_tokens`
as context. The context is kept *slightly noised* (`context_level` sampling steps), which the
paper reports keeps long rollouts stable: the model treats its own small errors as noise instead
of compounding them. `benchmarks/long_rollout.py` measures that the rollout stays bounded.
"""

from __future__ import annotations

import torch

from dfplan import diffusion, schedules
from dfplan.model import DiffusionForcingModel, tokens_to_frames


@torch.no_grad()
def rollout(
    model: DiffusionForcingModel,
    first_obs: torch.Tensor,
    tokens: int,
    steps: int = 20,
    context_level: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample `tokens` tokens after the normalised observation `first_obs` (B, obs_dim).

    steps: DDIM steps per token (pure noise to clean); context_level: the sampling-step level
    (0..steps) the context tokens are re-noised to before each new token (0 = clean context).
    Returns (B, tokens, token_dim) clean normalised tokens.
    """
    if not 0 <= context_level <= steps:
        raise ValueError(f"context_level must be in 0..{steps}, got {context_level}")
    mc = model.config
    device = first_obs.device
    b, d, od = first_obs.shape[0], mc.token_dim, mc.obs_dim
    train = schedules.to_train_levels(torch.arange(steps + 1), steps, mc.num_levels).to(device)
    abar = model.abar.to(device)
    out: list[torch.Tensor] = []  # clean tokens, (B, D) each

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)

    for _ in range(tokens):
        context = out[-(mc.max_tokens - 1) :]
        if len(out) < mc.max_tokens:
            window_obs = first_obs
        else:  # the window starts after token -W: its last frame's observation conditions it
            last_frame = tokens_to_frames(out[-mc.max_tokens][:, None], mc.frame_stack)[:, -1]
            window_obs = last_frame[:, :od]
        n = len(context)
        ctx_levels = train[context_level].expand(b, n)
        if n:
            ctx = torch.stack(context, dim=1)
            ctx = diffusion.q_sample(ctx, ctx_levels, abar, randn(b, n, d))
        else:
            ctx = first_obs.new_zeros(b, 0, d)
        x = randn(b, 1, d)
        for s in range(steps, 0, -1):
            level_from = torch.cat([ctx_levels, train[s].expand(b, 1)], dim=1)
            level_to = torch.cat([ctx_levels, train[s - 1].expand(b, 1)], dim=1)
            xs = torch.cat([ctx, x], dim=1)
            x0 = model.predict_x0(xs, level_from, window_obs)
            x = diffusion.ddim_step(xs, x0, level_from, level_to, abar)[:, -1:]
        out.append(x[:, 0])
    return torch.stack(out, dim=1)
