"""Diffuser's temporal U-Net (Janner et al. 2022, arXiv:2205.09991): the baseline's denoiser.

Read top-down: the plan layout and inpainting, the config, the blocks, then the model.

A plan is H rows, row t = [o_t, a_t] (normalised observation, then action), so the first row holds
the current state and the last row the goal state. Unlike Diffusion Forcing, the whole plan shares
one noise level (full-sequence diffusion), and the network sees every env step (no frame stacking):
1-D convolutions over time, downsampled twice and upsampled back with skip connections, the level
embedding added inside every residual block. Goals enter only by inpainting: the first and last
states are overwritten with the known values after every network call and denoising step.

Diffuser's Maze2D model is this shape with 32 channels and multipliers (1, 4, 8) (~4M parameters);
the defaults here are narrower, (1, 2, 4), to train on a 2-core CPU in a budget comparable to
the Diffusion Forcing model's (see dfplan.train.RECOMMENDED_DIFFUSER).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from dfplan import diffusion
from dfplan.model import LevelEmbedding

GROUPS = 8  # GroupNorm groups (Diffuser's); every channel count must divide by it


# -- plan layout -----------------------------------------------------------------------------
def window_to_plan(first_obs: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """A training window in the trainer's layout -> the same steps as plan rows [o_t, a_t].

    first_obs: (B, obs_dim) = o_0; frames: (B, H, obs_dim + act_dim), frame t = [o_{t+1}, a_t]
    (dfplan.train.WindowSampler with frame_stack 1). Returns (B, H, obs_dim + act_dim).
    """
    od = first_obs.shape[-1]
    obs = torch.cat([first_obs.unsqueeze(1), frames[:, :-1, :od]], dim=1)  # o_0 .. o_{H-1}
    return torch.cat([obs, frames[..., od:]], dim=-1)


def inpaint(plan: torch.Tensor, first_obs: torch.Tensor, last_obs: torch.Tensor) -> torch.Tensor:
    """Diffuser's conditioning: row 0's state := first_obs, row H-1's state := last_obs.

    plan: (B, H, D); first_obs, last_obs: (B, obs_dim), normalised. Returns a new tensor.
    """
    od = first_obs.shape[-1]
    out = plan.clone()
    out[:, 0, :od] = first_obs
    out[:, -1, :od] = last_obs
    return out


@dataclass
class UNetConfig:
    obs_dim: int = 4  # Maze2D observation [x, y, vx, vy]
    action_dim: int = 2  # motor commands
    horizon: int = 128  # planned env steps = training window (Diffuser: 128 / 256 / 384)
    dim: int = 32  # channels at full time resolution (Diffuser: 32)
    dim_mults: tuple[int, ...] = (1, 2, 4)  # channels per resolution / dim (Diffuser: 1, 4, 8)
    kernel_size: int = 5  # temporal convolution width (Diffuser's)
    num_levels: int = 64  # K: diffusion levels 1..K plus the clean level 0 (Diffuser: 64-256)
    noise_schedule: str = "cosine"  # betas: "cosine" (Diffuser's) or "linear"

    # One frame per row: the U-Net convolves over env steps. The trainer's WindowSampler reads it.
    frame_stack: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.dim_mults = tuple(self.dim_mults)  # JSON gives a list back

    @property
    def frame_dim(self) -> int:
        return self.obs_dim + self.action_dim

    @property
    def downsamples(self) -> int:
        return len(self.dim_mults) - 1

    def validate(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "dim", "kernel_size", "num_levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.dim_mults or min(self.dim_mults) < 1:
            raise ValueError(f"dim_mults must be positive integers, got {self.dim_mults}")
        if any(self.dim * m % GROUPS for m in self.dim_mults):
            raise ValueError(f"dim x every dim_mult must divide by {GROUPS}, got dim {self.dim}")
        if self.dim % 2:
            raise ValueError(f"dim must be even for the sinusoidal embedding, got {self.dim}")
        if self.horizon % 2**self.downsamples or self.horizon < 2:
            raise ValueError(
                f"horizon ({self.horizon}) must be a multiple of {2**self.downsamples} "
                f"(the U-Net halves it {self.downsamples} times)"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        diffusion.make_betas(self.noise_schedule, self.num_levels)  # names a bad schedule


# -- blocks ----------------------------------------------------------------------------------
def conv_block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv1d -> GroupNorm -> Mish, length-preserving (Diffuser's Conv1dBlock)."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(GROUPS, c_out), nn.Mish()
    )


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks with the level embedding added between them, plus a residual path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel: int):
        super().__init__()
        self.block1 = conv_block(c_in, c_out, kernel)
        self.block2 = conv_block(c_out, c_out, kernel)
        self.level_proj = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, L), emb: (B, E) -> (B, C_out, L)
        h = self.block1(x) + self.level_proj(emb).unsqueeze(-1)
        return self.block2(h) + self.skip(x)


# -- the model -------------------------------------------------------------------------------
class TemporalUNet(nn.Module):
    """Full-sequence denoiser over plans, predicting the clean plan (x0).

    Shape contract of `forward(x_noisy, levels)`:
    - x_noisy: (B, H, obs_dim + action_dim) float, H a multiple of 2^(len(dim_mults) - 1)
      (any such H works: the network is convolutional; `config.horizon` is the trained one);
    - levels: (B,) long in [0, num_levels], one level for the whole plan;
    - returns (B, H, obs_dim + action_dim): the predicted clean plan, before inpainting.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        k, e = config.kernel_size, config.dim
        chans = [config.frame_dim] + [config.dim * m for m in config.dim_mults]
        pairs = list(zip(chans[:-1], chans[1:], strict=True))  # (in, out) per resolution
        self.level_emb = LevelEmbedding(e)  # sinusoidal + MLP, as the DF model's
        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            down = nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.downs.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(c_in, c_out, e, k),
                        ResidualTemporalBlock(c_out, c_out, e, k),
                        down,
                    ]
                )
            )
        mid = chans[-1]
        self.mid = nn.ModuleList([ResidualTemporalBlock(mid, mid, e, k) for _ in range(2)])
        self.ups = nn.ModuleList()
        for c_in, c_out in reversed(pairs[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(2 * c_out, c_in, e, k),  # 2x: the skip connection
                        ResidualTemporalBlock(c_in, c_in, e, k),
                        nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = nn.Sequential(conv_block(e, e, k), nn.Conv1d(e, config.frame_dim, 1))
        # The noise schedule is fixed by the config: a buffer, not a weight, so not checkpointed.
        abar = diffusion.alphas_cumprod(
            diffusion.make_betas(config.noise_schedule, config.num_levels)
        )
        self.register_buffer("abar", abar, persistent=False)  # (K + 1,) float64

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x_noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        b, h, d = x_noisy.shape
        if d != self.config.frame_dim:
            raise ValueError(
                f"plan rows have {d} numbers, the model expects {self.config.frame_dim}"
            )
        if h % 2**self.config.downsamples:
            raise ValueError(f"horizon {h} is not a multiple of {2**self.config.downsamples}")
        emb = self.level_emb(levels)  # (B, E)
        x = x_noisy.transpose(1, 2)  # (B, D, H): channels first for Conv1d
        skips = []
        for res1, res2, down in self.downs:
            x = res2(res1(x, emb), emb)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, emb)
        for res1, res2, up in self.ups:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, emb), emb))
        return self.final(x).transpose(1, 2)  # (B, H, D)


def diffuser_loss(
    model: TemporalUNet,
    first_obs: torch.Tensor,
    frames: torch.Tensor,
    generator: torch.Generator,
    net: torch.nn.Module | None = None,
    goals: torch.Tensor | None = None,
    goal_dropout: float = 0.0,
) -> torch.Tensor:
    """Diffuser's loss: MSE of the predicted clean plan, with one noise level per window.

    first_obs (B, obs_dim) and frames (B, H, frame_dim) are a WindowSampler batch (frame_stack 1),
    turned into plan rows [o_t, a_t]. As in Diffuser, the first and last states are inpainted
    (set to their true values) in the noisy input and in the prediction, so they carry no loss.
    Goals are ignored: Diffuser's goal is the inpainted last state.
    """
    x0 = window_to_plan(first_obs, frames)  # (B, H, D)
    b, h, _ = x0.shape
    od = model.config.obs_dim
    levels = torch.randint(
        1, model.config.num_levels + 1, (b,), generator=generator, device=x0.device
    )
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_noisy = diffusion.q_sample(x0, levels[:, None].expand(b, h), model.abar, noise)
    first, last = x0[:, 0, :od], x0[:, -1, :od]
    pred = (net or model)(inpaint(x_noisy, first, last), levels).float()
    return (inpaint(pred, first, last) - x0).pow(2).mean()
