"""Rewards that steer sampling: small differentiable callables on a de-normalised plan.

A reward takes a `Plan` (positions, velocities, actions, each (B, H, 2), and a (B, H) mask of the
frames that fall inside the episode) and returns (B,) scores; higher is better. The planner
ascends its gradient. Write your own by following the same signature.
"""

from __future__ import annotations

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


class GoalReward:
    """Diffusion Forcing's planning objective: -sum_t ||p_t - g|| over all planned frames, so any
    frame may be the one that arrives (the objective of the paper's Maze2D code)."""

    def __init__(self, goal: torch.Tensor):
        self.goal = goal  # (B, 2) or (2,)

    def __call__(self, plan: Plan) -> torch.Tensor:
        goal = self.goal.to(plan.positions).reshape(-1, 1, 2)
        distance = torch.linalg.vector_norm(plan.positions - goal, dim=-1)  # (B, H)
        return -(distance * plan.mask).sum(dim=1)


class KeepAwayReward:
    """Penalise coming within `radius` of a point (a hazard): -sum_t relu(radius - ||p_t - c||)."""

    def __init__(self, center: torch.Tensor, radius: float = 1.0):
        self.center = center
        self.radius = radius

    def __call__(self, plan: Plan) -> torch.Tensor:
        center = self.center.to(plan.positions).reshape(-1, 1, 2)
        distance = torch.linalg.vector_norm(plan.positions - center, dim=-1)
        return -(torch.relu(self.radius - distance) * plan.mask).sum(dim=1)


class ActionEnergyReward:
    """Penalise control effort: -sum_t ||a_t||^2."""

    def __call__(self, plan: Plan) -> torch.Tensor:
        return -((plan.actions**2).sum(-1) * plan.mask).sum(dim=1)


class SumReward:
    """Weighted sum of rewards: SumReward((GoalReward(g), 1.0), (ActionEnergyReward(), 0.1))."""

    def __init__(self, *terms):
        self.terms = terms

    def __call__(self, plan: Plan) -> torch.Tensor:
        return sum(weight * reward(plan) for reward, weight in self.terms)
