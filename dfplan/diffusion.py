"""Diffusion math as pure functions on tensors, with a noise level per token.

Convention: an integer noise level k in [0, K] per token; level 0 is the clean token and level K
the noisiest. `alphas_cumprod` returns abar with K + 1 entries and abar[0] = 1, so every formula
below holds at level 0 too (the token is its own x0 there). Data tensors are (B, T, D) and levels
(B, T) long: every token carries its own level, which is what Diffusion Forcing needs.

References: DDPM = Ho et al. 2020 (arXiv:2006.11239); DDIM = Song et al. 2021 (arXiv:2010.02502);
improved DDPM = Nichol & Dhariwal 2021 (arXiv:2102.09672); v = Salimans & Ho 2022
(arXiv:2202.00512).
"""

from __future__ import annotations

import math

import torch

BETA_START, BETA_END = 1e-4, 0.02  # DDPM's linear schedule, the one the official DF code uses
COSINE_OFFSET = 0.008  # improved DDPM's s: keeps the first betas from being too small
MAX_BETA = 0.999  # improved DDPM clips cosine betas so the last levels stay invertible


def make_betas(kind: str, num_levels: int) -> torch.Tensor:
    """(K,) float64 betas; betas[k - 1] takes level k - 1 to level k.

    "linear": DDPM sec. 4, betas from 1e-4 to 0.02. "cosine": improved DDPM eq. 17,
    abar(t) = f(t) / f(0) with f(t) = cos^2(((t / K + s) / (1 + s)) * pi / 2), and
    beta_t = 1 - abar(t) / abar(t - 1) clipped to 0.999.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if kind == "linear":
        return torch.linspace(BETA_START, BETA_END, num_levels, dtype=torch.float64)
    if kind == "cosine":
        t = torch.arange(num_levels + 1, dtype=torch.float64) / num_levels
        f = torch.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)
    raise ValueError(f"unknown beta schedule '{kind}'; valid: linear, cosine")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """(K + 1,) abar with abar[0] = 1 and abar[k] = prod_{i <= k} (1 - beta_i) (DDPM eq. 4)."""
    one = torch.ones(1, dtype=betas.dtype, device=betas.device)
    return torch.cat([one, torch.cumprod(1 - betas, dim=0)])


def _coef(abar: torch.Tensor, levels: torch.Tensor, like: torch.Tensor):
    """sqrt(abar_k) and sqrt(1 - abar_k) per token, shaped (B, T, 1) to broadcast over D."""
    a = abar.to(levels.device)[levels]  # (B, T), computed in abar's (float64) precision
    sqrt_a = a.sqrt().unsqueeze(-1).to(like.dtype)
    sqrt_1ma = (1 - a).clamp(min=0).sqrt().unsqueeze(-1).to(like.dtype)
    return sqrt_a, sqrt_1ma


def q_sample(
    x0: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Noise tokens to their levels: x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps (DDPM eq. 4).

    x0, noise: (B, T, D); levels: (B, T) long; returns (B, T, D). Level 0 returns x0 exactly.
    """
    sqrt_a, sqrt_1ma = _coef(abar, levels, x0)
    return sqrt_a * x0 + sqrt_1ma * noise


def eps_from_x0(
    x_k: torch.Tensor, x0: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """The noise implied by x0: eps = (x_k - sqrt(abar_k) x0) / sqrt(1 - abar_k) (DDPM eq. 4 solved
    for eps; DDIM eq. 12's "predicted noise").

    At level 0 the noise is undefined (the token is clean); zeros are returned there.
    """
    sqrt_a, sqrt_1ma = _coef(abar, levels, x_k)
    clean = sqrt_1ma == 0
    eps = (x_k - sqrt_a * x0) / torch.where(clean, torch.ones_like(sqrt_1ma), sqrt_1ma)
    return torch.where(clean, torch.zeros_like(eps), eps)


def x0_from_eps(
    x_k: torch.Tensor, eps: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """x0 = (x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k) (DDPM eq. 15; DDIM eq. 12, "predicted x0").

    Defined at every level, since abar_k > 0 for k <= K.
    """
    sqrt_a, sqrt_1ma = _coef(abar, levels, x_k)
    return (x_k - sqrt_1ma * eps) / sqrt_a


def v_from_x0_eps(
    x0: torch.Tensor, eps: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """v = sqrt(abar_k) eps - sqrt(1 - abar_k) x0 (Salimans & Ho sec. 4, alpha = sqrt(abar))."""
    sqrt_a, sqrt_1ma = _coef(abar, levels, x0)
    return sqrt_a * eps - sqrt_1ma * x0


def x0_from_v(
    x_k: torch.Tensor, v: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """x0 = sqrt(abar_k) x_k - sqrt(1 - abar_k) v (Salimans & Ho, from x_k and v being a rotation
    of (x0, eps) by the same angle)."""
    sqrt_a, sqrt_1ma = _coef(abar, levels, x_k)
    return sqrt_a * x_k - sqrt_1ma * v


def eps_from_v(
    x_k: torch.Tensor, v: torch.Tensor, levels: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """eps = sqrt(1 - abar_k) x_k + sqrt(abar_k) v (the other half of the same rotation)."""
    sqrt_a, sqrt_1ma = _coef(abar, levels, x_k)
    return sqrt_1ma * x_k + sqrt_a * v


def ddim_step(
    x_k: torch.Tensor,
    x0_pred: torch.Tensor,
    level_from: torch.Tensor,
    level_to: torch.Tensor,
    abar: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM update from per-token levels `level_from` to `level_to` (<= level_from).

    x_k, x0_pred: (B, T, D); level_from, level_to: (B, T) long; returns (B, T, D).
    Tokens whose levels are equal are returned unchanged (already clean, or not scheduled to move
    this row); tokens going to level 0 get x0_pred. `eta` = 0 is deterministic DDIM, 1 is
    DDPM-like; eta > 0 needs an explicit `generator` so that samples are reproducible.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and generator is None and noise is None:
        raise ValueError("ddim_step with eta > 0 needs a torch.Generator (or the noise itself)")
    if bool((level_to > level_from).any()):
        raise ValueError("ddim_step only denoises: every level_to must be <= level_from")
    # 1. The noise the prediction implies (DDIM eq. 12, "predicted noise").
    eps = eps_from_x0(x_k, x0_pred, level_from, abar)
    # 2. sigma (DDIM eq. 16), computed in float64 from abar; zero where the token stays put.
    a_t = abar.to(level_from.device)[level_from]  # (B, T)
    a_s = abar.to(level_to.device)[level_to]
    moving = level_to < level_from
    ratio = torch.where(moving, (1 - a_s) / torch.where(moving, 1 - a_t, 1.0), 0.0)
    sigma = eta * (ratio * (1 - a_t / a_s)).clamp(min=0).sqrt()
    # 3. x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z (DDIM eq. 12).
    dir_coef = (1 - a_s - sigma**2).clamp(min=0).sqrt()
    x_s = (
        a_s.sqrt().unsqueeze(-1).to(x_k.dtype) * x0_pred
        + dir_coef.unsqueeze(-1).to(x_k.dtype) * eps
    )
    if eta > 0:
        z = noise
        if z is None:
            z = torch.randn(x_k.shape, generator=generator, device=x_k.device, dtype=x_k.dtype)
        x_s = x_s + sigma.unsqueeze(-1).to(x_k.dtype) * z
    # 4. Exact endpoints: level 0 is the prediction itself; equal levels leave the token alone.
    x_s = torch.where((level_to == 0).unsqueeze(-1), x0_pred, x_s)
    return torch.where((level_to == level_from).unsqueeze(-1), x_k, x_s)


def seeded_generators(
    seeds: list[int | None], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per sample (per environment of a batch), seeded seeds[k]; None draws fresh
    entropy for that generator only (torch's global RNG is untouched). Giving every sample its
    own stream makes a batch reproduce single runs with the same seeds."""
    generators = []
    for s in seeds:
        g = torch.Generator(device=device)
        if s is None:
            g.seed()
        else:
            g.manual_seed(int(s))
        generators.append(g)
    return generators


def shift_one_frame(
    tokens: torch.Tensor,
    levels: torch.Tensor,
    frame_stack: int,
    abar_steps: torch.Tensor,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the executed first frame, append a pure-noise frame, re-chunk into tokens.

    tokens: (B, T, D); levels: (B, T) step levels; abar_steps: (S + 1,) abar per step level;
    noise: (B, T * frame_stack, D / frame_stack) standard normal. A new token straddles two old
    tokens: it takes the higher of their levels, and the frames from the cleaner one are noised
    forward to it, q(x_hi | x_lo) = N(sqrt(abar_hi / abar_lo) x_lo, (1 - abar_hi / abar_lo) I).
    """
    b, t, d = tokens.shape
    s = abar_steps.numel() - 1
    frames = tokens.reshape(b, t * frame_stack, d // frame_stack)  # (B, T * F, Fd)
    frame_levels = levels.repeat_interleave(frame_stack, dim=1)  # (B, T * F)
    frames = torch.cat([frames[:, 1:], noise[:, -1:]], dim=1)
    frame_levels = torch.cat([frame_levels[:, 1:], torch.full_like(frame_levels[:, :1], s)], 1)
    new_levels = frame_levels.view(b, t, frame_stack).amax(dim=2)  # (B, T)
    target = new_levels.repeat_interleave(frame_stack, dim=1)
    frames = renoise(frames, frame_levels, target, abar_steps, noise)
    return frames.reshape(b, t, d), new_levels


def renoise(
    x: torch.Tensor,
    level_from: torch.Tensor,
    level_to: torch.Tensor,
    abar: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Forward-noise x (..., N, D) from per-item levels to higher ones (equal: unchanged)."""
    ratio = (abar[level_to] / abar[level_from]).unsqueeze(-1).to(x.dtype)
    return ratio.sqrt() * x + (1 - ratio).clamp(min=0).sqrt() * noise
