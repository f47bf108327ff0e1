"""Training-step time: dfplan's causal transformer vs a GRU chain of the official DF Maze2D shape.

    python -m lab.backbone_compare [--threads N] [--steps N]

One step = forward + backward + AdamW on a batch of 64 windows of 30 tokens (60 numbers each),
per-token noise levels, MSE. The GRU backbone follows the official Maze2D planner's shape
(Chen et al. 2024's Maze2D code, ~4.3M parameters reported), evaluated token by token: [noisy token,
level embedding] -> residual MLP of width 512 (3 blocks) -> GRU cell with a 128-d latent
(initialised from o_0 by an MLP) -> residual MLP of width 512 (3 blocks) -> prediction.
The transformers run every token of the window in one pass. A second column times what a
planner does at every denoising row: a forward and a gradient w.r.t. the tokens, for one env.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from dfplan.model import DiffusionForcingModel, LevelEmbedding, ModelConfig

BATCH, TOKENS, TOKEN_DIM, OBS_DIM, LEVELS = 64, 30, 60, 4, 1000


class ResidualMLP(nn.Module):
    """Linear in, `blocks` pre-LN residual blocks of width `width`, linear out."""

    def __init__(self, d_in: int, width: int, d_out: int, blocks: int = 3):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
            )
            for _ in range(blocks)
        )
        self.out = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class GRUBackbone(nn.Module):
    """Official-shape recurrent denoiser: same inputs and outputs as DiffusionForcingModel."""

    def __init__(self, width: int = 512, latent: int = 128, level_dim: int = 128):
        super().__init__()
        self.level_emb = LevelEmbedding(level_dim)
        self.init = nn.Sequential(nn.Linear(OBS_DIM, latent), nn.SiLU(), nn.Linear(latent, latent))
        self.pre = ResidualMLP(TOKEN_DIM + level_dim, width, width)
        self.cell = nn.GRUCell(width, latent)
        self.post = ResidualMLP(latent, width, TOKEN_DIM)

    def forward(self, x: torch.Tensor, levels: torch.Tensor, first_obs: torch.Tensor):
        h = self.init(first_obs)  # (B, latent)
        inputs = torch.cat([x, self.level_emb(levels)], dim=-1)  # (B, T, D + level_dim)
        outputs = []
        for t in range(x.shape[1]):  # the recurrence: token t waits for token t - 1
            h = self.cell(self.pre(inputs[:, t]), h)
            outputs.append(self.post(h))
        return torch.stack(outputs, dim=1)  # (B, T, D)


def time_step(model: nn.Module, steps: int, warmup: int = 2) -> float:
    """Seconds per training step (forward + backward + AdamW)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, TOKENS, TOKEN_DIM, generator=g)
    target = torch.randn(BATCH, TOKENS, TOKEN_DIM, generator=g)
    levels = torch.randint(0, LEVELS + 1, (BATCH, TOKENS), generator=g)
    first_obs = torch.randn(BATCH, OBS_DIM, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            tic = time.perf_counter()
        loss = F.mse_loss(model(x, levels, first_obs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - tic) / steps


def time_guided_pass(model: nn.Module, repeats: int = 20) -> float:
    """Seconds for one planner-style pass: forward and gradient w.r.t. the noisy tokens, B = 1."""
    x = torch.randn(1, TOKENS, TOKEN_DIM, requires_grad=True)
    levels = torch.randint(0, LEVELS + 1, (1, TOKENS))
    first_obs = torch.randn(1, OBS_DIM)
    model.eval()
    for i in range(repeats + 2):
        if i == 2:
            tic = time.perf_counter()
        torch.autograd.grad(model(x, levels, first_obs).sum(), x)
    return (time.perf_counter() - tic) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per backbone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbones = {
        "GRU chain, official shape (512 / 128)": GRUBackbone(),
        "transformer 4 x 128 (dfplan default)": DiffusionForcingModel(ModelConfig()),
        "transformer 8 x 192 (GRU-sized)": DiffusionForcingModel(
            ModelConfig(n_layer=8, n_head=6, n_embd=192)
        ),
    }
    print(f"training step, batch {BATCH} x {TOKENS} tokens, {torch.get_num_threads()} threads")
    print("| backbone | params | train ms/step | train steps/s | guided pass B=1 (ms) |")
    print("|---|---|---|---|---|")
    for name, model in backbones.items():
        params = sum(p.numel() for p in model.parameters())
        seconds = time_step(model, args.steps)
        guided = time_guided_pass(model)
        print(
            f"| {name} | {params / 1e6:.2f}M | {1000 * seconds:.0f} | {1 / seconds:.1f} "
            f"| {1000 * guided:.1f} |"
        )


if __name__ == "__main__":
    main()
