"""The Diffusion Forcing planner: goal-conditioned DDIM over a pyramid schedule, replanning every
step, optionally steered by reward gradients averaged over sampled futures (MCG).

One decision (`act`):
1. Levels to start from: pure noise on an environment's first decision (cold start), otherwise
   its previous plan shifted by one frame and re-noised `refresh_rows` rows up (warm start).
2. Denoising rows. Each row predicts x0 for every token with the causal model, conditioned on the
   current observation and, for a goal-conditioned model, the goal (with classifier-free guidance
   when `goal_weight` is not 1), and takes a DDIM step toward the row's levels. With reward
   guidance the step adds the gradient of the reward of the de-normalised x0 plan w.r.t. the
   noisy tokens (backpropagated through the model, so far-future rewards reach near tokens),
   averaged over `mcg_samples` futures: copies of the plan re-noised to their own levels from
   the x0 estimate (one copy is the plan itself, so 1 sample is plain guidance).
   The guidance sees the objective through the planned states only (positions, velocities).
3. Execute the first action of the first (now clean) token, clamped to [-1, 1]. With
   `action_step` > 0 that action first follows the objective's gradient with respect to it, on
   the clean plan: how a term on actions (effort) acts. Through the denoiser such a term moved
   no executed action (it is re-predicted from the states), it only disturbed the route.

Levels here are sampling steps 0..S (S = `sampling_steps`), mapped to the model's training levels
by `schedules.to_train_levels`. After every decision token t sits at level P(t) = lag(t) of the
pyramid (the "profile": the first row of the cold schedule in which token 0 is clean). A warm step
raises every token of the shifted plan to min(S, P(t) + refresh_rows) and runs `refresh_rows`
rows back down to P, so the far future keeps its partly denoised state. With `warm_candidates`
K > 1 the re-noise is drawn K times (stacked along the batch: copy j of env k at row j * B + k)
and the plan whose x0 scores best under the reward is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from dfplan import diffusion, schedules
from dfplan.guidance import Plan, clip_token_norm
from dfplan.model import DiffusionForcingModel, frames_to_tokens, tokens_to_frames
from dfplan.planner_config import PlannerConfig

ACTION_FLOW_STEPS = 8  # explicit steps of the executed action's gradient flow (action_step)


@dataclass
class Condition:
    """What one decision's plans are conditioned on, per environment (normalised)."""

    first_obs: torch.Tensor  # (B, obs_dim): the current observation
    goal: torch.Tensor | None  # (B, 2): the goal position, or None (unconditional sampling)


def cold_schedule(config: PlannerConfig, tokens: int) -> torch.Tensor:
    """The pyramid's rows from pure noise up to the first one where token 0 is clean."""
    matrix = schedules.pyramid(tokens, config.sampling_steps, config.uncertainty)
    first_clean = int((matrix[:, 0] == 0).nonzero()[0])
    return matrix[: first_clean + 1]


class DiffusionForcingPlanner:
    """Batched receding-horizon planner around a trained `DiffusionForcingModel`.

    `reset(batch_size, seeds)`, then `act(obs, reward, steps_left, goal) -> actions` once per env
    step. Each environment of the batch draws its noise from its own generator, so a batch of B
    gives the same plans as B planners run one at a time with the same seeds.
    """

    def __init__(self, model: DiffusionForcingModel, normalizer, config: PlannerConfig):
        config.validate()
        self.model = model.eval()  # sampling: no dropout
        self.normalizer = normalizer
        self.config = config
        self.device = next(model.parameters()).device
        mc = model.config
        self.frame_stack = mc.frame_stack
        self.max_tokens = min(config.horizon_tokens or mc.max_tokens, mc.max_tokens)
        step_levels = torch.arange(config.sampling_steps + 1)
        self.train_levels = schedules.to_train_levels(
            step_levels, config.sampling_steps, mc.num_levels
        ).to(self.device)  # step level -> model level
        self.abar = model.abar.to(self.device)  # (K + 1,) float64
        self.abar_steps = self.abar[self.train_levels]  # (S + 1,)
        self.reset(1)

    # -- state -----------------------------------------------------------------------------
    def reset(self, batch_size: int, seeds: list[int | None] | None = None) -> None:
        """Forget all plans; environment k draws its noise from a generator seeded seeds[k]."""
        seeds = seeds if seeds is not None else [None] * batch_size
        self.generators = diffusion.seeded_generators(seeds, self.device)
        self.tokens: torch.Tensor | None = None  # (B, T, D) noisy plan, normalised
        self.x0: torch.Tensor | None = None  # (B, T, D) the plan's last x0 estimate
        self.levels: torch.Tensor | None = None  # (B, T) step levels
        self.cold = torch.ones(batch_size, dtype=torch.bool)  # envs that plan from noise next

    def forget(self, envs) -> None:
        """Drop the warm-start plan of these environments (their episode was reset)."""
        self.cold[torch.as_tensor(envs, dtype=torch.long)] = True

    def _randn(
        self, *shape: int, active: torch.Tensor | None = None, copies: int = 1
    ) -> torch.Tensor:
        """(copies * B, *shape) standard normal; row j * B + k from environment k's generator.

        Rows of inactive environments (active: (B,)) are zeros and draw nothing, so an
        environment's noise stream does not depend on what the rest of the batch is doing.
        """
        b = len(self.generators)
        out = torch.zeros((b, copies, *shape), device=self.device)
        flags = [True] * b if active is None else active.tolist()  # one sync
        for k, g in enumerate(self.generators):
            if flags[k]:
                out[k] = torch.randn((copies, *shape), generator=g, device=self.device)
        return out.transpose(0, 1).reshape(copies * b, *shape)

    # -- the model ---------------------------------------------------------------------------
    def to_plan(self, x0: torch.Tensor, steps_left: torch.Tensor) -> Plan:
        """(B, T, D) normalised tokens -> de-normalised `Plan` with the in-episode mask."""
        frames = tokens_to_frames(x0, self.frame_stack)  # (B, H, obs + act)
        od = self.model.config.obs_dim
        obs = self.normalizer.denormalize_obs(frames[..., :od])
        act = self.normalizer.denormalize_act(frames[..., od:])
        h = frames.shape[1]
        mask = (torch.arange(h, device=x0.device)[None] < steps_left[:, None]).to(x0.dtype)
        return Plan(obs[..., :2], obs[..., 2:4], act, mask)

    def _steered_plan(self, x0: torch.Tensor, steps_left: torch.Tensor) -> Plan:
        """The plan as reward guidance sees it: the gradient flows through the planned states
        only; the objective's action terms act on the executed action (`action_step`)."""
        plan = self.to_plan(x0, steps_left)
        return replace(plan, actions=plan.actions.detach())

    def _step_action(self, x0, reward, steps_left) -> torch.Tensor:
        """(B, act_dim) first action of the clean plans x0 after following d reward / d a_0 for
        `action_step` (gradient flow in ACTION_FLOW_STEPS explicit steps, so a quadratic cost
        shrinks the action smoothly and never flips it), the rest of the plan held fixed."""
        plan = self.to_plan(x0, steps_left)
        actions = plan.actions.detach().clone()
        dt = self.config.action_step / ACTION_FLOW_STEPS
        for _ in range(ACTION_FLOW_STEPS):
            first = actions[:, 0].clone().requires_grad_(True)
            with torch.enable_grad():
                stepped = torch.cat([first[:, None], actions[:, 1:]], dim=1)
                score = reward(replace(plan, actions=stepped)).sum()
                if not score.requires_grad:  # the objective ignores actions
                    break
                (grad,) = torch.autograd.grad(score, first, allow_unused=True)
            if grad is None:
                break
            actions[:, 0] = first.detach() + dt * grad
        return actions[:, 0]

    def _predict_x0(self, x: torch.Tensor, levels: torch.Tensor, cond: Condition) -> torch.Tensor:
        """x0 of (C * B, T, D) stacked plans (copy j of env k at row j * B + k) given `cond`,
        with classifier-free guidance when goal_weight is neither 0 nor 1."""
        n = x.shape[0]
        copies = n // cond.first_obs.shape[0]
        first_obs = cond.first_obs.repeat(copies, 1)
        w = self.config.goal_weight
        if cond.goal is None or w == 0 or not self.model.config.goal_dim:
            return self.model.predict_x0(x, levels, first_obs)
        goal = cond.goal.repeat(copies, 1)
        if w == 1:
            return self.model.predict_x0(x, levels, first_obs, goal)
        x0_goal, x0_none = self.model.predict_x0_with_and_without_goal(x, levels, first_obs, goal)
        return x0_none + w * (x0_goal - x0_none)

    # -- one denoising row -------------------------------------------------------------------
    def _row(self, x, level_from, level_to, cond, reward, steps_left, x0_prev=None):
        """One (guided) DDIM row from step levels `level_from` to `level_to` (both (C * B, T)).

        x: (C * B, T, D), C stacked plans per environment; cond and steps_left are per
        environment. x0_prev: the previous row's x0 estimate; when given, MCG builds its futures
        from it instead of spending one more forward pass. Returns (x_next, x0). A plan padded
        with a no-op row (level_to == level_from everywhere) leaves it exactly as it came.
        """
        k_from, k_to = self.train_levels[level_from], self.train_levels[level_to]
        moving = level_to < level_from  # (C * B, T)
        active = moving.any(dim=1)  # plans not just waiting out padding rows
        if reward is None or self.config.guidance_scale == 0:
            x0, grad = self._predict_x0_moving(x, k_from, moving, cond, x0_prev), None
        else:
            x0, grad = self._mcg_gradient(x, k_from, cond, reward, steps_left, active, x0_prev)
        x_next = diffusion.ddim_step(x, x0, k_from, k_to, self.abar)
        if grad is not None:
            sigma = (1 - self.abar[k_to]).sqrt().unsqueeze(-1).to(x.dtype)  # (C * B, T, 1)
            x_next = x_next + self.config.guidance_scale * moving.unsqueeze(-1) * sigma * grad
        # A DDIM step between equal levels is the identity only up to float rounding, and an x0
        # carried in (`carry_x0`) must reach the first row that moves the plan.
        waiting = ~active[:, None, None]
        x_next = torch.where(waiting, x, x_next)
        if x0_prev is not None:
            x0 = torch.where(waiting, x0_prev, x0)
        return x_next, x0

    def _predict_x0_moving(self, x, k_from, moving, cond, x0_prev):
        """x0 of (C * B, T, D) plans, the model run only on the tokens up to the last one this
        row moves. The model is causal, so the tokens after it change no earlier prediction, and
        they keep their levels (a DDIM step between equal levels ignores x0): their x0 is the
        previous row's, or 0 (the data's mean) before any. Without a reward that is the whole
        saving of a pyramid: a warm decision's rows move the first `sampling_steps` tokens or
        fewer, and the far tokens, still pure noise, cost nothing."""
        moved = moving.any(dim=0).nonzero()
        live = int(moved[-1]) + 1 if len(moved) else 0
        if live == x.shape[1]:
            return self._predict_x0(x, k_from, cond)
        tail = x0_prev[:, live:] if x0_prev is not None else torch.zeros_like(x[:, live:])
        if live == 0:
            return tail
        return torch.cat([self._predict_x0(x[:, :live], k_from[:, :live], cond), tail], dim=1)

    def _mcg_gradient(self, x, k_from, cond, reward, steps_left, active, x0_prev):
        """(x0, grad): the model's x0 of x and the reward gradient w.r.t. x, averaged over
        `mcg_samples` futures (x itself, and copies whose every token is re-noised from an x0
        estimate to its own level), clipped per token to `guidance_clip` when set."""
        m, (n, t, d) = self.config.mcg_samples, x.shape
        b = len(self.generators)
        c = n // b
        if m == 1:
            x0, flat = self._flat_reward(x, k_from, cond, reward, steps_left)
            if flat:
                return x0, torch.zeros_like(x)
        offsets = torch.zeros(m, n, t, d, device=x.device, dtype=x.dtype)
        if m > 1:
            with torch.no_grad():
                if x0_prev is None:
                    x0_prev = self._predict_x0(x, k_from, cond)
                env_active = active.view(c, b).any(dim=0)  # (B,): an env's copies move together
                noise = self._randn(m - 1, t, d, active=env_active, copies=c).transpose(0, 1)
                futures = diffusion.q_sample(
                    x0_prev.expand(m - 1, n, t, d).reshape(-1, t, d),
                    k_from.repeat(m - 1, 1),
                    self.abar,
                    noise.reshape(-1, t, d),
                ).view(m - 1, n, t, d)
                offsets[1:] = futures - x
        base = x.detach().requires_grad_(True)
        with torch.enable_grad():
            xr = (base.unsqueeze(0) + offsets).reshape(m * n, t, d)
            x0r = self._predict_x0(xr, k_from.repeat(m, 1), cond)
            # The reward sees one (B, ...) plan per future and copy, so per-env goals line up.
            views = x0r.view(m * c, b, t, d)
            scores = [reward(self._steered_plan(x0j, steps_left)) for x0j in views]
            score = torch.stack(scores).view(m, n).mean(0)  # Monte-Carlo average over futures
            if score.requires_grad:
                (grad,) = torch.autograd.grad(score.sum(), inputs=base)
            else:  # the objective does not depend on the planned states
                grad = torch.zeros_like(base)
        if self.config.guidance_clip > 0:
            grad = clip_token_norm(grad, self.config.guidance_clip)
        return x0r.view(m, n, t, d)[0].detach(), grad

    def _flat_reward(self, x, k_from, cond, reward, steps_left):
        """(x0, True) when the reward's gradient at the predicted plan is zero for every plan
        of the batch (a keep-out objective is flat far from its zones): then the gradient w.r.t.
        the noisy tokens is exactly zero too, and one forward pass is all the row needs."""
        n, t, d = x.shape
        b = len(self.generators)
        with torch.no_grad():
            x0 = self._predict_x0(x, k_from, cond)
        probe = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            views = probe.view(n // b, b, t, d)
            score = torch.stack([reward(self._steered_plan(x0j, steps_left)) for x0j in views])
            if not score.requires_grad:  # the objective does not depend on the planned states
                return x0, True
            (grad,) = torch.autograd.grad(score.sum(), inputs=probe)
        return x0, bool((grad == 0).all())

    def _run(self, x, rows, cond, reward, steps_left, x0=None):
        """Denoise x through consecutive rows of (C * B, T) step levels; returns (x, last x0)."""
        for lv_from, lv_to in zip(rows[:-1], rows[1:], strict=True):
            x, x0 = self._row(x, lv_from, lv_to, cond, reward, steps_left, x0)
        return x, x0

    # -- one decision ------------------------------------------------------------------------
    def _prepare(self, obs, steps_left, goal=None):
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        b = obs_t.shape[0]
        if len(self.generators) != b:
            raise ValueError(f"planner was reset for {len(self.generators)} envs, got {b} obs")
        if steps_left is None:
            steps_left = self.max_tokens * self.frame_stack
        steps_left = torch.as_tensor(steps_left, device=self.device).long().expand(b).clone()
        steps_left = steps_left.clamp(min=1)
        tokens = min(self.max_tokens, int(-(-int(steps_left.max()) // self.frame_stack)))
        goal_n = None
        if goal is not None:
            if not torch.is_tensor(goal):
                goal = torch.tensor(np.array(goal, dtype=np.float32))
            goal_t = goal.to(device=self.device, dtype=torch.float32)
            goal_n = self.normalizer.normalize_goal(goal_t.reshape(-1, 2).expand(b, 2))
        return Condition(self.normalizer.normalize_obs(obs_t), goal_n), steps_left, tokens

    @torch.no_grad()
    def act(self, obs, reward=None, steps_left=None, goal=None) -> np.ndarray:
        """obs (B, obs_dim) -> actions (B, act_dim) in [-1, 1]; replans from the current state.

        reward: a callable on `Plan` (see dfplan.guidance), or None for no reward guidance.
        steps_left: (B,) or int, steps remaining in the episode (caps the plan length).
        goal: (B, 2) or (2,) goal positions the model is conditioned on, or None.
        """
        cond, steps_left, tokens = self._prepare(obs, steps_left, goal)
        b = cond.first_obs.shape[0]
        profile = cold_schedule(self.config, tokens).to(self.device)  # (rows + 1, T)
        cold = self.cold.clone()
        if self.tokens is None:
            cold[:] = True
        cold = cold.to(self.device)  # bookkeeping stays on the CPU; masks go where the plan is
        # Cold and warm environments run as two passes over the whole batch; in each pass the
        # other group waits on no-op rows (the reward is a callable on the whole batch).
        x = x0 = None
        if cold.any():
            rows = [torch.where(cold[:, None], row, profile[0]) for row in profile]
            noise = self._randn(tokens, self.model.config.token_dim, active=cold)
            x, x0 = self._run(noise, rows, cond, reward, steps_left)
        if not cold.all():
            xw, x0w = self._warm_start(profile[-1], tokens, ~cold, cond, reward, steps_left)
            if x is None:
                x, x0 = xw, x0w
            else:
                warm = ~cold[:, None, None]
                x, x0 = torch.where(warm, xw, x), torch.where(warm, x0w, x0)
        self.tokens, self.levels = x.detach(), profile[-1].expand(b, tokens).clone()
        self.x0 = x0.detach()
        self.cold[:] = False
        if reward is not None and self.config.action_step > 0:
            action = self._step_action(x0, reward, steps_left)
        else:
            od = self.model.config.obs_dim
            first_action = tokens_to_frames(x0[:, :1], self.frame_stack)[:, 0, od:]
            action = self.normalizer.denormalize_act(first_action)
        return action.clamp(-1.0, 1.0).cpu().numpy()

    def _warm_start(self, floor, tokens, warm, cond, reward, steps_left):
        """Shift the `warm` environments' plans by one frame, re-noise them `refresh_rows` rows
        up and denoise back to `floor`; with `warm_candidates` K > 1 (and a reward to choose
        by) K draws run stacked in one batch and each env keeps the one whose x0 scores best."""
        copies = self.config.warm_candidates if reward is not None else 1
        x, levels = self._warm_levels(floor, tokens, warm, copies)
        x0 = self._shifted_x0(tokens).repeat(copies, 1, 1) if self.config.carry_x0 else None
        # One level per row down to the floor; cold environments wait on no-op rows.
        warm_rows = warm.repeat(copies)
        depth = int(torch.where(warm_rows, (levels - floor).amax(dim=1), 0).max())
        rows = [
            torch.where(warm_rows[:, None], torch.maximum(floor, levels - i), levels)
            for i in range(depth + 1)
        ]
        xs, x0s = self._run(x, rows, cond, reward, steps_left, x0)
        return self._best_of(xs, x0s, reward, steps_left)

    def _best_of(self, xs, x0s, reward, steps_left):
        """Per environment, the stacked plan (copy j at row j * B + k) whose x0 scores highest
        under the reward (the earliest on ties)."""
        b = len(self.generators)
        if xs.shape[0] == b:
            return xs, x0s
        x, x0, best = None, None, None
        for xc, x0c in zip(xs.split(b), x0s.split(b), strict=True):
            score = reward(self.to_plan(x0c, steps_left))
            if best is None:
                x, x0, best = xc, x0c, score
                continue
            better = (score > best)[:, None, None]
            x, x0 = torch.where(better, xc, x), torch.where(better, x0c, x0)
            best = torch.maximum(score, best)
        return x, x0

    def _warm_levels(self, floor: torch.Tensor, tokens: int, active: torch.Tensor, copies: int):
        """`copies` draws of: the previous plan shifted by one frame and raised `refresh_rows`
        rows above `floor`; (copies * B, tokens, D) and their levels. Only `active`
        environments draw noise (the others are about to start from noise)."""
        s = self.config.sampling_steps
        _, t, d = self.tokens.shape
        fd = d // self.frame_stack
        noise = self._randn(t * self.frame_stack, fd, active=active, copies=copies)
        x, levels = diffusion.shift_one_frame(
            self.tokens.repeat(copies, 1, 1),
            self.levels.repeat(copies, 1),
            self.frame_stack,
            self.abar_steps,
            noise,
        )
        x, levels = x[:, :tokens], levels[:, :tokens]
        if tokens > t:  # a longer plan than last time (e.g. a new episode): pure-noise tokens
            x = torch.cat([x, self._randn(tokens - t, d, active=active, copies=copies)], dim=1)
            pad = torch.full_like(levels[:, :1], s).expand(-1, tokens - t)
            levels = torch.cat([levels, pad], dim=1)
        target = torch.clamp(floor.to(self.device) + self.config.refresh_rows, max=s)
        target = torch.maximum(levels, target.expand_as(levels))
        noise = self._randn(tokens, d, active=active, copies=copies)
        x = diffusion.renoise(x, levels, target, self.abar_steps, noise)
        return x, target

    def _shifted_x0(self, tokens: int) -> torch.Tensor:
        """The last decision's x0 shifted by the executed frame, as (B, tokens, D).

        Frames past its end repeat its last frame: they belong to pure-noise tokens, whose
        futures are noise whatever x0 says."""
        frames = tokens_to_frames(self.x0, self.frame_stack)
        need = tokens * self.frame_stack
        tail = frames[:, -1:].expand(-1, max(need - frames.shape[1] + 1, 0), -1)
        frames = torch.cat([frames[:, 1:], tail], dim=1)[:, :need]
        return frames_to_tokens(frames, self.frame_stack)

    @torch.no_grad()
    def sample(
        self, obs, steps: int, reward=None, schedule: torch.Tensor | None = None, goal=None
    ) -> Plan:
        """A whole plan of `steps` frames from pure noise to clean, de-normalised.

        schedule: a (rows, T) step-level matrix (validated); default: the configured pyramid
        run to the end. Does not touch the warm-start state.
        """
        cond, steps_left, tokens = self._prepare(obs, steps, goal)
        if schedule is None:
            schedule = schedules.pyramid(
                tokens, self.config.sampling_steps, self.config.uncertainty
            )
        schedule = schedules.validate(schedule, self.config.sampling_steps).to(self.device)
        if schedule.shape[1] != tokens:
            raise ValueError(f"schedule has {schedule.shape[1]} tokens, the plan needs {tokens}")
        b = cond.first_obs.shape[0]
        x = self._randn(tokens, self.model.config.token_dim)
        x, _ = self._run(x, [row.expand(b, tokens) for row in schedule], cond, reward, steps_left)
        return self.to_plan(x, steps_left)
