"""The Diffusion Forcing planner as a policy: drop it into any gymnasium loop, single or vector.

    policy = DiffusionForcingPolicy.from_pretrained("maze2d-large")
    policy.reset(seed=0)
    action = policy.act(obs, info)        # (4,) -> (2,) or (B, 4) -> (B, 2)

The goal is read from `info["goal"]` when given (else from `reset(goal=...)`): a goal-conditioned
model is told it, and the reward guidance (when on) pulls toward it. The policy counts
steps since reset to know how much of the episode is left (the plan never runs past it). A
position jump larger than one physics step can make is taken as an environment reset (vector
envs reset sub-environments on their own), as is reaching the time limit; that environment's
clock and plan start afresh. A changed goal also restarts that environment's plan.

An objective (`from_pretrained(task, objective=KeepOut(zones) * 10)`, see dfplan.guidance)
changes two things: route search (dfplan.routes) picks the way to the goal, as a chain of
subgoals, by the objective, and reward guidance (when `guidance_scale` > 0) ascends it. A
goal-conditioned model with no objective plans unguided whatever `guidance_scale` says; a
goal-blind one (goal weight 0, the paper's setting) is pulled to the goal by `GoalReward`.
"""

from __future__ import annotations

import numpy as np
import torch

from dfplan.guidance import GoalReward, check_objective
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.common import PlannerPolicy
from dfplan.routes import RouteConfig, RouteSearch
from dfplan.waypoints import WaypointGraph


class DiffusionForcingPolicy(PlannerPolicy):
    """`from_pretrained(task, checkpoint=None, device=None, objective=None, **planner_overrides)`
    loads a DF checkpoint; the overrides replace `PlannerConfig` fields, e.g. `mcg_samples=1`."""

    KIND = "df"
    CONFIG = PlannerConfig
    PLANNER = DiffusionForcingPlanner

    def __init__(self, planner, task):
        super().__init__(planner, task)
        self.objective = None
        self.routes: RouteSearch | None = None
        self.waypoints: WaypointGraph | None = None

    def _load_extras(self, meta: dict) -> None:
        """Route search, where the checkpoint ships landmarks (the goals of its data); the
        waypoint graph, where it ships one (a model trained on hindsight goals)."""
        if meta.get("waypoints"):
            self.waypoints = WaypointGraph.from_meta(meta["waypoints"])
        if meta.get("landmarks"):
            config = RouteConfig(**meta.get("routes", {}))
            p = self.planner
            self.routes = RouteSearch(p.model, p.normalizer, meta["landmarks"], config, p.config)

    def set_objective(self, objective) -> None:
        """Plan with `objective` (a callable on dfplan.guidance.Plan, (B,) scores) from the next
        decision on; None plans for the goal alone. ValueError for one that cannot work."""
        if objective is not None:
            check_objective(objective)
        self.objective = objective
        self.batch = None  # re-size and restart every plan at the next act()

    def _new_batch(self, batch: int) -> None:
        self.targets: np.ndarray | None = None  # (B, 2) what each env drives to now
        self.searches = np.zeros(batch, dtype=np.int64)  # route searches per env (their seeds)
        self.leg_steps = np.zeros(batch, dtype=np.int64)  # steps since the target was set

    def _route_targets(self, obs: np.ndarray, goals: np.ndarray, stale: np.ndarray):
        """(B, 2) targets: the first subgoal of each env's best route, searched again on a new
        episode or goal, on arriving at a subgoal, and after a leg's horizon without arriving."""
        routes = self.routes
        if self.targets is None:
            self.targets, stale = goals.copy(), np.ones(len(obs), dtype=bool)
        on_subgoal = np.any(self.targets != goals, axis=1)
        near = np.linalg.norm(obs[:, :2] - self.targets, axis=1) <= routes.config.arrive_radius
        late = self.leg_steps >= routes.horizon
        search = stale | (on_subgoal & (near | late))
        if search.any():
            envs = np.flatnonzero(search)
            seeds = [
                None if self.seed is None else (self.seed + k) * 1000 + int(self.searches[k])
                for k in envs
            ]
            new = routes.choose(obs[envs], goals[envs], self.objective, seeds)
            changed = envs[np.any(new != self.targets[envs], axis=1) | stale[envs]]
            self.targets[envs] = new
            self.searches[envs] += 1
            self.leg_steps[envs] = 0
            if len(changed):
                self.planner.forget(changed)
        self.leg_steps += 1
        return self.targets.copy()

    def act(self, obs, info: dict | None = None) -> np.ndarray:
        single = np.ndim(obs) == 1
        obs, goals, stale = self._begin(obs, info)
        # A new episode or a new goal makes an env's old plan worthless: plan it from scratch.
        if stale.any():
            self.planner.forget(np.flatnonzero(stale))
        steps_left = np.maximum(self.max_episode_steps - self.clock.t, 1)
        targets = goals
        if self.objective is not None and self.routes is not None:
            targets = self._route_targets(obs, goals, stale)
        elif self.waypoints is not None:  # the plan heads for a waypoint on the data's roadmap
            targets = self.waypoints.targets(obs[:, :2], goals)
        config = self.planner.config
        guided = config.guidance_scale > 0 or config.action_step > 0
        reward = self._reward(targets) if guided else None
        actions = self.planner.act(obs, reward, steps_left, targets)
        self.clock.advance(obs, goals)
        return actions[0] if single else actions

    def _reward(self, targets: np.ndarray):
        """The guidance reward: the objective, plus the Euclidean pull toward the target when
        the model is not told it (goal weight 0 or an unconditional model: the paper's way);
        None when there is nothing to guide by (a goal-conditioned model, no objective)."""
        config, model_config = self.planner.config, self.planner.model.config
        goal_blind = config.goal_weight == 0 or not model_config.goal_dim
        pull = GoalReward(torch.tensor(targets, dtype=torch.float32)) if goal_blind else None
        if self.objective is None or pull is None:
            return self.objective if pull is None else pull
        return pull + self.objective
