"""The Diffuser baseline as a policy: plan a whole trajectory to the goal, then track it.

    policy = DiffuserPolicy.from_pretrained("maze2d-large")   # dfplan/checkpoints/*-diffuser.*
    policy.reset(seed=0)
    action = policy.act(obs, info)        # (4,) -> (2,) or (B, 4) -> (B, 2)

Diffuser's Maze2D recipe (Janner et al. 2022, arXiv:2205.09991), on our temporal U-Net
(dfplan.policies.diffuser_unet):
- **Plan**: sample a whole plan of H rows [o_t, a_t] by full-sequence diffusion, every row at one
  noise level, from pure noise to clean; after every network call and every step the first state
  is set to the current observation and the last to (goal, zero velocity) (inpainting). Default:
  every level K..1 with ancestral noise (`eta` 1, DDPM-like) as Diffuser; `sampling_steps` < K
  runs DDIM over an evenly spaced sub-sequence instead.
- **When**: once per episode, as Diffuser does (`replan_every` 0): the plan is made at the first
  step of the episode (and again whenever the goal changes, e.g. Multi2D's goal at reset) and
  tracked by index. This is NOT the replan-every-step protocol of the DF planner: `replan_every`
  N > 0 plans again every N steps from the current state.
- **Act**: track the plan with Diffuser's PD rule, action = (s_next[:2] - pos) + (s_next[2:] - vel)
  clipped to [-1, 1], s_next the plan's next state; once the plan has run out, s_next is its
  last state with zero velocity. Or, with `diffused_actions`, execute the plan's own actions
  (the DF paper's "Diffuser, diffused actions"); a new plan is made when they run out.

Batches: each environment draws its noise from its own generator (seed + k for environment k),
and only environments that need a plan draw, so a batch behaves as single policies seeded the
same way (within float tolerance). Resets and goal changes are detected per environment as in
`DiffusionForcingPolicy` (policies/common.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfplan import diffusion
from dfplan.normalizer import Normalizer
from dfplan.policies.common import PlannerPolicy
from dfplan.policies.diffuser_unet import TemporalUNet, inpaint
from dfplan.schedules import to_train_levels


@dataclass
class DiffuserConfig:
    sampling_steps: int = 0  # denoising steps per plan; 0 = every level K..1 (Diffuser's)
    eta: float = 1.0  # noise per step: 1 = DDPM-like ancestral sampling (Diffuser's), 0 = DDIM
    replan_every: int = 0  # env steps between plans; 0 = one plan per episode (Diffuser's)
    diffused_actions: bool = False  # execute the plan's actions instead of PD-tracking its states

    @classmethod
    def from_dict(cls, d: dict) -> DiffuserConfig:
        """Settings from a checkpoint or recipe (the same reader as the DF planner's)."""
        return cls(**d)

    def validate(self) -> None:
        if self.sampling_steps < 0 or self.replan_every < 0 or self.eta < 0:
            raise ValueError("sampling_steps, replan_every and eta must be >= 0")


def pd_action(obs: np.ndarray, next_state: np.ndarray) -> np.ndarray:
    """Diffuser's tracking rule: (s_next[:2] - pos) + (s_next[2:] - vel), clipped to [-1, 1].

    obs, next_state: (B, 4) [x, y, vx, vy]; returns (B, 2).
    """
    return np.clip(next_state[:, :2] - obs[:, :2] + (next_state[:, 2:] - obs[:, 2:]), -1.0, 1.0)


class DiffuserPlanner:
    """Whole-plan sampling with Diffuser's inpainting, one noise generator per environment.

    `reset(batch_size, seeds)`, then `plan(obs, goals, envs)` for the environments that need one.
    """

    def __init__(self, model: TemporalUNet, normalizer: Normalizer, config: DiffuserConfig):
        config.validate()
        self.model = model.eval()
        self.normalizer = normalizer
        self.config = config
        self.device = next(model.parameters()).device
        k = model.config.num_levels
        steps = config.sampling_steps or k
        # Training levels visited, K .. 0: all of them (steps = K), or DDIM's sub-sequence.
        self.levels = to_train_levels(torch.arange(steps, -1, -1), steps, k).tolist()
        self.abar = model.abar.to(self.device)
        self.reset(1)

    def reset(self, batch_size: int, seeds: list[int] | None = None) -> None:
        """Environment k draws its noise from a generator seeded seeds[k] (None: fresh entropy)."""
        seeds = seeds if seeds is not None else [None] * batch_size
        self.generators = diffusion.seeded_generators(seeds, self.device)

    def _randn(self, envs: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """(len(envs), *shape) standard normal, row i from environment envs[i]'s generator."""
        gens = [self.generators[k] for k in envs]
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in gens])

    @torch.no_grad()
    def plan(
        self, obs: np.ndarray, goals: np.ndarray, envs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Plans from obs (n, 4) to goals (n, 2) for environments `envs` (n,) of the batch.

        Returns de-normalised states (n, H, 4), row 0 = obs and row H-1 = (goal, 0, 0), and
        actions (n, H, 2).
        """
        cfg, mc = self.config, self.model.config
        n, h = len(envs), mc.horizon
        goal_state = np.concatenate([goals, np.zeros((n, mc.obs_dim - 2))], axis=1)
        first, last = (
            self.normalizer.normalize_obs(torch.tensor(a, dtype=torch.float32, device=self.device))
            for a in (obs, goal_state)
        )  # (n, obs_dim) each
        x = inpaint(self._randn(envs, (h, mc.frame_dim)), first, last)  # (n, H, D)
        for k_from, k_to in zip(self.levels[:-1], self.levels[1:], strict=True):
            lv_from = torch.full((n, h), k_from, device=self.device)
            x0 = inpaint(self.model(x, lv_from[:, 0]), first, last)
            noise = self._randn(envs, (h, mc.frame_dim)) if cfg.eta > 0 else None
            lv_to = torch.full((n, h), k_to, device=self.device)
            x = diffusion.ddim_step(x, x0, lv_from, lv_to, self.abar, cfg.eta, noise=noise)
            x = inpaint(x, first, last)
        states = self.normalizer.denormalize_obs(x[..., : mc.obs_dim])
        actions = self.normalizer.denormalize_act(x[..., mc.obs_dim :])
        return states.cpu().double().numpy(), actions.cpu().double().numpy()


class DiffuserPolicy(PlannerPolicy):
    """`from_pretrained(task, checkpoint=None, device=None, **planner_overrides)` loads a Diffuser
    checkpoint (default: the shipped `dfplan/checkpoints/<maze>-diffuser`); the overrides replace
    `DiffuserConfig` fields, e.g. `replan_every=10`."""

    KIND = "diffuser"
    CONFIG = DiffuserConfig
    PLANNER = DiffuserPlanner

    def _new_batch(self, batch: int) -> None:
        h = self.planner.model.config.horizon
        self.states = np.zeros((batch, h, self.planner.model.config.obs_dim))  # each env's plan
        self.actions = np.zeros((batch, h, self.planner.model.config.action_dim))
        self.index = np.full(batch, -1)  # the plan row each env is at; -1: no plan yet

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        single = np.ndim(obs) == 1
        obs, goals, stale = self._begin(obs, info)
        cfg, h = self.planner.config, self.planner.model.config.horizon
        need = stale | (self.index < 0)  # a new episode or goal: plan again (Diffuser's reset)
        if cfg.replan_every > 0:
            need |= self.index >= cfg.replan_every
        if cfg.diffused_actions:
            need |= self.index >= h  # its actions have run out
        if need.any():
            envs = np.flatnonzero(need)
            self.states[envs], self.actions[envs] = self.planner.plan(obs[envs], goals[envs], envs)
            self.index[envs] = 0
        rows = np.arange(len(obs))
        if cfg.diffused_actions:
            actions = np.clip(self.actions[rows, self.index], -1.0, 1.0)
        else:
            nxt = self.states[rows, np.minimum(self.index + 1, h - 1)].copy()
            nxt[self.index + 1 >= h, 2:] = 0.0  # past the plan's end: hold its last state
            actions = pd_action(obs, nxt)
        self.index += 1
        self.clock.advance(obs, goals)
        return actions[0] if single else actions
