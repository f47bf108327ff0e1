"""The Diffusion Forcing model: a causal transformer denoising tokens with per-token noise levels.

Read top-down: token layout helpers, the config, the small blocks, then the model.

A token stacks `frame_stack` consecutive frames; frame i is [obs_{i+1}, action_i], already
normalised, so a token holds frame_stack * (obs_dim + action_dim) numbers (60 for Maze2D). The
normalised first observation o_0 enters as a leading clean conditioning token. Each noisy token
carries its own integer noise level in [0, K] (0 = clean), embedded and added to the token.

Why a causal transformer and not the official recurrent chain (a GRU between residual MLPs): all
tokens of a window go through one parallel pass instead of a token-by-token recurrence, which is
what a CPU (and the planner's forward + gradient at every denoising row) wants. Measured on this
2-core CPU (lab/backbone_compare.py, batch 64 x 30 tokens): the official-shape GRU chain
(3.9M parameters) takes ~4-5x longer per training step than this default (0.85M) and ~1.4x longer
than a transformer of its own size; a planner pass for one env (forward + gradient w.r.t. the
tokens) is ~15x slower than the default's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dfplan import diffusion

PREDICTIONS = ("x0", "eps", "v")


# -- token layout ----------------------------------------------------------------------------
def frames_to_tokens(frames: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """(B, T * frame_stack, F) frames -> (B, T, frame_stack * F) tokens (frames stay in order)."""
    b, n, f = frames.shape
    if n % frame_stack:
        raise ValueError(f"{n} frames do not fill whole tokens of {frame_stack} frames")
    return frames.reshape(b, n // frame_stack, frame_stack * f)


def tokens_to_frames(tokens: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """(B, T, frame_stack * F) tokens -> (B, T * frame_stack, F) frames."""
    b, t, d = tokens.shape
    return tokens.reshape(b, t * frame_stack, d // frame_stack)


@dataclass
class ModelConfig:
    obs_dim: int = 4  # Maze2D observation [x, y, vx, vy]
    action_dim: int = 2  # motor commands
    frame_stack: int = 10  # frames per token: the official 10, so 30 tokens cover 300 steps
    n_layer: int = 4  # transformer blocks (the recipes set the shipped sizes)
    n_head: int = 4  # attention heads (n_embd must divide by it)
    n_embd: int = 128  # width of the residual stream
    max_tokens: int = 30  # longest token sequence (window / frame_stack); sizes the position table
    num_levels: int = 1000  # K: noise levels 1..K plus the clean level 0 (official: 1000)
    noise_schedule: str = "linear"  # betas: "linear" 1e-4..0.02 (official) or "cosine"
    prediction: str = "x0"  # network output: "x0" (paper: best for planning), "eps" or "v"
    dropout: float = 0.0  # on attention and residual branches; 0 with this much data
    # Goal conditioning: each token also carries the (normalised) goal position its data was
    # heading for, embedded and added to the token and to the o_0 token; 0 = unconditional.
    # Samples without a goal (goal dropout in training, the unconditional half of classifier-free
    # guidance) get a learned "no goal" embedding instead.
    goal_dim: int = 2
    # The goal's offset from o_0's position, also fed as sinusoidal features of this many octaves
    # (periods down to 1/16 of a normalised unit at 6): near the goal, where the expert holds to
    # a tenth of a cell, a linear goal input alone left the planner drifting off it; 0 = off.
    # Unused without a goal (goal_dim 0).
    goal_offset_octaves: int = 6

    @property
    def frame_dim(self) -> int:
        return self.obs_dim + self.action_dim

    @property
    def token_dim(self) -> int:
        return self.frame_stack * self.frame_dim

    def validate(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got '{self.prediction}'")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_embd % 2:
            raise ValueError(f"n_embd must be even for the sinusoidal embedding, got {self.n_embd}")
        for name in ("obs_dim", "action_dim", "frame_stack", "n_layer", "max_tokens", "num_levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.goal_dim < 0 or self.goal_offset_octaves < 0:
            raise ValueError("goal_dim and goal_offset_octaves must be >= 0")
        if self.goal_offset_octaves and self.goal_dim not in (0, 2):
            raise ValueError(f"goal offsets need a position goal (goal_dim 2), not {self.goal_dim}")


# -- blocks ----------------------------------------------------------------------------------
def sinusoidal(levels: torch.Tensor, dim: int) -> torch.Tensor:
    """(...) integer levels -> (..., dim) sinusoidal features (Transformer position encoding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=levels.device) / half)
    angles = levels.float().unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def offset_features(offset: torch.Tensor, octaves: int) -> torch.Tensor:
    """(..., 2) offsets -> (..., 2 + 4 * octaves): the offset, then sin and cos of
    pi * 2^k * offset for k < octaves (periods 2 down to 2^(2 - octaves) normalised units)."""
    freqs = math.pi * 2.0 ** torch.arange(octaves, device=offset.device, dtype=offset.dtype)
    angles = (offset.unsqueeze(-1) * freqs).flatten(-2)  # (..., 2 * octaves)
    return torch.cat([offset, angles.sin(), angles.cos()], dim=-1)


class LevelEmbedding(nn.Module):
    """Integer noise level -> sinusoidal features -> 2-layer MLP (as the official code)."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.n_embd = n_embd
        self.mlp = nn.Sequential(nn.Linear(n_embd, n_embd), nn.SiLU(), nn.Linear(n_embd, n_embd))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(levels, self.n_embd))  # (B, T) -> (B, T, C)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


# -- the model -------------------------------------------------------------------------------
class DiffusionForcingModel(nn.Module):
    """Causal denoiser over tokens with independent per-token noise levels.

    Shape contract of `forward(x_noisy, levels, first_obs, goal, has_goal)`:
    - x_noisy: (B, T, token_dim) float, T <= max_tokens, token t noised to levels[:, t];
    - levels: (B, T) long in [0, num_levels], 0 = clean;
    - first_obs: (B, obs_dim) float, the normalised observation before the first frame;
    - goal: (B, T, goal_dim) or (B, goal_dim) normalised goal positions (one per token, or one
      for every token), or None (no sample has a goal);
    - has_goal: (B,) bool, which samples use their goal (None: all, when a goal is given); the
      others get the learned "no goal" embedding, as does every sample of a model with goal_dim 0;
    - returns (B, T, token_dim): the prediction in `config.prediction`'s parametrisation.
    Output t depends only on first_obs, goals and tokens (and levels) 0..t: changing later tokens
    never changes earlier outputs.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config.n_embd
        self.token_in = nn.Linear(config.token_dim, c)
        self.obs_in = nn.Linear(config.obs_dim, c)  # the clean conditioning token o_0
        if config.goal_dim:
            self.goal_in = nn.Linear(config.goal_dim, c)
            self.no_goal = nn.Parameter(torch.zeros(c))  # stands in for a missing goal
        if config.goal_dim and config.goal_offset_octaves:  # no goal, no offset
            self.offset_in = nn.Linear(2 + 4 * config.goal_offset_octaves, c)
        self.level_emb = LevelEmbedding(c)
        self.pos_emb = nn.Parameter(torch.zeros(config.max_tokens + 1, c))  # +1: o_0's slot
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(c)
        self.head = nn.Linear(c, config.token_dim)
        # The noise schedule is fixed by the config: a buffer, not a weight, so not checkpointed.
        abar = diffusion.alphas_cumprod(
            diffusion.make_betas(config.noise_schedule, config.num_levels)
        )
        self.register_buffer("abar", abar, persistent=False)  # (K + 1,) float64
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 init: N(0, 0.02), residual projections scaled down by depth so the residual
        # stream's variance does not grow with the number of blocks.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02
                if name.startswith("blocks.") and name.endswith(
                    ("attn.proj.weight", "mlp.2.weight")
                ):
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        nn.init.normal_(self.pos_emb, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        x_noisy: torch.Tensor,
        levels: torch.Tensor,
        first_obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        has_goal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, d = x_noisy.shape
        if t > self.config.max_tokens:
            raise ValueError(f"{t} tokens exceed max_tokens={self.config.max_tokens}")
        if d != self.config.token_dim:
            raise ValueError(f"tokens have {d} numbers, the model expects {self.config.token_dim}")
        tok = self.token_in(x_noisy) + self.level_emb(levels)  # (B, T, C)
        cond = self.obs_in(first_obs).unsqueeze(1)  # (B, 1, C)
        h = torch.cat([cond, tok], dim=1)  # (B, T + 1, C)
        if self.config.goal_dim:
            h = h + self._goal_embedding(goal, has_goal, b, t, first_obs)
        h = h + self.pos_emb[: t + 1]
        h = self.drop(h)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h[:, 1:])  # drop o_0's slot: its output predicts nothing
        return self.head(h)  # (B, T, token_dim)

    def _goal_embedding(self, goal, has_goal, b: int, t: int, first_obs) -> torch.Tensor:
        """(B, T + 1, C): each token's goal embedding, o_0's slot taking token 0's goal; the
        "no goal" embedding where a sample has none."""
        no_goal = self.no_goal.expand(b, t + 1, -1)
        if goal is None:
            return no_goal
        if goal.dim() == 2:  # one goal for every token
            goal = goal.unsqueeze(1).expand(b, t, -1)
        if goal.shape != (b, t, self.config.goal_dim):
            raise ValueError(f"goal is {tuple(goal.shape)}, expected ({b}, {t}, goal_dim)")
        goal = torch.cat([goal[:, :1], goal], dim=1)  # (B, T + 1, 2)
        emb = self.goal_in(goal)
        if self.config.goal_offset_octaves:
            offset = goal - first_obs[:, None, :2]  # normalised like positions
            emb = emb + self.offset_in(offset_features(offset, self.config.goal_offset_octaves))
        if has_goal is None:
            return emb
        return torch.where(has_goal.view(b, 1, 1), emb, no_goal)

    def to_x0(self, x_noisy: torch.Tensor, pred: torch.Tensor, levels: torch.Tensor):
        """Convert a prediction in this model's parametrisation to x0; all (B, T, token_dim)."""
        if self.config.prediction == "x0":
            return pred
        if self.config.prediction == "eps":
            return diffusion.x0_from_eps(x_noisy, pred, levels, self.abar)
        return diffusion.x0_from_v(x_noisy, pred, levels, self.abar)

    def predict_x0_with_and_without_goal(
        self,
        x_noisy: torch.Tensor,
        levels: torch.Tensor,
        first_obs: torch.Tensor,
        goal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 with the goal, x0 with the "no goal" embedding), both (B, T, token_dim), from one
        pass over the doubled batch (classifier-free guidance combines them)."""
        n = x_noisy.shape[0]
        has_goal = torch.arange(2 * n, device=x_noisy.device) < n
        twice = [z.repeat(2, *[1] * (z.dim() - 1)) for z in (x_noisy, levels, first_obs, goal)]
        x0_goal, x0_none = self.predict_x0(*twice, has_goal).split(n)
        return x0_goal, x0_none

    def predict_x0(
        self,
        x_noisy: torch.Tensor,
        levels: torch.Tensor,
        first_obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        has_goal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """forward(), converted to the clean-token estimate x0: (B, T, token_dim)."""
        return self.to_x0(x_noisy, self(x_noisy, levels, first_obs, goal, has_goal), levels)
