"""Goal-conditioned behaviour cloning (GCBC): the baseline a user could train instead of a planner.

An MLP maps (observation, goal, goal - position), z-scored like the DF model's inputs, to the
action the data took there (tanh output, mean squared error). It is trained on the same dataset
and the same per-step goal labels as the DF model (`dfplan train MAZE --model gcbc`, minutes),
and acts in one forward pass. It reaches goals its data drove to; an objective given at plan
time (a keep-out zone) it cannot take, which is what the planner's row beside it shows.

    policy = GCBCPolicy.from_pretrained("maze2d-large")
    policy.reset(seed=0)
    action = policy.act(obs, info)        # (4,) -> (2,) or (B, 4) -> (B, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class GCBCConfig:
    obs_dim: int = 4
    goal_dim: int = 2  # goal position; the input also holds goal - position
    action_dim: int = 2
    hidden: int = 512  # width of each hidden layer
    layers: int = 3  # hidden layers (GELU)

    def validate(self) -> None:
        if min(self.obs_dim, self.goal_dim, self.action_dim, self.hidden, self.layers) < 1:
            raise ValueError("GCBC dimensions, hidden and layers must be >= 1")


class GCBCNet(nn.Module):
    """(B, obs_dim) normalised observations, (B, 2) normalised goals -> (B, action_dim) in
    [-1, 1]."""

    def __init__(self, config: GCBCConfig):
        super().__init__()
        self.config = config
        width = config.obs_dim + 2 * config.goal_dim
        blocks: list[nn.Module] = []
        for _ in range(config.layers):
            blocks += [nn.Linear(width, config.hidden), nn.GELU()]
            width = config.hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, config.action_dim))

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        offset = goal - obs[:, : self.config.goal_dim]
        return torch.tanh(self.net(torch.cat([obs, goal, offset], dim=1)))


def train_gcbc(config, data, planner_meta: dict | None = None) -> Path:
    """Train GCBC on `data`'s (observation, goal label, action) rows; returns the checkpoint stem.

    config: a dfplan.train.TrainConfig with model_kind "gcbc" (steps, batch_size, lr, warmup,
    final_lr_ratio, weight_decay, grad_clip, seed, out, device, progress are used). A few
    minutes on a CPU: no resume; the checkpoint is written once, atomically, at the end.
    """
    from tqdm import tqdm

    from dfplan.checkpoint import save_checkpoint
    from dfplan.envs.tasks import get_task
    from dfplan.errors import UserError
    from dfplan.normalizer import Normalizer
    from dfplan.train import CHECKPOINT_NAME, default_out, lr_at
    from dfplan.windows import dataset_fingerprint, training_goals

    goals, _ = training_goals(data, config.hindsight_segment, config.seed)
    if goals is None:
        raise UserError(
            "GCBC needs a dataset with goal labels (infos/goal) or a hindsight_segment setting; "
            "make one with dfplan data"
        )
    if config.resume:
        raise UserError("GCBC trains in minutes and does not resume; start it again")
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else ("cpu" if config.device == "auto" else config.device)
    )
    task = get_task(config.task)
    out = Path(config.out).expanduser() if config.out else default_out(task.name, "gcbc")
    out.mkdir(parents=True, exist_ok=True)
    normalizer = Normalizer.from_trajectories(data)
    obs = torch.as_tensor(normalizer.normalize_obs(data.observations), dtype=torch.float32)
    goal = torch.as_tensor(normalizer.normalize_goal(goals), dtype=torch.float32)
    act = torch.as_tensor(data.actions, dtype=torch.float32).clamp(-1, 1)
    torch.manual_seed(config.seed)
    model = GCBCNet(config.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rows = torch.Generator().manual_seed(config.seed)
    bar = tqdm(range(config.steps), desc=f"gcbc {task.name}", disable=not config.progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config)
        idx = torch.randint(len(act), (config.batch_size,), generator=rows)
        pred = model(obs[idx].to(device), goal[idx].to(device))
        loss = ((pred - act[idx].to(device)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    meta = {
        "task": task.name,
        "dataset": config.dataset or task.dataset_id,
        "dataset_fingerprint": dataset_fingerprint(data),
        "normalizer": normalizer.to_dict(),
        "train_step": config.steps,
        "final_loss": float(loss.item()),
        **(planner_meta or {}),
    }
    stem = out / CHECKPOINT_NAME
    save_checkpoint(stem, model.cpu(), meta)
    return stem


class GCBCPolicy:
    """`from_pretrained(task, checkpoint=None, device=None)`, then `reset(goal=None, seed=None)`
    and `act(obs, info)`; the goal comes from info["goal"], else from reset(goal=...)."""

    def __init__(self, model: GCBCNet, normalizer, task):
        self.model = model.eval()
        self.normalizer = normalizer
        self.task = task  # a registry Task: its maze bounds goals and positions
        self.bounds = task.position_bounds()
        self.device = next(model.parameters()).device
        self.goal: np.ndarray | None = None
        self.checkpoint: str | None = None

    @classmethod
    def from_pretrained(cls, task: str, checkpoint=None, device: str | None = None) -> GCBCPolicy:
        from dfplan.normalizer import Normalizer
        from dfplan.policies.common import load_for_task

        spec, stem, model, meta = load_for_task(task, checkpoint, device, "gcbc")
        policy = cls(model, Normalizer.from_dict(meta["normalizer"]), spec)
        policy.checkpoint = str(stem)
        return policy

    def reset(self, goal=None, seed: int | None = None) -> None:
        self.goal = None if goal is None else np.asarray(goal, dtype=np.float64)

    @torch.no_grad()
    def act(self, obs, info: dict | None = None) -> np.ndarray:
        from dfplan.policies.common import batch_goals, check_obs, keep_in_maze

        single = np.ndim(obs) == 1
        obs = keep_in_maze(check_obs(obs), self.bounds)
        goals = batch_goals(len(obs), info, self.goal, "GCBCPolicy", self.task.maze, self.bounds)
        o = torch.as_tensor(self.normalizer.normalize_obs(obs), dtype=torch.float32)
        g = torch.as_tensor(self.normalizer.normalize_goal(goals), dtype=torch.float32)
        actions = self.model(o.to(self.device), g.to(self.device)).cpu().numpy()
        return actions[0] if single else actions
