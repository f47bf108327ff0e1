"""The Diffusion Forcing planner: guided DDIM over a per-token schedule, replanning every step.

One decision (`act`):
1. Build the token levels to start from: pure noise on the first call (cold start), otherwise the
   previous plan shifted by one frame and re-noised to the "refresh" profile (warm start).
2. Run denoising rows. Each row predicts x0 for every token with the causal model, scores the
   de-normalised x0 plan with the reward, and takes a DDIM step toward the row's levels plus the
   reward gradient w.r.t. the noisy tokens (backpropagated through the model, so far-future
   rewards reach near tokens). With Monte-Carlo Guidance the gradient is averaged over
   `mcg_samples` sampled futures: copies of the plan whose tokens are re-noised to their own
   levels from the current x0 estimate (one copy is the plan itself, so 1 sample is plain guidance).
3. Execute the first action of the first (now clean) token, clamped to [-1, 1].

Warm start can draw the re-noise K times (`warm_candidates`); the K draws run stacked along the
batch (copy j of env k at row j * B + k) and the plan whose x0 scores best is kept.

Levels here are sampling steps 0..S (S = `sampling_steps`), mapped to the model's training levels
by `schedules.to_train_levels`. After every decision token t sits at level P(t) (the "profile":
the cold schedule's first row in which token 0 is clean; for the pyramid P(t) = lag(t)). A warm
step shifts the plan by one frame, raises every token to min(S, P(t) + refresh_rows), and runs
`refresh_rows` rows back down to P: the far future keeps its partly denoised state. With
`stall_refresh_rows`, environments that have (nearly) stopped use that depth instead; one batch
mixes depths, the shallower environments waiting on no-op rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from dfplan import diffusion, schedules
from dfplan.guidance import Plan, clip_token_norm
from dfplan.model import DiffusionForcingModel, frames_to_tokens, tokens_to_frames

SCHEDULES = ("pyramid", "full_sequence", "autoregressive")


@dataclass
class PlannerConfig:
    sampling_steps: int = 20  # S: DDIM rows from pure noise to clean for one token
    schedule: str = "pyramid"  # cold-start schedule: pyramid, full_sequence or autoregressive
    uncertainty: float = 1.0  # pyramid lag in rows per token (0 = full sequence)
    guidance_scale: float = 0.3  # step size of the reward gradient (x += s sqrt(1-abar) grad)
    mcg_samples: int = 4  # futures the guidance gradient is averaged over (1 = plain guidance)
    warm_start: bool = True  # reuse the previous plan (False: replan from noise every step)
    refresh_rows: int = 2  # warm start: rows re-run per decision (how far near tokens re-noise)
    guide_waiting: bool = False  # also push tokens that wait at their level this row (far future)
    guidance_clip: float = 0.0  # cap on each token's reward-gradient norm (0 = no cap)
    horizon_tokens: int = 0  # cap on planned tokens; 0 = the model's max_tokens
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic given the initial noise)
    candidates: int = 1  # cold start: plans drawn per environment, the best by reward is kept
    warm_candidates: int = 1  # warm start: re-noised draws per decision, the best is kept
    deep_refresh_rows: int = 0  # warm start: one more draw re-noised this deep (0 = none)
    carry_x0: bool = False  # warm start: MCG futures of a draw's first row come from the last
    # decision's x0 (shifted one frame) instead of one more forward pass per draw
    stall_refresh_rows: int = 0  # warm start: environments slower than `stall_speed` re-noise
    # this many rows instead of refresh_rows (0 = off): a plan that has stopped can move again;
    # the `deep_refresh_rows` draw keeps its own depth for every environment
    stall_speed: float = 0.1  # speed (norm of obs[2:4]) strictly under which an env has stalled
    # Classifier-free guidance weight w on the goal: x0 = x0_none + w (x0_goal - x0_none). 1 =
    # plain goal conditioning (one pass), 0 = ignore the goal (the model samples unconditionally),
    # w > 1 pushes harder toward the goal (two passes). Unconditional models ignore it.
    goal_weight: float = 1.0

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got '{self.schedule}'")
        counts = (
            self.sampling_steps,
            self.mcg_samples,
            self.refresh_rows,
            self.candidates,
            self.warm_candidates,
        )
        if min(counts) < 1:
            raise ValueError(
                "sampling_steps, mcg_samples, refresh_rows and (warm_)candidates must be >= 1"
            )
        knobs = (
            self.guidance_scale,
            self.guidance_clip,
            self.horizon_tokens,
            self.eta,
            self.uncertainty,
            self.deep_refresh_rows,
            self.stall_refresh_rows,
            self.stall_speed,
        )
        if min(knobs) < 0:
            raise ValueError(
                "guidance_scale, guidance_clip, horizon_tokens, eta, uncertainty, "
                "deep_refresh_rows, stall_refresh_rows, stall_speed must be >= 0"
            )
        # Far beyond any useful step size the float32 update overflows into NaN plans.
        bounded = (
            self.guidance_scale,
            self.eta,
            self.uncertainty,
            self.stall_speed,
            self.goal_weight,
        )
        if not all(0 <= v <= 1e6 for v in bounded):
            raise ValueError(
                "guidance_scale, eta, uncertainty, stall_speed and goal_weight must be "
                "finite, >= 0 and <= 1e6"
            )


@dataclass
class Condition:
    """What one decision's plans are conditioned on, per environment (normalised)."""

    first_obs: torch.Tensor  # (B, obs_dim): the current observation
    goal: torch.Tensor | None  # (B, 2): the goal position, or None (unconditional sampling)


def full_schedule(config: PlannerConfig, tokens: int) -> torch.Tensor:
    """(rows + 1, T) step levels of the configured schedule, from pure noise to all clean."""
    s = config.sampling_steps
    if config.schedule == "pyramid":
        return schedules.pyramid(tokens, s, config.uncertainty)
    if config.schedule == "full_sequence":
        return schedules.full_sequence(tokens, s)
    return schedules.autoregressive(tokens, s)


def cold_schedule(config: PlannerConfig, tokens: int) -> torch.Tensor:
    """The rows of the full schedule up to the first one where token 0 is clean."""
    matrix = full_schedule(config, tokens)
    first_clean = int((matrix[:, 0] == 0).nonzero()[0])
    return matrix[: first_clean + 1]


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
    b, t, _ = tokens.shape
    s = abar_steps.numel() - 1
    frames = tokens_to_frames(tokens, frame_stack)  # (B, T * F, Fd)
    frame_levels = levels.repeat_interleave(frame_stack, dim=1)  # (B, T * F)
    frames = torch.cat([frames[:, 1:], noise[:, -1:]], dim=1)
    frame_levels = torch.cat([frame_levels[:, 1:], torch.full_like(frame_levels[:, :1], s)], 1)
    new_levels = frame_levels.view(b, t, frame_stack).amax(dim=2)  # (B, T)
    target = new_levels.repeat_interleave(frame_stack, dim=1)
    frames = renoise(frames, frame_levels, target, abar_steps, noise)
    return frames_to_tokens(frames, frame_stack), new_levels


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


class DiffusionForcingPlanner:
    """Batched receding-horizon planner around a trained `DiffusionForcingModel`.

    `reset(batch_size, seeds)`, then `act(obs, reward, steps_left) -> actions` once per env step.
    Each environment of the batch draws its noise from its own generator, so a batch of B gives
    the same plans as B planners run one at a time with the same seeds.
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
    def reset(self, batch_size: int, seeds: list[int] | None = None) -> None:
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

    # -- plan conversion ---------------------------------------------------------------------
    def to_plan(self, x0: torch.Tensor, steps_left: torch.Tensor) -> Plan:
        """(B, T, D) normalised tokens -> de-normalised `Plan` with the in-episode mask."""
        frames = tokens_to_frames(x0, self.frame_stack)  # (B, H, obs + act)
        od = self.model.config.obs_dim
        obs = self.normalizer.denormalize_obs(frames[..., :od])
        act = self.normalizer.denormalize_act(frames[..., od:])
        h = frames.shape[1]
        mask = (torch.arange(h, device=x0.device)[None] < steps_left[:, None]).to(x0.dtype)
        return Plan(obs[..., :2], obs[..., 2:4], act, mask)

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
        # One pass over both halves: [with the goal; with the "no goal" embedding].
        has_goal = torch.arange(2 * n, device=x.device) < n
        both = self.model.predict_x0(
            x.repeat(2, 1, 1),
            levels.repeat(2, 1),
            first_obs.repeat(2, 1),
            goal.repeat(2, 1),
            has_goal,
        )
        x0_goal, x0_none = both.split(n)
        return x0_none + w * (x0_goal - x0_none)

    # -- one denoising row -------------------------------------------------------------------
    def _row(self, x, level_from, level_to, cond, reward, steps_left, x0_prev=None):
        """One guided DDIM row from step levels `level_from` to `level_to` (both (C * B, T)).

        x: (C * B, T, D), C stacked plans per environment (warm draws), copy j of env k at row
        j * B + k; cond and steps_left are per environment, (B, ...).

        x0_prev: the previous row's x0 estimate; when given, MCG builds its futures from it
        instead of spending one more forward pass on the current x (a one-row-old estimate of
        the same plan, re-noised to the current levels).

        Tokens that move this row (level_to < level_from) take the guidance step; with
        `guide_waiting`, so do the tokens of the same env that wait at their level (the far
        future at pure noise), as the REFERENCE.md probe did. An env padded with no-op rows is
        never touched on them.
        """
        cfg = self.config
        k_from, k_to = self.train_levels[level_from], self.train_levels[level_to]
        n, t, d = x.shape
        b = len(self.generators)
        c = n // b
        active = (level_to < level_from).any(dim=1)  # plans not just waiting out padding rows
        env_active = active.view(c, b).any(dim=0)  # (B,): the copies of an env move together
        eta_noise = self._randn(t, d, active=env_active, copies=c) if cfg.eta > 0 else None
        if reward is None or cfg.guidance_scale == 0:
            with torch.no_grad():
                x0 = self._predict_x0(x, k_from, cond)
            x_next = diffusion.ddim_step(x, x0, k_from, k_to, self.abar, cfg.eta, noise=eta_noise)
            return self._hold_waiting(active, x, x_next, x0_prev, x0)
        m = cfg.mcg_samples
        base = x.detach().requires_grad_(True)
        offsets = torch.zeros(m, n, t, d, device=x.device, dtype=x.dtype)
        if m > 1:
            with torch.no_grad():
                if x0_prev is None:
                    x0_prev = self._predict_x0(x, k_from, cond)
                noise = self._randn(m - 1, t, d, active=env_active, copies=c).transpose(0, 1)
                futures = diffusion.q_sample(
                    x0_prev.expand(m - 1, n, t, d).reshape(-1, t, d),
                    k_from.repeat(m - 1, 1),
                    self.abar,
                    noise.reshape(-1, t, d),
                ).view(m - 1, n, t, d)
                offsets[1:] = futures - x  # copy j: every token re-noised from x0 at its level
        with torch.enable_grad():
            xr = (base.unsqueeze(0) + offsets).reshape(m * n, t, d)
            x0r = self._predict_x0(xr, k_from.repeat(m, 1), cond)
            # The reward sees one (B, ...) plan per future and copy, so per-env goals line up.
            scores = [reward(self.to_plan(x0j, steps_left)) for x0j in x0r.view(m * c, b, t, d)]
            score = torch.stack(scores).view(m, n).mean(0)  # Monte-Carlo average over futures
            (grad,) = torch.autograd.grad(score.sum(), inputs=base)
        if cfg.guidance_clip > 0:
            grad = clip_token_norm(grad, cfg.guidance_clip)
        x0 = x0r.view(m, n, t, d)[0].detach()
        x_next = diffusion.ddim_step(x, x0, k_from, k_to, self.abar, cfg.eta, noise=eta_noise)
        sigma = (1 - self.abar[k_to]).sqrt().unsqueeze(-1).to(x.dtype)  # (C * B, T, 1)
        if cfg.guide_waiting:
            guided = active[:, None].expand(n, t)
        else:
            guided = level_to < level_from
        guided = guided.unsqueeze(-1).to(x.dtype)
        x_next = x_next + cfg.guidance_scale * guided * sigma * grad
        return self._hold_waiting(active, x, x_next, x0_prev, x0)

    @staticmethod
    def _hold_waiting(active, x, x_next, x0_prev, x0):
        """Plans that wait out a padding row leave it exactly as they came: a DDIM step between
        equal levels is the identity only up to float rounding, and an x0 estimate carried in
        (`carry_x0`) must reach the first row that moves them, as it would with no padding."""
        waiting = ~active[:, None, None]
        x_next = torch.where(waiting, x, x_next)
        if x0_prev is not None:
            x0 = torch.where(waiting, x0_prev, x0)
        return x_next, x0

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
            goal_t = torch.tensor(np.array(goal, dtype=np.float32), device=self.device)
            goal_n = self.normalizer.normalize_goal(goal_t.reshape(-1, 2).expand(b, 2))
        return Condition(self.normalizer.normalize_obs(obs_t), goal_n), steps_left, tokens

    def _run(self, x, rows, cond, reward, steps_left, x0=None):
        """Denoise x through consecutive rows of (C * B, T) step levels; returns (x, last x0).

        x0: an estimate of the clean plan for the first row's MCG futures (None: predict it)."""
        for lv_from, lv_to in zip(rows[:-1], rows[1:], strict=True):
            x, x0 = self._row(x, lv_from, lv_to, cond, reward, steps_left, x0)
        return x, x0

    @torch.no_grad()
    def act(self, obs, reward=None, steps_left=None, goal=None) -> np.ndarray:
        """obs (B, obs_dim) -> actions (B, act_dim) in [-1, 1]; replans from the current state.

        reward: a callable on `Plan` (see dfplan.guidance), or None for unguided sampling.
        steps_left: (B,) or int, steps remaining in the episode (caps the plan length).
        goal: (B, 2) or (2,) goal positions the model is conditioned on, or None.
        """
        cond, steps_left, tokens = self._prepare(obs, steps_left, goal)
        b = cond.first_obs.shape[0]
        profile = cold_schedule(self.config, tokens).to(self.device)  # (rows + 1, T)
        cold = self.cold.clone() if self.config.warm_start else torch.ones(b, dtype=torch.bool)
        if self.tokens is None:
            cold[:] = True
        cold = cold.to(self.device)  # bookkeeping stays on the CPU; masks go where the plan is
        # Cold and warm environments run as two passes over the whole batch; in each pass the
        # other group waits on no-op rows (the reward is a callable on the whole batch).
        x = x0 = None
        if cold.any():
            x, x0 = self._cold_start(profile, cold, cond, reward, steps_left)
        if not cold.all():
            depth = self._refresh_depth(obs)
            xw, x0w = self._warm_start(profile[-1], tokens, ~cold, cond, reward, steps_left, depth)
            if x is None:
                x, x0 = xw, x0w
            else:
                warm = ~cold[:, None, None]
                x, x0 = torch.where(warm, xw, x), torch.where(warm, x0w, x0)
        self.tokens, self.levels = x.detach(), profile[-1].expand(b, tokens).clone()
        self.x0 = x0.detach()
        self.cold[:] = False
        od = self.model.config.obs_dim
        first_action = tokens_to_frames(x0[:, :1], self.frame_stack)[:, 0, od:]
        action = self.normalizer.denormalize_act(first_action).clamp(-1.0, 1.0)
        return action.cpu().numpy()

    def _cold_start(self, profile, cold, cond, reward, steps_left):
        """Plan the `cold` environments from pure noise down the cold profile.

        With `candidates` K > 1, each draws K plans and keeps the one whose final x0 scores
        highest under the reward: guidance only follows the local gradient, so from a start
        where the straight line to the goal runs into a wall, a plan that goes around is found
        by sampling, not by ascent. Later decisions warm-start from it.
        """
        tokens, d = profile.shape[1], self.model.config.token_dim
        rows = [torch.where(cold[:, None], row, profile[0]) for row in profile]  # warm: no-op

        def draw():
            return self._run(self._randn(tokens, d, active=cold), rows, cond, reward, steps_left)

        return self._best_of([draw] * self.config.candidates, reward, steps_left)

    def _best_of(self, draws, reward, steps_left):
        """Call each `draw() -> (x, x0)` of C * B stacked plans (C >= 1, copy j of env k at row
        j * B + k); per env keep the plan whose x0 scores highest (the earliest on ties)."""
        b = len(self.generators)
        x = x0 = best = None
        for draw in draws:
            xs, x0s = draw()
            for xc, x0c in zip(xs.split(b), x0s.split(b), strict=True):
                if reward is None:  # nothing to choose by
                    return xc, x0c
                score = reward(self.to_plan(x0c, steps_left))
                if best is None:
                    x, x0, best = xc, x0c, score
                    continue
                better = (score > best)[:, None, None]
                x, x0 = torch.where(better, xc, x), torch.where(better, x0c, x0)
                best = torch.maximum(score, best)
        return x, x0

    def _refresh_depth(self, obs) -> int | torch.Tensor:
        """Rows a warm draw re-noises: `refresh_rows`, or per environment (B,) with
        `stall_refresh_rows` for those moving slower than `stall_speed`."""
        cfg = self.config
        if not cfg.stall_refresh_rows:
            return cfg.refresh_rows
        speed = np.linalg.norm(np.asarray(obs, dtype=np.float64)[:, 2:4], axis=1)
        rows = np.where(speed < cfg.stall_speed, cfg.stall_refresh_rows, cfg.refresh_rows)
        return torch.as_tensor(rows, device=self.device)

    def _warm_start(self, floor, tokens, warm, cond, reward, steps_left, depth):
        """Shift the `warm` environments' plans by one frame, re-noise and denoise to `floor`.

        With `warm_candidates` K > 1 the re-noise is drawn K times, and with
        `deep_refresh_rows` R once more R rows deep; the plan whose x0 scores highest is kept.
        A shallow refresh keeps the plan's commitments (a plan that has set off keeps going),
        a deep one can revise the near future (close the last gap to a goal); the reward picks.
        The K draws run stacked in one batch: one pass per row instead of K (at batch 1 a pass
        costs about the same for 1 plan as for 2).
        """
        cfg = self.config
        copies = cfg.warm_candidates if reward is not None else 1  # no reward: nothing to pick by
        refresh = partial(self._refresh, floor, tokens, warm, cond, reward, steps_left)
        draws = [partial(refresh, depth, copies)]
        if cfg.deep_refresh_rows:
            draws.append(partial(refresh, cfg.deep_refresh_rows, 1))
        return self._best_of(draws, reward, steps_left)

    def _refresh(self, floor, tokens, warm, cond, reward, steps_left, depth, copies):
        """`copies` warm draws, stacked: re-noise the shifted plan `depth` rows up (an int, or
        (B,) per environment) and denoise it to `floor`; returns (x, x0) of (copies * B, T, D)."""
        x, levels = self._warm_levels(floor, tokens, warm, depth, copies)
        x0 = self._shifted_x0(tokens).repeat(copies, 1, 1) if self.config.carry_x0 else None
        warm = warm.repeat(copies)
        # One level per row down to the floor (`depth` rows for the pyramid); cold
        # environments, and warm ones with fewer rows, wait on no-op rows so all end together.
        # Env k needs depth_k = max_t(levels - floor) rows (0 for cold ones) and starts after
        # n - 1 - depth_k no-op rows; row i lowers it by max(0, i - (n - 1 - depth_k)) levels.
        depth_k = torch.where(warm, (levels - floor).amax(dim=1), 0)  # (C * B,)
        n = int(depth_k.max()) + 1
        rows = [
            torch.maximum(floor, levels - (i - (n - 1 - depth_k)).clamp(min=0)[:, None])
            for i in range(n)
        ]
        return self._run(x, rows, cond, reward, steps_left, x0)

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

        schedule: a (rows, T) step-level matrix (validated); default: the configured cold
        schedule run to the end. Does not touch the warm-start state.
        """
        cond, steps_left, tokens = self._prepare(obs, steps, goal)
        if schedule is None:
            schedule = full_schedule(self.config, tokens)
        schedule = schedules.validate(schedule, self.config.sampling_steps).to(self.device)
        if schedule.shape[1] != tokens:
            raise ValueError(f"schedule has {schedule.shape[1]} tokens, the plan needs {tokens}")
        b = cond.first_obs.shape[0]
        x = self._randn(tokens, self.model.config.token_dim)
        x, _ = self._run(x, [row.expand(b, tokens) for row in schedule], cond, reward, steps_left)
        return self.to_plan(x, steps_left)

    def _warm_levels(
        self,
        profile: torch.Tensor,
        tokens: int,
        active: torch.Tensor,
        depth: int | torch.Tensor,
        copies: int,
    ):
        """`copies` draws of: the previous plan shifted by one frame and raised `depth` rows
        above `profile`; (copies * B, tokens, D) and their levels.

        Only `active` environments draw noise (the others are about to start from noise)."""
        s = self.config.sampling_steps
        _, t, d = self.tokens.shape
        fd = d // self.frame_stack
        noise = self._randn(t * self.frame_stack, fd, active=active, copies=copies)
        x, levels = shift_one_frame(
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
        if torch.is_tensor(depth):  # per environment: (B,) -> (copies * B, 1)
            depth = depth.repeat(copies)[:, None]
        target = torch.clamp(profile.to(self.device) + depth, max=s)
        target = torch.maximum(levels, target.expand_as(levels))
        noise = self._randn(tokens, d, active=active, copies=copies)
        x = renoise(x, levels, target, self.abar_steps, noise)
        return x, target
