"""Goal conditioning end to end on tiny models: the model reads the goal, training feeds it
(with dropout), the planner and the policy pass it on, classifier-free guidance combines the
two passes, and old unconditional checkpoints still plan."""

import json
import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import TINY_NORMALIZER, assert_vector_batch_equals_singles, save_tiny_checkpoint
from test_train import expert_trajectories, tiny_config

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.checkpoint import load_checkpoint
from dfplan.loss import diffusion_loss
from dfplan.model import DiffusionForcingModel, ModelConfig, offset_features
from dfplan.planner import Condition, DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy
from dfplan.train import lr_at, train
from dfplan.windows import WindowSampler, dataset_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
OBS = np.array([[1.0, 1.0, 0.0, 0.0], [3.0, 2.5, 0.2, -0.1]])


def tiny_model(seed=0, **kw) -> DiffusionForcingModel:
    torch.manual_seed(seed)
    model = DiffusionForcingModel(
        ModelConfig(n_layer=2, n_head=2, n_embd=32, max_tokens=6, frame_stack=4, **kw)
    )
    with torch.no_grad():  # a trained model's "no goal" embedding is not zero
        if model.config.goal_dim:
            model.no_goal.normal_()
    return model.eval()


def inputs(b=2, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 24, generator=g)
    levels = torch.randint(0, 1001, (b, t), generator=g)
    return x, levels, torch.randn(b, 4, generator=g), torch.randn(b, t, 2, generator=g)


# -- the model -------------------------------------------------------------------------------
def test_the_goal_reaches_every_output_and_only_later_tokens_see_a_later_goal():
    model = tiny_model()
    x, levels, first_obs, goal = inputs()
    with torch.no_grad():
        out = model(x, levels, first_obs, goal)
        other = goal.clone()
        other[:, 3] += 1.0  # token 3's goal only
        changed = model(x, levels, first_obs, other)
        moved_all = model(x, levels, first_obs, goal + 1.0)
    assert torch.equal(out[:, :3], changed[:, :3])  # causal: earlier tokens never see it
    assert not torch.allclose(out[:, 3:], changed[:, 3:])
    assert (out - moved_all).abs().amax(dim=-1).min() > 1e-4  # every token reads its goal


def test_one_goal_per_sample_is_every_token_carrying_it_and_has_goal_selects_the_null():
    model = tiny_model()
    x, levels, first_obs, goal = inputs()
    one = goal[:, 0]
    with torch.no_grad():
        per_sample = model(x, levels, first_obs, one)
        per_token = model(x, levels, first_obs, one[:, None].expand(-1, 5, -1))
        none = model(x, levels, first_obs)
        mixed = model(x, levels, first_obs, one, torch.tensor([True, False]))
    assert torch.equal(per_sample, per_token)
    assert torch.equal(mixed[0], per_sample[0]) and torch.equal(mixed[1], none[1])
    assert not torch.allclose(per_sample, none)


def test_offset_features_are_the_offset_then_sines_and_cosines_by_octave():
    offset = torch.tensor([[0.5, -0.25]])
    x, y = 0.5 * math.pi, -0.25 * math.pi
    expected = [0.5, -0.25, math.sin(x), math.sin(2 * x), math.sin(y), math.sin(2 * y)]
    expected += [math.cos(x), math.cos(2 * x), math.cos(y), math.cos(2 * y)]
    assert torch.allclose(offset_features(offset, 2), torch.tensor([expected]), atol=1e-6)


def test_the_goal_offset_input_reads_the_goal_relative_to_the_current_position():
    model = tiny_model(goal_offset_octaves=6)
    with torch.no_grad():  # leave the offset as the only way goal and position get in
        model.goal_in.weight.zero_()
        model.obs_in.weight[:, :2] = 0.0
        x, levels, first_obs, goal = inputs()
        out = model(x, levels, first_obs, goal)
        shift = torch.tensor([0.7, -1.3])
        moved_both = first_obs.clone()
        moved_both[:, :2] += shift
        same_offset = model(x, levels, moved_both, goal + shift)
        nudged = model(x, levels, first_obs, goal + 0.02)
    assert torch.allclose(out, same_offset, atol=1e-5)
    assert (out - nudged).abs().amax() > 1e-3  # a 0.02 offset change is visible


def test_an_unconditional_model_has_no_goal_weights_and_ignores_a_goal():
    model = tiny_model(goal_dim=0)
    assert not any("goal" in name for name, _ in model.named_parameters())
    x, levels, first_obs, goal = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, levels, first_obs), model(x, levels, first_obs, goal))


# -- training --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return expert_trajectories(episodes=4)


def test_windows_carry_the_goal_of_each_tokens_first_frame(data):
    sampler = WindowSampler(data, 40, 10, TINY_NORMALIZER, seed=0, goals=data.infos["goal"])
    first_obs, _, goals = sampler.sample(8)
    assert goals.shape == (8, 4, 2)
    raw = torch.from_numpy(data.observations)
    normalized = torch.from_numpy(data.infos["goal"] - TINY_NORMALIZER.obs_mean[:2])
    normalized = normalized / torch.from_numpy(TINY_NORMALIZER.obs_std[:2])
    for i in range(8):  # recover each window's start row from its first observation
        obs = TINY_NORMALIZER.denormalize_obs(first_obs[i])
        start = int((raw - obs).abs().sum(1).argmin())
        for t in range(4):
            assert torch.allclose(goals[i, t], normalized[start + 10 * t])


def test_goal_dropout_trains_a_fraction_of_windows_without_the_goal(data, monkeypatch):
    model = tiny_model()
    seen = []
    forward = model.forward
    monkeypatch.setattr(
        model,
        "forward",
        lambda *a: seen.append(a[4]) or forward(*a),  # record has_goal
    )
    sampler = WindowSampler(data, 24, 4, TINY_NORMALIZER, seed=0, goals=data.infos["goal"])
    first_obs, tokens, goals = sampler.sample(4000)
    diffusion_loss(model, first_obs, tokens, torch.Generator().manual_seed(0), None, goals, 0.2)
    dropped = 1 - seen[0].float().mean().item()
    assert abs(dropped - 0.2) < 0.03, dropped


def test_the_fingerprint_covers_the_goal_labels(data):
    other = replace(data, infos={"goal": data.infos["goal"] + 1.0})
    assert dataset_fingerprint(other) != dataset_fingerprint(data)
    assert dataset_fingerprint(replace(data, infos={})) != dataset_fingerprint(data)


def test_data_without_goal_labels_trains_an_unconditional_model_and_says_so(data, tmp_path, capsys):
    stem = train(tiny_config(tmp_path / "run", steps=2), replace(data, infos={}))
    model, _ = load_checkpoint(stem)
    assert model.config.goal_dim == 0
    assert "no goal labels" in capsys.readouterr().out
    stem = train(tiny_config(tmp_path / "goal", steps=2), data)
    assert load_checkpoint(stem)[0].config.goal_dim == 2


def test_learning_rate_warms_up_then_decays_by_cosine_to_the_floor():
    config = tiny_config(None, steps=1000, warmup=100, lr=1e-3, final_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(1e-5)
    assert lr_at(100, config) == pytest.approx(1e-3)
    assert lr_at(550, config) == pytest.approx(0.55e-3)  # halfway down the cosine
    assert lr_at(1000, config) == pytest.approx(1e-4)
    lrs = [lr_at(s, config) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True))


# -- the planner -----------------------------------------------------------------------------
def planner(goal_weight=1.0, model=None, **kw):
    config = PlannerConfig(sampling_steps=6, guidance_scale=0.0, goal_weight=goal_weight, **kw)
    return DiffusionForcingPlanner(model or tiny_model(), TINY_NORMALIZER, config)


def decisions(p, goals, steps=3):
    """Actions of `steps` decisions from OBS (planner seeds 0, 1), no reward at all."""
    p.reset(2, seeds=[0, 1])
    return np.stack([p.act(OBS, None, 20, goals) for _ in range(steps)])


def test_changing_only_the_goal_changes_the_plan():
    a = decisions(planner(), np.array([[1.0, 1.0], [1.0, 1.0]]))
    b = decisions(planner(), np.array([[3.0, 3.0], [3.0, 3.0]]))
    assert np.abs(a - b).max() > 1e-3


def test_goal_weight_zero_is_the_no_goal_path():
    goals = np.array([[1.0, 3.0], [3.0, 1.0]])
    np.testing.assert_array_equal(decisions(planner(0.0), goals), decisions(planner(1.0), None))


def test_goal_weight_two_combines_two_separate_passes():
    p = planner(2.0)
    model = p.model
    x, levels, first_obs, goal = inputs(b=4)
    goal = goal[:2, 0]  # 2 envs, 2 stacked copies each
    cond = Condition(first_obs[:2], goal)
    with torch.no_grad():
        cfg = p._predict_x0(x, levels, cond)
        obs2, goal2 = first_obs[:2].repeat(2, 1), goal.repeat(2, 1)
        with_goal = model.predict_x0(x, levels, obs2, goal2)
        without = model.predict_x0(x, levels, obs2)
    torch.testing.assert_close(cfg, without + 2.0 * (with_goal - without), rtol=1e-5, atol=1e-5)


def test_plans_with_guidance_and_mcg_take_the_goal_too():
    goals = np.array([[1.0, 3.0], [3.0, 1.0]])
    from dfplan.guidance import GoalReward

    p = planner(2.0, mcg_samples=2)
    p.config = replace(p.config, guidance_scale=0.3)
    p.reset(2, seeds=[0, 1])
    a = p.act(OBS, GoalReward(torch.tensor(goals, dtype=torch.float32)), 20, goals)
    assert a.shape == (2, 2) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1)


# -- the policy ------------------------------------------------------------------------------
@pytest.fixture
def goal_checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "goal")


def test_a_goal_change_mid_episode_changes_the_next_action(goal_checkpoint):
    def run(switch: bool):
        policy = DiffusionForcingPolicy.from_pretrained(
            "multi2d-umaze", goal_checkpoint, "cpu", guidance_scale=0.0
        )
        env = gym.make("dfplan/multi2d-umaze-v1")
        obs, info = env.reset(seed=3)
        policy.reset(seed=0)
        actions = []
        for step in range(4):
            if switch and step == 3:
                info = {**info, "goal": np.array([3.0, 1.0])}
            actions.append(policy.act(obs, info))
            obs, _, _, _, info = env.step(actions[-1])
        return np.array(actions)

    same, switched = run(False), run(True)
    np.testing.assert_array_equal(same[:3], switched[:3])
    assert np.abs(same[3] - switched[3]).max() > 1e-4


def test_a_batch_with_different_goals_equals_single_policies(goal_checkpoint):
    assert_vector_batch_equals_singles(
        lambda: DiffusionForcingPolicy.from_pretrained(
            "multi2d-umaze", goal_checkpoint, "cpu", guidance_scale=0.0, goal_weight=2.0
        ),
        n=3,
        steps=4,
    )


def test_an_unconditional_checkpoint_from_before_goals_still_plans(tmp_path):
    stem = tmp_path / "old"
    torch.manual_seed(0)
    model = DiffusionForcingModel(
        ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=4, frame_stack=5, goal_dim=0)
    )
    from dfplan.checkpoint import save_checkpoint

    save_checkpoint(stem, model, {"task": "maze2d-umaze", "normalizer": TINY_NORMALIZER.to_dict()})
    meta_path = stem.with_name("old.json")
    meta = json.loads(meta_path.read_text())
    del meta["config"]["goal_dim"]  # as written before goal conditioning
    meta["config"].update(position_features=0, residual_obs=False)
    meta_path.write_text(json.dumps(meta))
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", stem, "cpu")
    assert policy.planner.model.config.goal_dim == 0
    env = gym.make("dfplan/maze2d-umaze-v1")
    obs, info = env.reset(seed=0)
    policy.reset(seed=0)
    action = policy.act(obs, info)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


def test_df_paper_uses_the_mazes_paper_checkpoint_or_else_the_planner_paper_settings(
    tmp_path, monkeypatch
):
    from dfplan import checkpoint
    from dfplan.checkpoint import save_checkpoint
    from dfplan.policies import make_policy

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path)
    meta = {"task": "maze2d-umaze", "normalizer": TINY_NORMALIZER.to_dict()}
    paper = {"goal_weight": 0.0, "guidance_scale": 0.2, "mcg_samples": 2}
    save_checkpoint(tmp_path / "maze2d-umaze", tiny_model(), {**meta, "planner_paper": paper})
    policy = make_policy("df-paper", "multi2d-umaze", device="cpu")
    assert policy.checkpoint.endswith("maze2d-umaze")
    assert (policy.planner.config.goal_weight, policy.planner.config.guidance_scale) == (0.0, 0.2)
    assert make_policy("df", "multi2d-umaze", device="cpu").planner.config.goal_weight == 1.0
    save_checkpoint(tmp_path / "maze2d-umaze-paper", tiny_model(goal_dim=0), meta)
    policy = make_policy("df-paper", "maze2d-umaze", device="cpu")
    assert policy.checkpoint.endswith("maze2d-umaze-paper")
    assert policy.planner.model.config.goal_dim == 0
