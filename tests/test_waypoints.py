"""Hindsight goals and the waypoint graph: what a PointMaze model learns from goal-free data.

Real OGBench PointMaze (medium) navigate data, generated here by the same procedure as
`dfplan data`; a few episodes only.
"""

import json

import numpy as np
import pytest
import torch
from helpers import dfplan

from dfplan.envs import get_task
from dfplan.envs.pointmaze_data import PointMazeDataConfig, generate_episodes
from dfplan.policies.factory import make_policy
from dfplan.relabel import segment_goals
from dfplan.waypoints import WaypointConfig, WaypointGraph

MEDIUM = "pointmaze-medium-navigate"
MAX_STEP = 0.2 * np.sqrt(2)  # the farthest one action moves the point


@pytest.fixture(scope="module")
def medium_data():
    """(positions (N, 2), episode bounds (E, 2)) of 12 navigate episodes of 1,000 steps."""
    task = get_task(MEDIUM)
    config = PointMazeDataConfig(MEDIUM, episodes=12, episode_steps=1000, seed=3)
    episodes = generate_episodes(task, config, 12, progress=False)
    positions = np.concatenate([ep["observations"][:-1] for ep in episodes])
    ends = np.cumsum([len(ep["actions"]) for ep in episodes])
    return positions, np.stack([np.r_[0, ends[:-1]], ends], axis=1)


def test_segment_goals_are_states_of_the_same_episodes_future():
    positions = np.arange(40, dtype=np.float32)[:, None].repeat(2, axis=1)
    bounds = np.array([[0, 25], [25, 40]])
    goals = segment_goals(positions, bounds, np.random.default_rng(0), (3, 7))
    rows = goals[:, 0].astype(int)  # positions hold their own row index
    for start, end in bounds:
        own = rows[start:end]
        assert np.all((own >= start) & (own < end))  # the same episode
        t = np.arange(start, end)
        assert np.all((own > t) | (t == end - 1))  # its future (the last row: itself)
        firsts = start + np.flatnonzero(np.diff(own)) + 1  # where a new segment starts
        lengths = np.diff(np.r_[start, firsts])
        assert np.all((lengths >= 3) & (lengths <= 7))
        # a segment heads for the state at its end, where the next segment starts
        np.testing.assert_array_equal(rows[firsts - 1], firsts)
    with pytest.raises(ValueError):
        segment_goals(positions, bounds, np.random.default_rng(0), (0, 4))


def test_graph_edges_take_at_least_the_steps_the_point_needs(medium_data):
    positions, bounds = medium_data
    config = WaypointConfig(spacing=1.0, reach=0.35, max_lag=20, lookahead=8)
    graph = WaypointGraph.build(positions, bounds, config)
    nodes = graph.nodes.numpy()
    # every node is a visited state
    assert (
        np.min(np.linalg.norm(positions[:, None] - nodes[None, :50], axis=2), axis=0).max() < 1e-6
    )
    coo = graph.steps.tocoo()
    assert coo.nnz > len(nodes)
    gap = np.linalg.norm(nodes[coo.row] - nodes[coo.col], axis=1)
    assert np.all(coo.data * MAX_STEP >= gap - 1e-5)  # no edge faster than the point can move
    assert coo.data.min() >= 1 and np.all(coo.row != coo.col)
    again = WaypointGraph.from_meta(graph.to_meta())
    assert abs(again.steps - graph.steps).max() < 1e-3


def test_following_the_waypoints_crosses_the_maze(medium_data):
    """Heading straight for the waypoint 8 steps along the route reaches every one of the five
    evaluation goals: the graph's routes go round the walls (no map was read)."""
    positions, bounds = medium_data
    graph = WaypointGraph.build(positions, bounds, WaypointConfig(max_lag=12, lookahead=8))
    env = get_task(MEDIUM).make_env()
    for task_id in range(1, 6):
        obs, info = env.reset(seed=task_id, options={"task_id": task_id})
        for _ in range(1000):
            target = graph.targets(obs[None], info["goal"][None])[0]
            step = target - obs
            obs, _, terminated, _, step_info = env.step(step / (np.linalg.norm(step) + 1e-6))
            if terminated:
                break
        assert step_info["success"], f"task {task_id}: stuck at {obs}"


def test_near_goal_the_target_is_the_goal_itself(medium_data):
    positions, bounds = medium_data
    graph = WaypointGraph.build(positions, bounds, WaypointConfig(lookahead=60))
    here = positions[100][None]
    np.testing.assert_array_equal(graph.targets(here, here + 0.5), here + 0.5)


def test_hindsight_training_ships_the_graph_and_the_policy_uses_it():
    r = dfplan("data", MEDIUM, "--episodes", "4", "--episode-steps", "400")
    assert r.returncode == 0, r.stderr
    r = dfplan("train", MEDIUM, "--steps", "2", "--batch-size", "4", "--no-progress")
    assert r.returncode == 0, r.stderr
    stem = r.stdout.split("checkpoint: ")[1].split(".safetensors")[0]
    meta = json.loads(open(stem + ".json").read())
    assert "waypoints" in meta and "landmarks" not in meta  # no goal labels: no landmarks
    assert meta["train_config"]["hindsight_segment"] == [20, 200]
    policy = make_policy("df", MEDIUM, stem)
    env = get_task(MEDIUM).make_env()
    obs, info = env.reset(seed=0, options={"task_id": 1})
    policy.reset(seed=0)
    torch.manual_seed(0)
    action = policy.act(obs, info)
    assert action.shape == (2,) and np.all(np.isfinite(action))
    far = policy.waypoints.targets(obs[None], info["goal"][None])[0]
    assert not np.array_equal(far, info["goal"])  # the goal is far: a waypoint is planned for
