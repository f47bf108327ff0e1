"""The planner's settings: one dataclass, stored in full in every checkpoint that ships one.

The Diffusion Forcing planner (dfplan.planner) reads them; each field says what it does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Settings of earlier versions, accepted from old checkpoints at the value that meant "off".
RETIRED = {
    "schedule": "pyramid",
    "warm_start": True,
    "guide_waiting": False,
    "eta": 0.0,
    "candidates": 1,
    "deep_refresh_rows": 0,
    "stall_refresh_rows": 0,
    "stall_speed": None,  # any: it only mattered with stall_refresh_rows
}


@dataclass
class PlannerConfig:
    sampling_steps: int = 10  # S: DDIM rows from pure noise to clean for one token
    uncertainty: float = 1.0  # pyramid lag in rows per token: 0 = full sequence, S = one by one
    refresh_rows: int = 3  # warm start: rows each decision re-noises and denoises again
    horizon_tokens: int = 0  # cap on planned tokens; 0 = the model's max_tokens
    # Classifier-free guidance weight w on the goal: x0 = x0_none + w (x0_goal - x0_none). 1 =
    # plain goal conditioning (one pass), 0 = ignore the goal (the model samples unconditionally),
    # w > 1 pushes harder toward the goal (two passes). Unconditional models ignore it.
    goal_weight: float = 1.0
    guidance_scale: float = 0.0  # step size of the reward gradient (x += s sqrt(1-abar) grad)
    mcg_samples: int = 1  # futures the reward gradient is averaged over (1 = plain guidance)
    guidance_clip: float = 0.0  # cap on each token's reward-gradient norm (0 = no cap)
    # The executed action follows the objective's gradient w.r.t. it on the final clean plan
    # for this long (gradient flow; 0 = off). Reward guidance above sees the objective through
    # the planned states only, so this is how its action terms (effort) act.
    action_step: float = 0.0
    warm_candidates: int = 1  # warm start: re-noised draws per decision, the best by reward kept
    carry_x0: bool = False  # warm start: MCG futures of a draw's first row come from the last
    # decision's x0 (shifted one frame) instead of one more forward pass per draw

    @classmethod
    def from_dict(cls, d: dict) -> PlannerConfig:
        """Settings from a checkpoint; retired settings are dropped where they were off, and
        refused (ValueError) where the checkpoint relied on them."""
        known = {f.name for f in fields(cls)}
        kept = {}
        for name, value in d.items():
            if name in known:
                kept[name] = value
            elif name in RETIRED and RETIRED[name] in (None, value):
                continue
            elif name == "schedule" and value == "full_sequence":
                kept["uncertainty"] = 0.0
            elif name == "schedule" and value == "autoregressive":
                kept["uncertainty"] = float(d.get("sampling_steps", cls.sampling_steps))
            else:
                raise ValueError(f"planner setting {name}={value!r} is not supported any more")
        return cls(**kept)

    def validate(self) -> None:
        counts = (self.sampling_steps, self.mcg_samples, self.refresh_rows, self.warm_candidates)
        if min(counts) < 1:
            raise ValueError(
                "sampling_steps, mcg_samples, refresh_rows and warm_candidates must be >= 1"
            )
        if self.horizon_tokens < 0:
            raise ValueError("horizon_tokens must be >= 0")
        # Far beyond any useful step size the float32 update overflows into NaN plans.
        reals = (
            self.guidance_scale,
            self.guidance_clip,
            self.uncertainty,
            self.goal_weight,
            self.action_step,
        )
        if not all(0 <= v <= 1e6 for v in reals):
            raise ValueError(
                "guidance_scale, guidance_clip, uncertainty, goal_weight and action_step must be "
                "finite, >= 0 and <= 1e6"
            )
