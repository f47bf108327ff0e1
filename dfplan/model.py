"""The Diffusion Forcing model: a causal transformer denoising tokens with per-token noise levels.

Read top-down: token layout helpers, the config, the small blocks, then the model.

A token stacks `frame_stack` consecutive frames; frame i is [obs_{i+1}, action_i], already
normalised, so a token holds frame_stack * (obs_dim + action_dim) numbers (60 for Maze2D). The
normalised first observation o_0 enters as a leading clean conditioning token. Each noisy token
carries its own integer noise level in [0, K] (0 = clean), embedded and added to the token.

Why a causal transformer and not the official GRU chain (REFERENCE.md sections 2 and 7): all
tokens of a window go through one parallel pass instead of a token-by-token recurrence, which is
what a CPU (and the planner's forward + gradient at every denoising row) wants. Measured on this
2-core CPU (benchmarks/backbone_compare.py, batch 64 x 30 tokens): the official-shape GRU chain
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
    n_layer: int = 4  # transformer blocks; 4 x 128 is the REFERENCE.md probe that planned well
    n_head: int = 4  # attention heads (n_embd must divide by it)
    n_embd: int = 128  # width of the residual stream
    max_tokens: int = 30  # longest token sequence (window / frame_stack); sizes the position table
    num_levels: int = 1000  # K: noise levels 1..K plus the clean level 0 (official: 1000)
    noise_schedule: str = "linear"  # betas: "linear" 1e-4..0.02 (official) or "cosine"
    prediction: str = "x0"  # network output: "x0" (paper: best for planning), "eps" or "v"
    dropout: float = 0.0  # on attention and residual branches; 0 with this much data
    # Fourier features sin/cos(pi 2^k p), k < position_features, of each frame's position (the
    # first two observation numbers: Maze2D's x, y) added to the input; 0 = off. Which cells are
    # walls is a sharp function of position that a linear input layer learns slowly.
    position_features: int = 0
    # Predict each frame's observation as o_0 plus the network's output (x0 prediction only), so
    # plans start where the agent is: a frame's distance from o_0 is small near the start, where
    # an absolute prediction must be precise to a fraction of a cell across the whole maze.
    residual_obs: bool = False

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
        if not 0 <= self.position_features <= 16:
            raise ValueError(f"position_features must be in 0..16, got {self.position_features}")
        if self.residual_obs and self.prediction != "x0":
            raise ValueError(f"residual_obs needs prediction 'x0', got '{self.prediction}'")
        if self.position_features and self.obs_dim < 2:
            raise ValueError("position_features needs observations that start with x, y")


# -- blocks ----------------------------------------------------------------------------------
def sinusoidal(levels: torch.Tensor, dim: int) -> torch.Tensor:
    """(...) integer levels -> (..., dim) sinusoidal features (Transformer position encoding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=levels.device) / half)
    angles = levels.float().unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class LevelEmbedding(nn.Module):
    """Integer noise level -> sinusoidal features -> 2-layer MLP (as the official code)."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.n_embd = n_embd
        self.mlp = nn.Sequential(nn.Linear(n_embd, n_embd), nn.SiLU(), nn.Linear(n_embd, n_embd))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(levels, self.n_embd))  # (B, T) -> (B, T, C)


def fourier_features(positions: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(..., 2) positions -> (..., 4 * num_freqs): sin and cos of pi 2^k p for k < num_freqs."""
    freqs = math.pi * 2.0 ** torch.arange(num_freqs, device=positions.device, dtype=positions.dtype)
    angles = (positions.unsqueeze(-1) * freqs).flatten(-2)  # (..., 2 * num_freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


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

    Shape contract of `forward(x_noisy, levels, first_obs)`:
    - x_noisy: (B, T, token_dim) float, T <= max_tokens, token t noised to levels[:, t];
    - levels: (B, T) long in [0, num_levels], 0 = clean;
    - first_obs: (B, obs_dim) float, the normalised observation before the first frame;
    - returns (B, T, token_dim): the prediction in `config.prediction`'s parametrisation.
    Output t depends only on first_obs and tokens (and levels) 0..t: changing later tokens never
    changes earlier outputs.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config.n_embd
        fourier = 4 * config.position_features  # Fourier numbers per position
        self.token_in = nn.Linear(config.token_dim + config.frame_stack * fourier, c)
        self.obs_in = nn.Linear(config.obs_dim + fourier, c)  # the clean conditioning token o_0
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
        self, x_noisy: torch.Tensor, levels: torch.Tensor, first_obs: torch.Tensor
    ) -> torch.Tensor:
        b, t, d = x_noisy.shape
        if t > self.config.max_tokens:
            raise ValueError(f"{t} tokens exceed max_tokens={self.config.max_tokens}")
        if d != self.config.token_dim:
            raise ValueError(f"tokens have {d} numbers, the model expects {self.config.token_dim}")
        tok_in, obs_in = x_noisy, first_obs
        if self.config.position_features:
            tok_in, obs_in = self._with_position_features(x_noisy, levels, first_obs)
        tok = self.token_in(tok_in) + self.level_emb(levels)  # (B, T, C)
        cond = self.obs_in(obs_in).unsqueeze(1)  # (B, 1, C)
        h = torch.cat([cond, tok], dim=1) + self.pos_emb[: t + 1]  # (B, T + 1, C)
        h = self.drop(h)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h[:, 1:])  # drop o_0's slot: its output predicts nothing
        out = self.head(h)  # (B, T, token_dim)
        if self.config.residual_obs:
            cfg = self.config
            frames = out.view(b, t, cfg.frame_stack, cfg.frame_dim)
            obs = frames[..., : cfg.obs_dim] + first_obs[:, None, None, :]
            out = torch.cat([obs, frames[..., cfg.obs_dim :]], -1).view(b, t, d)
        return out

    def _with_position_features(self, x_noisy, levels, first_obs):
        """Inputs with each frame's Fourier position features appended. A noisy token's
        positions are divided by sqrt(abar) first, so a feature means the same place at every
        level (noisier at high levels, which the level embedding tells the network)."""
        b, t, _ = x_noisy.shape
        cfg = self.config
        scale = self.abar[levels].sqrt().clamp(min=0.05).to(x_noisy.dtype)  # (B, T)
        frames = x_noisy.view(b, t, cfg.frame_stack, cfg.frame_dim)
        positions = frames[..., :2] / scale[..., None, None]  # (B, T, fs, 2)
        tok_feats = fourier_features(positions, cfg.position_features).flatten(2)
        obs_feats = fourier_features(first_obs[:, :2], cfg.position_features)
        return torch.cat([x_noisy, tok_feats], -1), torch.cat([first_obs, obs_feats], -1)

    def to_x0(self, x_noisy: torch.Tensor, pred: torch.Tensor, levels: torch.Tensor):
        """Convert a prediction in this model's parametrisation to x0; all (B, T, token_dim)."""
        if self.config.prediction == "x0":
            return pred
        if self.config.prediction == "eps":
            return diffusion.x0_from_eps(x_noisy, pred, levels, self.abar)
        return diffusion.x0_from_v(x_noisy, pred, levels, self.abar)

    def predict_x0(
        self, x_noisy: torch.Tensor, levels: torch.Tensor, first_obs: torch.Tensor
    ) -> torch.Tensor:
        """forward(), converted to the clean-token estimate x0: (B, T, token_dim)."""
        return self.to_x0(x_noisy, self(x_noisy, levels, first_obs), levels)
