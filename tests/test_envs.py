import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.envs import TASKS

ENV_IDS = [t.env_id for t in TASKS.values()]


@pytest.mark.filterwarnings("ignore:.*Box observation space.*")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id):
    env = gym.make(env_id, render_mode="rgb_array", renderer="matplotlib")
    check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_reset_is_deterministic_and_info_complete(env_id):
    a, b = gym.make(env_id), gym.make(env_id)
    oa, ia = a.reset(seed=7)
    ob, ib = b.reset(seed=7)
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(ia["goal"], ib["goal"])
    assert set(ia) >= {"goal", "success"}
    actions = np.random.default_rng(0).uniform(-1, 1, size=(50, 2))
    for act in actions:
        sa, sb = a.step(act), b.step(act)
        np.testing.assert_array_equal(sa[0], sb[0])
        assert set(sa[4]) >= {"goal", "success"}


def test_fixed_goal_and_multi_goal():
    fixed = gym.make("dfplan/maze2d-large-v1")
    goals = {tuple(fixed.reset(seed=s)[1]["goal"]) for s in range(5)}
    assert goals == {(7.0, 9.0)}
    multi = gym.make("dfplan/multi2d-large-v1")
    goals = {tuple(multi.reset(seed=s)[1]["goal"]) for s in range(5)}
    assert len(goals) == 5


@pytest.mark.parametrize(
    "name,limit", [("maze2d-umaze", 300), ("maze2d-medium", 600), ("maze2d-large", 800)]
)
def test_time_limit_and_never_terminates(name, limit):
    env = gym.make(f"dfplan/{name}-v1")
    env.reset(seed=0)
    for t in range(1, limit + 1):
        _, _, terminated, truncated, _ = env.step(np.zeros(2))
        assert not terminated
        assert truncated == (t == limit)


def test_sparse_reward_and_success_match_distance():
    env = gym.make("dfplan/maze2d-umaze-v1")
    env.reset(seed=0)
    env.unwrapped.set_state(np.array([1.3, 1.2]), np.zeros(2))
    _, reward, _, _, info = env.step(np.zeros(2))
    assert reward == 1.0 and info["success"]
    env.unwrapped.set_state(np.array([3.0, 3.0]), np.zeros(2))
    _, reward, _, _, info = env.step(np.zeros(2))
    assert reward == 0.0 and not info["success"]


def test_goal_option_and_normalized_score():
    env = gym.make("dfplan/maze2d-umaze-v1")
    _, info = env.reset(seed=0, options={"goal": (3.0, 1.0)})
    np.testing.assert_array_equal(info["goal"], [3.0, 1.0])
    u = env.unwrapped
    assert u.normalized_score(23.85) == pytest.approx(0.0)
    assert u.normalized_score(161.86) == pytest.approx(100.0)


def test_matplotlib_render_shows_agent_and_goal():
    env = gym.make("dfplan/maze2d-umaze-v1", render_mode="rgb_array", renderer="matplotlib")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    red = (img[..., 0] > 200) & (img[..., 1] < 150)
    blue = (img[..., 2] > 180) & (img[..., 0] < 80)
    assert red.any() and blue.any()


def test_velocity_is_clipped_before_each_step():
    env = gym.make("dfplan/maze2d-large-v1")
    env.reset(seed=0)
    env.unwrapped.set_state(np.array([3.0, 3.0]), np.array([50.0, -50.0]))
    obs, *_ = env.step(np.zeros(2))
    # Clipped before the step: one step of 0.01 s moves at most 5 * 0.01 per axis, not 0.5.
    assert np.all(np.abs(obs[:2] - 3.0) <= 0.05 + 1e-9)
    assert np.all(np.abs(obs[2:]) <= 5.0)


def test_walls_hold_under_long_random_pushes():
    env = gym.make("dfplan/maze2d-medium-v1", max_episode_steps=5000)
    layout = env.unwrapped.layout
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    action = rng.uniform(-1, 1, 2)
    for t in range(5000):
        if t % 25 == 0:  # hold each push long enough to drive into walls
            action = rng.choice([-1.0, 1.0], size=2)
        obs, *_ = env.step(action)
        assert np.all(np.isfinite(obs))
        cell = (int(np.floor(obs[0] + 0.7)), int(np.floor(obs[1] + 0.7)))
        assert layout[cell] != "#", f"agent at {obs[:2]} is inside wall cell {cell}"
