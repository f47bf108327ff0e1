"""DiffusionForcingPolicy in real gymnasium loops, with a small checkpoint saved here."""

import gymnasium as gym
import numpy as np
import pytest
from helpers import assert_vector_batch_equals_singles, save_tiny_checkpoint, trajectories

import dfplan  # noqa: F401
from dfplan.envs import get_task
from dfplan.errors import UserError
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "tiny")


def test_vector_env_batch_equals_single_policies(tiny_checkpoint):
    assert_vector_batch_equals_singles(
        lambda: DiffusionForcingPolicy.from_pretrained("multi2d-umaze", tiny_checkpoint, "cpu"),
        n=8,
        steps=3,
    )


def test_policy_runs_a_plain_gymnasium_loop_and_checks_inputs(tiny_checkpoint):
    env = gym.make("dfplan/maze2d-umaze-v1")
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", tiny_checkpoint, "cpu")
    obs, info = env.reset(seed=0)
    policy.reset(seed=0)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
    with pytest.raises(ValueError, match="NaN"):
        policy.act(np.array([np.nan, 1, 0, 0]), info)
    policy.reset()
    with pytest.raises(ValueError, match="needs a goal"):
        policy.act(obs)


def test_checkpoint_of_another_maze_is_refused(tiny_checkpoint):
    with pytest.raises(UserError, match="not the large maze"):
        DiffusionForcingPolicy.from_pretrained("maze2d-large", tiny_checkpoint, "cpu")


def test_missing_shipped_checkpoint_says_how_to_train(monkeypatch, tmp_path):
    from dfplan import checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(UserError, match="dfplan train maze2d-medium"):
        DiffusionForcingPolicy.from_pretrained("multi2d-medium")


def test_model_probes_on_a_tiny_model(tiny_checkpoint):
    from dfplan.envs import get_task
    from dfplan.envs.layouts import UMAZE, parse_layout
    from lab.model_probes import probe, wall_fraction

    layout = parse_layout(UMAZE)
    # (1, 1) free, (2, 1) wall, (-3, 0) outside the maze.
    assert wall_fraction(layout, np.array([[1.0, 1.0], [2.0, 1.0], [-3.0, 0.0], [3.0, 3.0]])) == 0.5
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", tiny_checkpoint, "cpu")
    result = probe(policy.planner, get_task("maze2d-umaze"), samples=3, batch=2)
    assert 0.0 <= result["wall_fraction"] <= 1.0
    assert result["horizon"] == 20 and result["dyn_error_at_100"] is None
    assert np.isfinite(result["dyn_error_mean"]) and result["dyn_error_mean"] > 0
    assert np.isfinite(result["start_offset"]) and result["start_offset"] >= 0


def test_replay_floor_replays_rollouts_exactly_and_grows_with_action_noise():
    """Two random-action umaze rollouts of 60 steps, stored as float32 like a dataset: their own
    actions replay them (error ~0) and noisy ones do not. With a 59-step horizon each episode
    holds exactly one window; one that crossed into the other episode would be far off."""
    from dfplan.envs import get_task
    from lab.model_probes import replay_floor

    task = get_task("maze2d-umaze")
    env = gym.make(task.env_id)
    rng = np.random.default_rng(0)
    observations, actions = [], []
    for seed in (3, 4):
        obs, _ = env.reset(seed=seed)
        for _ in range(60):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            observations.append(obs)
            actions.append(action)
            obs, *_ = env.step(action)
    data = trajectories(np.array(observations, np.float32), np.array(actions))
    data.timeouts[59] = True
    floor = replay_floor(task, data, sigmas=(0.0, 0.5), windows=6, horizon=59)
    assert floor["replay_floor_at_59_sigma_0.0"] < 1e-3
    assert floor["replay_floor_at_59_sigma_0.5"] > 0.05
    with pytest.raises(ValueError, match="longer than 60"):
        replay_floor(task, data, horizon=60)


def test_denoise_errors_measure_the_first_frame(tiny_checkpoint):
    """A model that returns the true clean tokens scores zero; the tiny model does not."""
    from dfplan.windows import WindowSampler
    from lab.model_probes import denoise_errors

    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", tiny_checkpoint, "cpu")
    model, normalizer = policy.planner.model, policy.planner.normalizer
    rng = np.random.default_rng(0)
    data = trajectories(
        rng.normal(2, 1, (200, 4)).astype(np.float32),
        rng.uniform(-1, 1, (200, 2)).astype(np.float32),
    )
    errors = denoise_errors(model, normalizer, data, levels=(1000, 50), windows=8)
    assert set(errors) == {"first_frame_error_at_level_1000", "first_frame_error_at_level_50"}
    assert all(np.isfinite(v) and v > 0 for v in errors.values())

    class Oracle:  # knows the clean windows denoise_errors draws (same sampler seed)
        config, abar = model.config, model.abar

        def predict_x0(self, x, levels, first_obs, goal=None):
            return clean

    cfg = model.config
    sampler = WindowSampler(data, cfg.max_tokens * cfg.frame_stack, cfg.frame_stack, normalizer, 0)
    clean = sampler.sample(8)[1]
    errors = denoise_errors(Oracle(), normalizer, data, levels=(1000,), windows=8)
    assert errors["first_frame_error_at_level_1000"] < 1e-6


def test_every_shipped_checkpoint_loads_and_acts():
    """The shipped checkpoints are package data: they load from the installed package."""
    from dfplan.checkpoint import shipped_checkpoints

    stems = shipped_checkpoints("df")  # Diffuser ones: test_diffuser.py
    assert stems, "no checkpoint ships with the package"
    for stem in stems:
        task = stem.name.removesuffix("-paper")  # the df-paper model of a maze
        policy = DiffusionForcingPolicy.from_pretrained(task, stem, device="cpu")
        spec = get_task(task)
        obs, info = spec.reset(spec.make_env(), seed=0)
        policy.reset(seed=0)
        action = policy.act(obs, info)
        assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
