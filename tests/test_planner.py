"""Planner behaviour on small random-weight models: schedules in use, guidance, MCG, batching,
warm start. Fast and deterministic; the quality of trained planners is measured by benchmarks."""

import numpy as np
import pytest
import torch
from helpers import TINY_NORMALIZER

from dfplan import diffusion
from dfplan import planner as planner_module
from dfplan.diffusion import shift_one_frame
from dfplan.guidance import Effort, GoalReward, KeepOut, SumReward, clip_token_norm
from dfplan.model import DiffusionForcingModel, ModelConfig, tokens_to_frames
from dfplan.planner import Condition, DiffusionForcingPlanner, PlannerConfig
from dfplan.rollout import rollout


def tiny_planner(seed=0, prediction="x0", **kw):
    torch.manual_seed(seed)
    model = DiffusionForcingModel(
        ModelConfig(
            n_layer=2, n_head=2, n_embd=32, max_tokens=6, frame_stack=4, prediction=prediction
        )
    )
    # Reward guidance with MCG on unless a test says otherwise: most tests here exercise it.
    settings = {"guidance_scale": 0.3, "mcg_samples": 4, "refresh_rows": 2, **kw}
    return DiffusionForcingPlanner(
        model, TINY_NORMALIZER, PlannerConfig(sampling_steps=6, **settings)
    )


def test_actions_are_finite_and_in_bounds_for_random_observations():
    planner = tiny_planner(mcg_samples=2, guidance_scale=5.0)
    rng = np.random.default_rng(0)
    planner.reset(5, seeds=list(range(5)))
    for _ in range(4):
        obs = rng.normal(0, 10, size=(5, 4))
        a = planner.act(obs, GoalReward(torch.tensor([1.0, 1.0])), steps_left=17)
        assert a.shape == (5, 2) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)


def test_guidance_moves_the_plan_toward_the_goal():
    goal = torch.tensor([[6.0, -3.0]])
    distances = {}
    for scale in (0.0, 1.0):
        # Full-sequence schedule: every token is clean at the end, so the whole plan is compared.
        # An untrained v-predicting model: x0 = sqrt(abar) x - sqrt(1 - abar) v depends
        # on x, as a trained model's does, so the reward gradient has something to act on.
        planner = tiny_planner(guidance_scale=scale, mcg_samples=1, uncertainty=0.0, prediction="v")
        planner.reset(1, seeds=[0])
        planner.act(np.array([[2.0, 2.0, 0.0, 0.0]]), GoalReward(goal), steps_left=24)
        plan = planner.to_plan(planner.tokens, torch.tensor([24]))
        distances[scale] = torch.linalg.vector_norm(plan.positions - goal, dim=-1).mean().item()
    assert distances[1.0] < distances[0.0] - 0.5, distances


def test_clip_token_norm_caps_each_token_and_keeps_direction():
    grad = torch.tensor([[[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]])  # norms 5, 0.5, 0
    clipped = clip_token_norm(grad, 1.0)
    assert torch.allclose(clipped[0, 0], torch.tensor([0.6, 0.8]))
    assert torch.equal(clipped[0, 1:], grad[0, 1:])  # under the cap: untouched


def test_guidance_clip_bounds_the_guidance_step_of_every_token():
    obs = np.array([[2.0, 2.0, 0.0, 0.0]])
    reward = GoalReward(torch.tensor([[60.0, -30.0]]))  # far goal: large gradients
    steps = {}
    for clip in (0.0, 0.01):
        planner = tiny_planner(guidance_scale=50.0, mcg_samples=1, guidance_clip=clip)
        first_obs, steps_left, t = planner._prepare(obs, 24)
        x = planner._randn(t, planner.model.config.token_dim)
        lv_from, lv_to = torch.full((1, t), 6), torch.full((1, t), 5)
        guided, _ = planner._row(x, lv_from, lv_to, first_obs, reward, steps_left)
        planner.config.guidance_scale = 0.0
        plain, _ = planner._row(x, lv_from, lv_to, first_obs, None, steps_left)
        steps[clip] = torch.linalg.vector_norm(guided - plain, dim=-1).max().item()
    sigma = (1 - planner.abar[planner.train_levels[5]]).sqrt().item()
    assert steps[0.0] > 1.0  # the uncapped step is large ...
    assert steps[0.01] <= 50.0 * sigma * 0.01 + 1e-5  # ... the capped one is scale * sigma * cap


def plain_guidance_row(planner, x, lv_from, lv_to, cond, reward, steps_left):
    """Reward guidance written out: grad of r(x0(x)) w.r.t. x, added after the DDIM step to the
    tokens that move in this row."""
    k_from, k_to = planner.train_levels[lv_from], planner.train_levels[lv_to]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = planner.model.predict_x0(x, k_from, cond.first_obs)
        (grad,) = torch.autograd.grad(reward(planner.to_plan(x0, steps_left)).sum(), x)
    step = diffusion.ddim_step(x.detach(), x0.detach(), k_from, k_to, planner.abar)
    sigma = (1 - planner.abar[k_to]).sqrt().unsqueeze(-1).float()
    moving = (lv_to < lv_from).unsqueeze(-1).float()
    return step + planner.config.guidance_scale * moving * sigma * grad


def test_mcg_with_one_sample_is_plain_guidance():
    planner = tiny_planner(guidance_scale=0.7, mcg_samples=1)
    planner.reset(3, seeds=[1, 2, 3])
    torch.manual_seed(0)
    x = torch.randn(3, 5, planner.model.config.token_dim)
    lv_from = torch.tensor([[6, 6, 6, 6, 6]] * 3)
    lv_to = torch.tensor([[5, 6, 6, 6, 6]] * 3)
    first = Condition(torch.randn(3, 4), None)
    steps_left = torch.tensor([20, 20, 20])
    reward = GoalReward(torch.tensor([[3.0, 1.0], [0.0, 0.0], [5.0, 5.0]]))
    ours, _ = planner._row(x, lv_from, lv_to, first, reward, steps_left)
    reference = plain_guidance_row(planner, x, lv_from, lv_to, first, reward, steps_left)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    # More samples average over other futures: a different (still finite) update.
    planner = tiny_planner(guidance_scale=0.7, mcg_samples=4)
    planner.reset(3, seeds=[1, 2, 3])
    mcg, _ = planner._row(x, lv_from, lv_to, first, reward, steps_left)
    assert torch.isfinite(mcg).all() and not torch.allclose(mcg, ours)


# Later cases stack two warm draws per env (each env's noise for both from its generator), carry
# x0, and condition on per-env goals with classifier-free guidance.
@pytest.mark.parametrize(
    "carry,draws,goal_weight",
    [(False, 1, 1.0), (True, 2, 1.0), (True, 2, 2.0), (False, 1, 0.0)],
)
def test_a_batch_plans_like_single_planners_with_the_same_seeds(carry, draws, goal_weight):
    rng = np.random.default_rng(1)
    obs = rng.uniform(0, 4, size=(8, 4))
    goals = torch.as_tensor(rng.uniform(0, 4, size=(8, 2)), dtype=torch.float32)
    kw = dict(mcg_samples=3, carry_x0=carry, warm_candidates=draws, goal_weight=goal_weight)
    batched = tiny_planner(**kw)
    batched.reset(8, seeds=list(range(100, 108)))
    together = [batched.act(obs, GoalReward(goals), 20, goals) for _ in range(3)]
    for k in range(8):
        single = tiny_planner(**kw)
        single.reset(1, seeds=[100 + k])
        for step in range(3):
            a = single.act(obs[k : k + 1], GoalReward(goals[k : k + 1]), 20, goals[k : k + 1])
            np.testing.assert_allclose(a[0], together[step][k], rtol=1e-4, atol=1e-5)


def test_a_padding_row_leaves_waiting_plans_and_their_carried_x0_exactly_as_they_were():
    planner = tiny_planner(mcg_samples=2)
    planner.reset(2, seeds=[0, 1])
    first_obs, steps_left, tokens = planner._prepare(np.full((2, 4), 2.0), 20)
    d = planner.model.config.token_dim
    x, x0_carried = torch.randn(2, tokens, d), torch.randn(2, tokens, d)
    levels = torch.tensor([[3] * tokens, [5] * tokens])
    lower = levels - torch.tensor([[1], [0]])  # env 0 moves down one level, env 1 waits
    reward = GoalReward(torch.tensor([3.0, 3.0]))
    x_next, x0 = planner._row(x, levels, lower, first_obs, reward, steps_left, x0_carried)
    assert torch.equal(x_next[1], x[1]) and torch.equal(x0[1], x0_carried[1])
    assert not torch.allclose(x_next[0], x[0]) and not torch.allclose(x0[0], x0_carried[0])


def test_checkpoints_written_with_retired_settings_load_where_those_were_off():
    old = {
        "sampling_steps": 10,
        "schedule": "pyramid",
        "warm_start": True,
        "guide_waiting": False,
        "eta": 0.0,
        "candidates": 1,
        "deep_refresh_rows": 0,
        "stall_refresh_rows": 0,
        "stall_speed": 0.1,
        "guidance_scale": 0.3,
    }
    config = PlannerConfig.from_dict(old)
    assert config == PlannerConfig(sampling_steps=10, guidance_scale=0.3)
    full = PlannerConfig.from_dict({"sampling_steps": 6, "schedule": "full_sequence"})
    assert full.uncertainty == 0.0
    one_by_one = PlannerConfig.from_dict({"sampling_steps": 6, "schedule": "autoregressive"})
    assert one_by_one.uncertainty == 6.0
    for relied_on in ({"eta": 0.5}, {"candidates": 4}, {"stall_refresh_rows": 5}):
        with pytest.raises(ValueError, match="not supported any more"):
            PlannerConfig.from_dict({**old, **relied_on})
    with pytest.raises(ValueError, match="goal_weight"):
        tiny_planner(goal_weight=-1.0)
    with pytest.raises(ValueError, match="goal_weight"):
        tiny_planner(goal_weight=float("inf"))


# The second case stacks two warm draws, carries x0, and changes the plan length between steps.
@pytest.mark.parametrize("kw", [{}, {"warm_candidates": 2, "carry_x0": True}])
def test_forgetting_one_env_leaves_the_others_untouched(kw):
    """Env 1 restarts from noise (a cold pyramid, more rows) while env 0 keeps its warm plan;
    each gets exactly the actions it would get alone (env 1's planner forgets at the same step)."""
    rng = np.random.default_rng(2)
    obs = rng.uniform(0, 4, size=(2, 4))
    goals = torch.tensor([[3.0, 3.0], [0.0, 1.0]])
    batched = tiny_planner(mcg_samples=2, **kw)
    batched.reset(2, seeds=[5, 6])
    singles = [tiny_planner(mcg_samples=2, **kw) for _ in range(2)]
    for k, single in enumerate(singles):
        single.reset(1, seeds=[5 + k])
    lengths = [20, 20, 20, 20] if not kw else [20, 10, 24, 23]  # plans shrink, then grow
    for step, steps_left in enumerate(lengths):
        if step == 2:
            batched.forget([1])
            singles[1].forget([0])
        a = batched.act(obs, GoalReward(goals), steps_left)
        for k, single in enumerate(singles):
            b = single.act(obs[k : k + 1], GoalReward(goals[k : k + 1]), steps_left)
            np.testing.assert_allclose(a[k], b[0], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(a))


def test_warm_start_shift_keeps_the_plan_in_order():
    """Shifting drops exactly the executed frame: the remaining frames keep their values where
    their level does not change, and levels only ever rise (re-noising, never inventing)."""
    planner = tiny_planner()
    fs = planner.frame_stack
    tokens = torch.randn(2, 4, planner.model.config.token_dim)
    levels = torch.tensor([[0, 1, 2, 6], [0, 0, 3, 6]])
    noise = torch.randn(2, 4 * fs, tokens.shape[2] // fs)
    shifted, new_levels = shift_one_frame(tokens, levels, fs, planner.abar_steps, noise)
    old_frames = tokens_to_frames(tokens, fs)
    new_frames = tokens_to_frames(shifted, fs)
    frame_levels = levels.repeat_interleave(fs, 1)
    new_frame_levels = new_levels.repeat_interleave(fs, 1)
    for b in range(2):
        for i in range(4 * fs - 1):
            if new_frame_levels[b, i] == frame_levels[b, i + 1]:
                torch.testing.assert_close(new_frames[b, i], old_frames[b, i + 1])
    assert new_levels[0].tolist() == [1, 2, 6, 6] and new_levels[1].tolist() == [0, 3, 6, 6]


def test_warm_start_executes_a_clean_first_token_and_costs_fewer_rows():
    calls = {}
    for warm in (True, False):
        planner = tiny_planner(refresh_rows=2, mcg_samples=1)
        planner.reset(1, seeds=[0])
        count = 0

        def counting(module, inputs):
            nonlocal count
            count += 1

        planner.model.register_forward_pre_hook(counting)
        obs = np.array([[2.0, 2.0, 0.0, 0.0]])
        for t in range(3):
            if not warm:
                planner.forget([0])  # plan from noise every step
            planner.act(obs, GoalReward(torch.tensor([3.0, 3.0])), 24 - t)
        calls[warm] = count
    assert calls[True] < calls[False]


def long_planner(**kw):
    """A plan of 12 tokens over 4 sampling steps: the pyramid leaves tokens 4.. pure noise."""
    torch.manual_seed(0)
    model = DiffusionForcingModel(ModelConfig(n_layer=2, n_head=2, n_embd=32, max_tokens=12))
    return DiffusionForcingPlanner(
        model, TINY_NORMALIZER, PlannerConfig(sampling_steps=4, refresh_rows=2, **kw)
    )


@pytest.mark.parametrize("goal_weight", [1.0, 2.0])
def test_without_a_reward_rows_skip_the_tokens_after_the_last_one_they_move(goal_weight):
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.0, 3.0, 0.5, 0.0]])
    goal = torch.tensor([[3.0, 3.0], [0.5, 0.5]])
    actions, seen = {}, []
    for skip in (True, False):
        planner = long_planner(goal_weight=goal_weight)
        if not skip:  # every row runs the model on the whole plan
            planner._predict_x0_moving = (
                lambda x, k, moving, cond, x0_prev, full=planner._predict_x0: full(x, k, cond)
            )
        else:
            planner.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
        planner.reset(2, seeds=[0, 1])
        actions[skip] = [planner.act(obs, None, 200 - t, goal) for t in range(4)]
    # The model is causal and the skipped tokens do not move: the same decisions.
    np.testing.assert_allclose(actions[True], actions[False], rtol=0, atol=1e-5)
    # Cold start: row m moves tokens 0..m; warm rows move tokens 0..3, then 0..2.
    assert seen == [1, 2, 3, 4] + [4, 3] * 3


def test_carry_x0_saves_one_forward_per_warm_pass_and_shifts_the_last_x0():
    obs = np.array([[2.0, 2.0, 0.0, 0.0]])
    reward = GoalReward(torch.tensor([3.0, 3.0]))
    calls = {}
    for carry in (False, True):
        planner = tiny_planner(mcg_samples=2, carry_x0=carry)
        planner.reset(1, seeds=[0])
        planner.act(obs, reward, 24)  # cold start: the same work either way
        count = 0

        def counting(module, inputs):
            nonlocal count
            count += 1

        planner.model.register_forward_pre_hook(counting)
        for t in range(3):
            action = planner.act(obs, reward, 23 - t)
            assert np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1)
        calls[carry] = count
    assert calls[False] - calls[True] == 3  # one forward pass saved per warm decision
    # The carried estimate is the last x0 without the executed frame, padded at the far end.
    fs = planner.frame_stack
    old = tokens_to_frames(planner.x0, fs)
    t = planner.x0.shape[1]
    new = tokens_to_frames(planner._shifted_x0(t + 1), fs)
    torch.testing.assert_close(new[:, : t * fs - 1], old[:, 1:])
    assert torch.equal(new[:, t * fs - 1 :], old[:, -1:].expand(-1, fs + 1, -1))


def test_carried_x0_is_what_the_first_warm_row_builds_its_futures_from(monkeypatch):
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.0, 2.5, 0.0, 0.0]])
    reward = GoalReward(torch.tensor([3.0, 3.0]))
    planner = tiny_planner(mcg_samples=2, warm_candidates=2, carry_x0=True)
    planner.reset(2, seeds=[0, 1])
    planner.act(obs, reward, 24)  # cold start
    carried, future_means = [], []
    shifted_x0 = planner._shifted_x0
    q_sample = diffusion.q_sample

    def recording_shift(tokens):
        carried.append(shifted_x0(tokens))
        return carried[-1]

    def recording_q_sample(x0, *args, **kw):
        future_means.append(x0.clone())
        return q_sample(x0, *args, **kw)

    monkeypatch.setattr(planner, "_shifted_x0", recording_shift)
    monkeypatch.setattr(planner_module.diffusion, "q_sample", recording_q_sample)
    planner.act(obs, reward, 23)  # warm: 2 stacked draws, MCG 2 -> 1 future per plan
    assert len(carried) == 1
    # Copy j of env k sits at row j * B + k, so the carried estimate repeats per copy.
    torch.testing.assert_close(future_means[0], carried[0].repeat(2, 1, 1), rtol=0, atol=0)
    # The next row builds from the first row's own x0 prediction instead.
    assert not torch.allclose(future_means[1], future_means[0])


def test_other_rewards_plug_in():
    planner = tiny_planner(mcg_samples=2)
    planner.reset(2, seeds=[0, 1])
    reward = SumReward(
        (GoalReward(torch.tensor([3.0, 3.0])), 1.0),
        (KeepOut([[2.0, 2.5, 0.5]]), 2.0),
        (Effort(), 0.1),
    )
    a = planner.act(np.array([[2.0, 2.0, 0, 0], [1.0, 3.0, 0, 0]]), reward, 10)
    assert a.shape == (2, 2) and np.all(np.isfinite(a))


def test_warm_candidates_keep_the_best_plan_by_reward():
    reward = GoalReward(torch.tensor([[3.0, 3.0], [1.0, 2.0], [2.0, 1.0]]))
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.5, 2.5, 0.1, 0.0], [2.5, 1.5, 0.0, -0.1]])
    planner = tiny_planner(warm_candidates=4, guidance_scale=0.5, mcg_samples=2)
    planner.reset(3, seeds=[0, 1, 2])
    planner.act(obs, reward, 20)  # cold start
    cond, steps_left, tokens = planner._prepare(obs, 19)
    floor = planner_module.cold_schedule(planner.config, tokens)[-1]
    drawn = {}
    best_of = planner._best_of

    def spy(xs, x0s, *args):
        drawn["x0s"] = x0s
        return best_of(xs, x0s, *args)

    planner._best_of = spy
    warm = torch.ones(3, dtype=torch.bool)
    _, x0 = planner._warm_start(floor, tokens, warm, cond, reward, steps_left)

    def score(x0):
        return reward(planner.to_plan(x0, steps_left))

    # K stacked draws: K different plans per env, and the kept one is the best of them.
    each = torch.stack([score(x0c) for x0c in drawn["x0s"].split(3)])  # (4, B)
    assert each.shape == (4, 3)
    torch.testing.assert_close(score(x0), each.amax(dim=0))
    assert torch.any(each.amax(dim=0) > each[0] + 1e-3)  # the extra draws do win somewhere
    assert np.all(np.abs(planner.act(obs, reward, 18)) <= 1.0)
    # Without a reward there is nothing to choose by: one draw.
    planner.act(obs, None, 17)
    assert drawn["x0s"].shape[0] == 3
    with pytest.raises(ValueError, match="warm_candidates"):
        tiny_planner(warm_candidates=0)
    with pytest.raises(ValueError, match="horizon_tokens"):
        tiny_planner(horizon_tokens=-1)


def test_rollout_runs_past_the_training_window_and_is_reproducible():
    planner = tiny_planner()
    model = planner.model
    first = torch.tensor([[0.5, -0.5, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0]])
    tokens = 3 * model.config.max_tokens  # three windows: the context slides
    out = rollout(model, first, tokens, steps=3, context_level=1, generator=_gen(7))
    assert out.shape == (2, tokens, model.config.token_dim)
    assert torch.isfinite(out).all()
    again = rollout(model, first, tokens + 2, steps=3, context_level=1, generator=_gen(7))
    torch.testing.assert_close(again[:, :tokens], out)  # token t depends only on the past
    with pytest.raises(ValueError, match="context_level"):
        rollout(model, first, 2, steps=3, context_level=4)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
