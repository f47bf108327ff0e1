"""Route search: detours found as chains of goals the model already knows, scored by an objective.

A goal-conditioned model drives to any goal its data showed, the way its data drove there. An
objective the data never showed (stay out of a zone) can make that way wrong while another way
exists; the model never saw the detour as one route, but it saw every leg of it. So:

1. Landmarks: the goals the training data drove to, clustered (stored in the checkpoint; no
   map is read). A roadmap links each landmark to its `neighbours` nearest ones; each link is
   the model's own plan from one to the other (sampled once, from rest), and costs the steps
   it takes to arrive minus the objective over those steps. Links that never arrive are out.
2. Cost to go: from every landmark to the goal, by shortest paths over the roadmap (plus a
   planned link from every landmark straight to the goal, sampled once per goal).
3. A search plans from the current state to every landmark and to the goal itself (standing on
   a landmark, the roadmap's links from it are those plans, already made), and picks
   the first target that minimises (cost of that plan) + (its cost to go); among targets within
   `slack` of the best it takes the one closest to the goal, so the agent does not stop at
   every landmark on the way.

The policy hands the target to the planner in place of the goal and searches again on arriving
at it, so the agent drives the detour leg by leg.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from dfplan.guidance import Plan
from dfplan.planner import DiffusionForcingPlanner


@dataclass
class RouteConfig:
    sampling_steps: int = 5  # DDIM rows per token of the leg plans (coarse plans score routes)
    uncertainty: float = 1.0  # pyramid lag of the leg plans
    goal_weight: float = 1.0  # goal guidance of the leg plans (1: one pass per row)
    arrive_radius: float = 0.5  # a plan arrives within this distance of its target
    neighbours: int = 8  # roadmap links per landmark (its nearest landmarks)
    slack: float = 20.0  # targets within this cost of the best are equally good: go farthest
    seed: int = 0  # noise of the roadmap's plans

    def validate(self) -> None:
        if self.sampling_steps < 1 or self.neighbours < 1:
            raise ValueError("route sampling_steps and neighbours must be >= 1")
        reals = (self.uncertainty, self.goal_weight, self.arrive_radius, self.slack)
        if not all(np.isfinite(v) and v >= 0 for v in reals) or self.arrive_radius == 0:
            raise ValueError(
                "route uncertainty, goal_weight and slack must be finite and >= 0, "
                "arrive_radius > 0"
            )


def arrival_steps(positions: torch.Tensor, targets: torch.Tensor, radius: float) -> torch.Tensor:
    """(N, H, 2) planned positions, (N, 2) targets -> (N,) 1-based index of the first frame
    within `radius` of the target; H + 1 where the plan never gets there."""
    inside = torch.linalg.vector_norm(positions - targets[:, None], dim=-1) <= radius
    h = positions.shape[1]
    return torch.where(inside.any(dim=1), inside.float().argmax(dim=1) + 1, h + 1)


def until(plan: Plan, steps: torch.Tensor) -> Plan:
    """The plan with its mask cut after `steps` frames ((N,) long)."""
    frame = torch.arange(plan.mask.shape[1], device=plan.mask.device)
    return replace(plan, mask=plan.mask * (frame[None] < steps[:, None]).to(plan.mask))


def costs_to_go(link: np.ndarray, to_goal: np.ndarray) -> np.ndarray:
    """Bellman-Ford: link (M, M) costs (inf: no link), to_goal (B, M) -> (B, M) cheapest cost
    from each landmark to each goal over any chain of links."""
    d = to_goal.copy()
    for _ in range(len(link)):
        nxt = np.minimum(d, (link[None] + d[:, None, :]).min(axis=2))
        if np.array_equal(nxt, d):
            break
        d = nxt
    return d


class RouteSearch:
    """`choose(obs, goals, objective, seeds) -> (B, 2)` the first target of the best route.

    model, normalizer: the policy's; landmarks: (M, 2) candidate subgoals in the env's frame.
    The objective must score any batch of plans, one score per plan.
    """

    def __init__(self, model, normalizer, landmarks, config: RouteConfig, planner_config):
        config.validate()
        self.config = config
        self.landmarks = torch.as_tensor(np.asarray(landmarks, dtype=np.float32))  # (M, 2)
        leg_config = replace(
            planner_config,
            sampling_steps=config.sampling_steps,
            uncertainty=config.uncertainty,
            goal_weight=config.goal_weight,
            guidance_scale=0.0,
            mcg_samples=1,
            horizon_tokens=0,
        )
        self.legs = DiffusionForcingPlanner(model, normalizer, leg_config)
        self.horizon = self.legs.max_tokens * self.legs.frame_stack
        self.searches = 0  # how many searches ran (for speed reports)
        self._roadmap: tuple | None = None  # (src, dst, Plan, arrival) of the links
        self._goal_links: dict = {}  # goal -> (Plan, arrival) from every landmark

    def _plan(self, starts: torch.Tensor, targets: torch.Tensor, seeds: list) -> Plan:
        """Cold plans from (N, 4) states to (N, 2) targets, `horizon` frames each."""
        self.legs.reset(len(starts), seeds)
        return self.legs.sample(starts.numpy(), self.horizon, goal=targets)

    def _at_rest(self, points: torch.Tensor) -> torch.Tensor:
        return torch.cat([points, torch.zeros_like(points)], dim=1)

    def roadmap(self):
        """Links from every landmark to its nearest ones, planned once."""
        if self._roadmap is None:
            m, k = len(self.landmarks), min(self.config.neighbours, len(self.landmarks) - 1)
            dist = torch.cdist(self.landmarks, self.landmarks)
            dist.fill_diagonal_(float("inf"))
            src = torch.arange(m).repeat_interleave(k)
            dst = dist.topk(k, largest=False).indices.reshape(-1)
            seeds = [self.config.seed * 100003 + i for i in range(len(src))]
            plan = self._plan(self._at_rest(self.landmarks[src]), self.landmarks[dst], seeds)
            arrival = arrival_steps(plan.positions, self.landmarks[dst], self.config.arrive_radius)
            self._roadmap = (src, dst, plan, arrival)
        return self._roadmap

    def goal_links(self, goal: np.ndarray):
        """Plans from every landmark straight to `goal` (2,), sampled once per goal."""
        key = tuple(np.round(goal, 4))
        if key not in self._goal_links:
            if len(self._goal_links) > 256:
                self._goal_links.clear()
            m = len(self.landmarks)
            target = torch.as_tensor(goal, dtype=torch.float32).expand(m, 2)
            seeds = [self.config.seed * 100003 + 50021 + i for i in range(m)]
            plan = self._plan(self._at_rest(self.landmarks), target, seeds)
            self._goal_links[key] = (
                plan,
                arrival_steps(plan.positions, target, self.config.arrive_radius),
            )
        return self._goal_links[key]

    def leg_cost(self, plan: Plan, arrival: torch.Tensor, objective) -> torch.Tensor:
        """(N,) steps to arrive minus the objective up to arrival; inf where it never does."""
        cost = arrival.double() - objective(until(plan, arrival)).double()
        return torch.where(arrival <= self.horizon, cost, torch.full_like(cost, float("inf")))

    def choose(self, obs: np.ndarray, goals: np.ndarray, objective, seeds: list) -> np.ndarray:
        """obs (B, 4), goals (B, 2), seeds (B,) int or None -> (B, 2) first targets."""
        self.searches += 1
        b, m = len(obs), len(self.landmarks)
        with torch.no_grad():
            src, dst, link_plan, link_arrival = self.roadmap()
            link = torch.full((m, m), float("inf"), dtype=torch.float64)
            link[src, dst] = self.leg_cost(link_plan, link_arrival, objective)
            to_goal = torch.stack([self.leg_cost(*self.goal_links(g), objective) for g in goals])
            go = costs_to_go(link.numpy(), to_goal.numpy())  # (B, M)
            # An env standing on a landmark (it has just reached its subgoal) needs no new
            # plans: the roadmap's links from that landmark are its first legs, and the best
            # of them continues the cheapest chain (its cost to go is Bellman-Ford's minimum).
            goal_t = torch.as_tensor(goals, dtype=torch.float32)
            cands = torch.cat([self.landmarks.expand(b, m, 2), goal_t[:, None]], dim=1)
            xy = torch.as_tensor(obs[:, :2], dtype=torch.float32)
            here = torch.cdist(xy, self.landmarks).min(dim=1)
            on_landmark = (here.values <= self.config.arrive_radius).numpy()
            first = np.full((b, m + 1), np.inf)
            for k in np.flatnonzero(on_landmark):
                at = int(here.indices[k])
                first[k, :m] = link[at].numpy()
                first[k, m] = float(to_goal[k, at])
            fresh = np.flatnonzero(~on_landmark)
            if len(fresh):
                fresh_seeds = [seeds[k] for k in fresh]
                first[fresh] = self._first_legs(obs[fresh], cands[fresh], objective, fresh_seeds)
        go_all = np.concatenate([go, np.zeros((b, 1))], axis=1)  # the goal: nothing left to go
        total = first + go_all
        best = total.min(axis=1, keepdims=True)
        # Among near-best targets, the one with the least left to go (the farthest along).
        near = np.isfinite(total) & (total <= best + self.config.slack)
        pick = np.where(near, go_all, np.inf).argmin(axis=1)
        pick = np.where(np.isfinite(best[:, 0]), pick, m)  # nothing arrives: aim at the goal
        return cands[torch.arange(b), torch.as_tensor(pick)].numpy().astype(np.float64)

    def _first_legs(self, obs, cands, objective, seeds) -> np.ndarray:
        """(N, M + 1) costs of plans from each state (N, 4) to its candidates (N, M + 1, 2)."""
        n, c = cands.shape[:2]
        flat = cands.reshape(-1, 2)
        starts = torch.as_tensor(obs, dtype=torch.float32).repeat_interleave(c, dim=0)
        # Candidate j of env k plans with seed s_k * 7919 + j.
        leg_seeds = [None if s is None else int(s) * 7919 + j for s in seeds for j in range(c)]
        plan = self._plan(starts, flat, leg_seeds)
        arrival = arrival_steps(plan.positions, flat, self.config.arrive_radius)
        return self.leg_cost(plan, arrival, objective).view(n, c).numpy()


def landmarks_from_goals(goals: np.ndarray, radius: float = 0.5) -> np.ndarray:
    """The distinct goals a dataset drove to, clustered: (N, 2) per-step goal labels -> (M, 2).

    Leader clustering in order of first appearance: a goal within `radius` of a cluster's first
    member joins it; each landmark is its cluster's mean. Deterministic for a given dataset.
    """
    distinct = goals[np.r_[True, np.any(np.diff(goals, axis=0) != 0, axis=1)]]
    leaders: list[np.ndarray] = []
    members: list[list[np.ndarray]] = []
    for g in distinct:
        if leaders:
            d = np.linalg.norm(np.asarray(leaders) - g, axis=1)
            k = int(d.argmin())
            if d[k] <= radius:
                members[k].append(g)
                continue
        leaders.append(g)
        members.append([g])
    return np.array([np.mean(m, axis=0) for m in members], dtype=np.float64)


def landmarks_meta(goals: np.ndarray) -> list[list[float]]:
    """`landmarks_from_goals` as the checkpoint JSON stores them (rounded to 1e-4)."""
    return [[round(float(v), 4) for v in p] for p in landmarks_from_goals(goals)]
