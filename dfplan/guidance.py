"""Objectives: small differentiable scores of a de-normalised plan, composable with weights.

An objective takes a `Plan` (positions, velocities, actions, each (B, H, 2), and a (B, H) mask of
the frames that count) and returns (B,) scores; higher is better. The planner ascends their
gradient (reward guidance), picks among sampled plans by them, and route search (dfplan.routes)
scores detours with them. Any callable with that signature works; subclasses of `Objective`
also compose: `KeepOut(zones) * 10 + Effort() * 0.5`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Plan:
    positions: torch.Tensor  # (B, H, 2): planned positions p_1..p_H (after each action)
    velocities: torch.Tensor  # (B, H, 2)
    actions: torch.Tensor  # (B, H, 2): a_0..a_{H-1}
    mask: torch.Tensor  # (B, H) float: 1 for frames inside the episode's remaining time


def clip_token_norm(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each token's gradient (last dim) down to at most `max_norm`, direction kept.

    A summed reward over hundreds of frames gives the near tokens, which every later frame
    depends on, gradients many times larger than the far ones; uncapped, one guidance step can
    drag the first frame away from the observed state the plan is conditioned on.
    """
    norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
    return grad * (max_norm / norm.clamp(min=1e-12)).clamp(max=1.0)


class Objective:
    """Base of the shipped objectives: `a + b` sums them, `w * a` weights one."""

    def __call__(self, plan: Plan) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other) -> SumReward:
        return SumReward((self, 1.0), (other, 1.0))

    def __mul__(self, weight: float) -> SumReward:
        return SumReward((self, float(weight)))

    __rmul__ = __mul__


class SumReward(Objective):
    """Weighted sum of objectives: SumReward((GoalReward(g), 1.0), (Effort(), 0.1))."""

    def __init__(self, *terms):
        for _, weight in terms:
            if not math.isfinite(float(weight)):
                raise ValueError(f"objective weights must be finite numbers, got {weight}")
        self.terms = terms

    def __call__(self, plan: Plan) -> torch.Tensor:
        return sum(weight * reward(plan) for reward, weight in self.terms)

    def __add__(self, other) -> SumReward:
        more = other.terms if isinstance(other, SumReward) else ((other, 1.0),)
        return SumReward(*self.terms, *more)

    def __mul__(self, weight: float) -> SumReward:
        return SumReward(*((r, w * float(weight)) for r, w in self.terms))

    __rmul__ = __mul__


class GoalReward(Objective):
    """Diffusion Forcing's planning objective: -sum_t ||p_t - g|| over all planned frames, so any
    frame may be the one that arrives (the objective of the paper's Maze2D code)."""

    def __init__(self, goal: torch.Tensor):
        self.goal = goal  # (B, 2) or (2,)

    def __call__(self, plan: Plan) -> torch.Tensor:
        goal = self.goal.to(plan.positions).reshape(-1, 1, 2)
        distance = torch.linalg.vector_norm(plan.positions - goal, dim=-1)  # (B, H)
        return -(distance * plan.mask).sum(dim=1)


class KeepOut(Objective):
    """Stay out of disks: -sum_t sum_z relu(r_z + margin - ||p_t - c_z||) / margin.

    zones: (Z, 3) rows (x, y, radius). Every frame inside a zone costs at least 1, more the
    deeper it is; the `margin` band outside the edge already costs a little, so the gradient
    points outward before the plan touches the zone (a plain indicator has none).
    """

    def __init__(self, zones, margin: float = 0.2):
        self.zones = torch.as_tensor(zones, dtype=torch.float32).reshape(-1, 3)
        if margin <= 0 or not math.isfinite(margin):
            raise ValueError(f"KeepOut margin must be a positive number, got {margin}")
        if not torch.isfinite(self.zones).all() or (self.zones[:, 2] <= 0).any():
            raise ValueError("KeepOut zones must be finite (x, y, radius) rows with radius > 0")
        self.margin = margin

    def __call__(self, plan: Plan) -> torch.Tensor:
        zones = self.zones.to(plan.positions)
        offset = plan.positions[:, :, None] - zones[:, :2]  # (B, H, Z, 2)
        depth = zones[:, 2] + self.margin - torch.linalg.vector_norm(offset, dim=-1)
        return -((torch.relu(depth) / self.margin).sum(-1) * plan.mask).sum(dim=1)


class Effort(Objective):
    """Spend less control effort: -sum_t ||a_t||^2 (the action energy)."""

    def __call__(self, plan: Plan) -> torch.Tensor:
        return -((plan.actions**2).sum(-1) * plan.mask).sum(dim=1)


def check_objective(objective, batch: int = 2, horizon: int = 3) -> None:
    """Call `objective` on a small plan; ValueError (one line) unless it returns (B,) finite
    scores that a gradient can flow through."""
    if not callable(objective):
        raise ValueError(f"an objective must be callable on a Plan, got {type(objective).__name__}")
    x = torch.zeros(batch, horizon, 2, requires_grad=True)
    plan = Plan(x + 1.0, x * 0.5, x * 0.1, torch.ones(batch, horizon))
    try:
        out = objective(plan)
    except Exception as e:  # noqa: BLE001  (a user's code: report it in one line)
        raise ValueError(f"the objective failed on a plan: {type(e).__name__}: {e}") from None
    if not torch.is_tensor(out) or tuple(out.shape) != (batch,):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(
            f"an objective must return one score per plan, shape ({batch},) for {batch} plans; "
            f"got {shape}"
        )
    if not torch.isfinite(out).all():
        raise ValueError("the objective returned NaN or infinite scores")
