"""Plan-time objectives: keep-out scenarios, composable objectives, route search, the policy API.

Behaviour and correctness on the real envs and the shipped large checkpoint; the scores these
reach are measured by `dfplan bench TASK-keepout` (docs/results.md), not here.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import TINY_NORMALIZER, assert_vector_batch_equals_singles, save_tiny_checkpoint

import dfplan  # noqa: F401  registers the envs
from dfplan.envs import get_task
from dfplan.guidance import Effort, GoalReward, KeepOut, Plan, SumReward, check_objective
from dfplan.model import DiffusionForcingModel, ModelConfig
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy
from dfplan.routes import arrival_steps, costs_to_go, landmarks_from_goals


# -- the scenarios ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["maze2d-large-keepout", "maze2d-medium-keepout", "multi2d-large-keepout"]
)
def test_keepout_env_reports_cost_and_zones_and_never_starts_inside(name):
    task = get_task(name)
    env = gym.make(task.env_id)
    zones = np.array(task.zones)
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        np.testing.assert_array_equal(info["zones"], zones)
        for point in (obs[:2], info["goal"]):
            assert np.all(np.linalg.norm(point - zones[:, :2], axis=1) > zones[:, 2] + 0.1)
        assert info["cost"] == 0.0
    # Put the ball at the zone's centre, then just outside its edge.
    x, y, r = zones[0]
    env.unwrapped.set_state(np.array([x, y]), np.zeros(2))
    _, _, _, _, info = env.step(np.zeros(2))
    assert info["cost"] == 1.0
    env.unwrapped.set_state(np.array([x + r + 0.05, y]), np.zeros(2))
    _, _, _, _, info = env.step(np.zeros(2))
    assert info["cost"] == 0.0
    assert get_task(name.removesuffix("-keepout")).max_episode_steps == task.max_episode_steps


def test_plain_tasks_report_no_cost():
    env = gym.make("dfplan/maze2d-large-v1")
    _, info = env.reset(seed=0)
    assert info["cost"] == 0.0 and info["zones"].shape == (0, 3)


@pytest.mark.parametrize(
    "zones,message",
    [
        (((30.0, 2.0, 0.5),), "outside the maze"),
        (((2.0, 2.0, -1.0),), "radius > 0"),
        (((2.0, float("nan"), 0.5),), "not finite"),
    ],
)
def test_bad_zones_are_refused(zones, message):
    with pytest.raises(ValueError, match=message):
        gym.make("dfplan/maze2d-large-v1", zones=zones)


def test_zone_aware_expert_avoids_the_zone_and_the_plain_one_does_not():
    from dfplan.benchmarks.harness import run_episodes
    from dfplan.policies import WaypointExpert

    task = get_task("maze2d-large-keepout")
    seeds = [2001, 2007]  # starts in the top-left rooms: the shortest route crosses the zone
    plain, _ = run_episodes(task, WaypointExpert(task.name), 2, seed_list=seeds, progress=False)
    aware, _ = run_episodes(
        task, WaypointExpert(task.name, zones=task.zones), 2, seed_list=seeds, progress=False
    )
    assert all(r.zone_steps > 0 for r in plain)
    assert all(r.zone_steps == 0 and r.success for r in aware)


# -- objectives -------------------------------------------------------------------------------
def plan_through(points) -> Plan:
    pos = torch.tensor(points, dtype=torch.float32)[None]  # (1, H, 2)
    return Plan(pos, torch.zeros_like(pos), torch.ones_like(pos) * 0.5, torch.ones(1, len(points)))


def test_keepout_costs_frames_inside_and_near_the_edge():
    keep = KeepOut([[0.0, 0.0, 1.0]], margin=0.2)
    assert keep(plan_through([[3.0, 0.0], [2.0, 0.0]])).item() == 0.0  # never near
    assert keep(plan_through([[1.1, 0.0]])).item() == pytest.approx(-0.5)  # in the margin band
    assert keep(plan_through([[0.5, 0.0]])).item() == pytest.approx(-3.5)  # inside: >= 1
    # The gradient points away from the centre before the plan touches the zone.
    pos = torch.tensor([[[1.1, 0.0]]], requires_grad=True)
    KeepOut([[0.0, 0.0, 1.0]])(Plan(pos, pos * 0, pos * 0, torch.ones(1, 1))).backward()
    assert pos.grad[0, 0, 0] > 0


def test_objectives_compose_with_weights():
    plan = plan_through([[0.5, 0.0], [3.0, 0.0]])
    keep, effort = KeepOut([[0.0, 0.0, 1.0]]), Effort()
    combined = keep * 10 + 0.5 * effort
    expected = 10 * keep(plan) + 0.5 * effort(plan)
    torch.testing.assert_close(combined(plan), expected)
    assert isinstance(combined, SumReward) and len(combined.terms) == 2
    with pytest.raises(ValueError, match="finite"):
        keep * float("nan")


def test_check_objective_names_the_mistake():
    check_objective(KeepOut([[1.0, 1.0, 0.5]]) + Effort())
    with pytest.raises(ValueError, match="one score per plan"):
        check_objective(lambda plan: plan.positions.sum(-1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_objective(lambda plan: plan.positions[:, 0, 0] * float("inf"))
    with pytest.raises(ValueError, match="must be callable"):
        check_objective(3.0)


def tiny_planner(**overrides) -> DiffusionForcingPlanner:
    torch.manual_seed(0)
    model = DiffusionForcingModel(
        ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=4, frame_stack=5)
    )
    return DiffusionForcingPlanner(
        model, TINY_NORMALIZER, PlannerConfig(sampling_steps=4, **overrides)
    )


def test_an_objective_reaches_the_plan():
    """Fixed seed: guided by KeepOut, the sampled plan spends less of itself in the zone."""
    obs = np.array([[2.0, 2.0, 0.0, 0.0]])
    zone = KeepOut([[2.5, 2.5, 1.0]])
    costs = {}
    for scale in (0.0, 3.0):
        planner = tiny_planner(guidance_scale=scale)
        planner.reset(1, seeds=[0])
        plan = planner.sample(obs, 20, reward=zone)
        costs[scale] = -zone(plan).item()
    assert costs[3.0] < 0.8 * costs[0.0]


def test_effort_acts_on_the_executed_action_and_keepout_does_not():
    """Guidance sees states only, so Effort leaves the plan as it is; the action step then
    shrinks the executed action by the gradient flow of -w |a|^2: exp(-2 w T) for time T (in 8
    explicit steps: (1 - 2 w T / 8)^8). KeepOut has no action term: the step changes nothing."""
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.0, 3.0, 0.5, -0.5]])

    def decide(reward, **config):
        planner = tiny_planner(guidance_scale=0.3, **config)
        planner.reset(2, seeds=[0, 1])
        first = planner.act(obs, reward, steps_left=20)
        return first, planner.tokens

    plain, plain_plan = decide(None)
    stepped, effort_plan = decide(Effort() * 0.5, action_step=1.0)
    assert torch.equal(effort_plan, plain_plan)
    inside = np.abs(plain) < 1.0  # not clamped
    assert inside.sum() >= 2
    np.testing.assert_allclose(stepped[inside], plain[inside] * (1 - 2 * 0.5 / 8) ** 8, rtol=1e-5)
    zone = KeepOut([[2.5, 2.5, 1.0]])
    assert np.array_equal(decide(zone, action_step=1.0)[0], decide(zone)[0])


# -- route search -----------------------------------------------------------------------------
def test_route_search_pieces():
    pos = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], [[0.0, 0.0]] * 3])
    arrived = arrival_steps(pos, torch.tensor([[2.0, 0.2], [5.0, 5.0]]), 0.5)
    assert arrived.tolist() == [3, 4]  # 1-based; never = H + 1
    inf = np.inf
    link = np.array([[inf, 1.0, inf], [inf, inf, 1.0], [inf, inf, inf]])
    to_goal = np.array([[100.0, 50.0, 2.0]])
    np.testing.assert_allclose(costs_to_go(link, to_goal), [[4.0, 3.0, 2.0]])
    goals = np.array([[1.0, 1.0]] * 3 + [[1.05, 0.95]] * 2 + [[3.0, 1.0]] * 4)
    np.testing.assert_allclose(landmarks_from_goals(goals), [[1.025, 0.975], [3.0, 1.0]])


def test_shipped_large_planner_routes_around_a_zone_the_goal_route_crosses():
    """From the top-left rooms the goal's shortest route runs through cell (4, 6); with the zone
    as the objective the first target lies on the detour (north and east), not at the goal."""
    task = get_task("maze2d-large-keepout")
    policy = DiffusionForcingPolicy.from_pretrained(
        task.name, device="cpu", objective=KeepOut(task.zones) * 10
    )
    plain = DiffusionForcingPolicy.from_pretrained(task.name, device="cpu")
    obs = np.array([[3.0, 4.0, 0.0, 0.0]])
    goal = np.array([[7.0, 9.0]])
    target = policy.routes.choose(obs, goal, policy.objective, [0])[0]
    assert not np.allclose(target, goal[0])
    assert target[0] < 3.5  # stays in rows 1..3 until the detour's east end
    assert plain.routes is not None and plain.objective is None
    # Arrived at that subgoal (a landmark), the next target comes from the roadmap's links
    # out of it: no plan is sampled, and the route goes on to another target.
    planned = []
    sample = policy.routes._plan
    policy.routes._plan = lambda *a: planned.append(1) or sample(*a)
    here = np.array([[target[0], target[1], 0.0, 0.0]])
    following = policy.routes.choose(here, goal, policy.objective, [1])[0]
    assert not planned
    assert not np.allclose(following, target)


def test_vector_batch_with_an_objective_equals_singles(tmp_path):
    stem = save_tiny_checkpoint(tmp_path / "tiny")
    import json

    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["landmarks"] = [[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0]]
    stem.with_suffix(".json").write_text(json.dumps(meta))
    objective = KeepOut([[2.0, 2.0, 0.5]]) * 10 + Effort() * 0.1

    def make():
        return DiffusionForcingPolicy.from_pretrained(
            "multi2d-umaze", stem, device="cpu", objective=objective
        )

    assert make().routes is not None
    assert_vector_batch_equals_singles(make, n=3, steps=4)


def test_policy_refuses_a_bad_objective_in_one_line():
    from dfplan.errors import UserError

    with pytest.raises(UserError, match="one score per plan"):
        DiffusionForcingPolicy.from_pretrained(
            "maze2d-umaze", device="cpu", objective=lambda plan: plan.positions
        )


def test_goal_reward_still_pulls_when_the_model_is_not_told_the_goal():
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", device="cpu", goal_weight=0.0)
    reward = policy._reward(np.array([[1.0, 1.0]]))
    assert isinstance(reward, GoalReward)
    policy.set_objective(Effort())
    assert isinstance(policy._reward(np.array([[1.0, 1.0]])), SumReward)
    told = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", device="cpu", guidance_scale=0.3)
    assert told._reward(np.array([[1.0, 1.0]])) is None  # told the goal, nothing to add
    effort = Effort()
    told.set_objective(effort)
    assert told._reward(np.array([[1.0, 1.0]])) is effort
