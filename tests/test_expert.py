import gymnasium as gym
import numpy as np
import pytest

import dfplan  # noqa: F401
from dfplan.envs.layouts import LARGE, parse_layout
from dfplan.errors import UserError
from dfplan.policies import WaypointExpert
from dfplan.policies.expert import shortest_path


def test_shortest_path_is_connected_and_shortest():
    layout = parse_layout(LARGE)
    path = shortest_path(layout, (1, 1), (7, 9))
    cells = [(1, 1), *path]
    for a, b in zip(cells, cells[1:], strict=False):
        assert abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1
        assert layout[b] != "#"
    assert path[-1] == (7, 9)
    # Manhattan distance is a lower bound; the maze forces a detour.
    assert len(path) >= 6 + 8


@pytest.mark.parametrize("name", ["maze2d-umaze", "multi2d-medium"])
def test_expert_reaches_goal(name):
    env = gym.make(f"dfplan/{name}-v1")
    expert = WaypointExpert(name)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        expert.reset(seed=seed)
        successes = 0
        for _ in range(env.spec.max_episode_steps):
            obs, _, _, _, info = env.step(expert.act(obs, info))
            successes += info["success"]
        assert successes > 50, f"seed {seed}: only {successes} steps at the goal"


def test_batched_expert_drives_a_vector_env():
    envs = gym.make_vec("dfplan/multi2d-umaze-v1", num_envs=4, vectorization_mode="sync")
    obs, info = envs.reset(seed=0)
    expert = WaypointExpert(envs)
    expert.reset(seed=0)
    reached = np.zeros(4, bool)
    for _ in range(299):  # one step short of the time limit: no autoreset inside the loop
        actions = expert.act(obs, info)
        assert actions.shape == (4, 2) and np.all(np.abs(actions) <= 1.0)
        obs, _, _, _, info = envs.step(actions)
        reached |= info["success"]
    assert reached.all()


def test_expert_needs_a_goal_and_a_known_task():
    with pytest.raises(UserError, match="unknown task"):
        WaypointExpert("maze2d-tiny")
    expert = WaypointExpert("maze2d-umaze")
    expert.reset()
    with pytest.raises(ValueError, match="needs a goal"):
        expert.act(np.zeros(4))


def test_greedy_stays_at_an_open_goal_and_is_stopped_by_a_wall():
    # umaze: goal (1, 1); (1, 3) sees it along an open corridor, (3, 1) is behind the wall.
    from dfplan.policies import GreedyPolicy

    env = gym.make("dfplan/maze2d-umaze-v1").unwrapped
    greedy = GreedyPolicy()
    at_goal = {}
    for start in ((1.0, 3.0), (3.0, 1.0)):
        obs, info = env.reset(seed=0)
        env.set_state(np.array(start), np.zeros(2))
        obs = np.array([*start, 0.0, 0.0])
        greedy.reset(goal=np.array([1.0, 1.0]))
        steps = 0
        for _ in range(300):
            obs, _, _, _, info = env.step(greedy.act(obs))
            steps += info["success"]
        at_goal[start] = steps
    assert at_goal[(1.0, 3.0)] > 250  # arrives within ~40 steps and stays
    assert at_goal[(3.0, 1.0)] == 0  # presses into the wall between it and the goal
    actions = greedy.act(np.zeros((3, 4)), {"goal": np.array([1.0, 1.0])})
    assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1.0)
