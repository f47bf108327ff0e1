"""Planner behaviour on small random-weight models: schedules in use, guidance, MCG, batching,
warm start. Fast and deterministic; the quality of trained planners is measured by benchmarks."""

import numpy as np
import pytest
import torch
from helpers import TINY_NORMALIZER

from dfplan import diffusion
from dfplan import planner as planner_module
from dfplan.guidance import (
    ActionEnergyReward,
    GoalReward,
    KeepAwayReward,
    SumReward,
    clip_token_norm,
)
from dfplan.model import DiffusionForcingModel, ModelConfig, tokens_to_frames
from dfplan.planner import Condition, DiffusionForcingPlanner, PlannerConfig, shift_one_frame
from dfplan.rollout import rollout


def tiny_planner(seed=0, prediction="x0", **kw):
    torch.manual_seed(seed)
    model = DiffusionForcingModel(
        ModelConfig(
            n_layer=2, n_head=2, n_embd=32, max_tokens=6, frame_stack=4, prediction=prediction
        )
    )
    return DiffusionForcingPlanner(model, TINY_NORMALIZER, PlannerConfig(sampling_steps=6, **kw))


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
        planner = tiny_planner(
            guidance_scale=scale, mcg_samples=1, schedule="full_sequence", prediction="v"
        )
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


# The last case stacks two warm draws per env (each env's noise for both from its generator).
@pytest.mark.parametrize(
    "warm,eta,carry,draws,stall",
    [
        (True, 0.0, False, 1, 0),
        (False, 0.0, False, 1, 0),
        (True, 0.5, False, 1, 0),
        (True, 0.5, True, 2, 0),
        (True, 0.5, True, 2, 5),  # speeds are U(0, 4) * sqrt(2): some envs stall under 2.5
    ],
)
def test_a_batch_plans_like_single_planners_with_the_same_seeds(warm, eta, carry, draws, stall):
    rng = np.random.default_rng(1)
    obs = rng.uniform(0, 4, size=(8, 4))
    goals = torch.as_tensor(rng.uniform(0, 4, size=(8, 2)), dtype=torch.float32)
    kw = dict(mcg_samples=3, warm_start=warm, eta=eta, carry_x0=carry, warm_candidates=draws)
    kw.update(stall_refresh_rows=stall, stall_speed=2.5)
    batched = tiny_planner(**kw)
    batched.reset(8, seeds=list(range(100, 108)))
    together = [batched.act(obs, GoalReward(goals), 20) for _ in range(3)]
    for k in range(8):
        single = tiny_planner(**kw)
        single.reset(1, seeds=[100 + k])
        for step in range(3):
            a = single.act(obs[k : k + 1], GoalReward(goals[k : k + 1]), 20)
            np.testing.assert_allclose(a[0], together[step][k], rtol=1e-4, atol=1e-5)


def test_a_padding_row_leaves_waiting_plans_and_their_carried_x0_exactly_as_they_were():
    planner = tiny_planner(mcg_samples=2, eta=0.5)
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


def test_a_stalled_env_refreshes_deeper_and_a_moving_one_does_not():
    """With `stall_refresh_rows`, an env at rest plans as with refresh_rows = stall_refresh_rows,
    a moving one as without the option; a batch mixing the two equals single planners."""
    rest, moving = np.array([2.0, 2.0, 0.0, 0.05]), np.array([1.0, 2.5, 1.0, -0.5])
    goal = torch.tensor([[3.0, 3.0]])
    stall = dict(
        refresh_rows=1,
        stall_refresh_rows=4,
        stall_speed=0.1,
        mcg_samples=2,
        eta=0.3,
        warm_candidates=2,
    )

    def actions(obs, **kw):
        planner = tiny_planner(**kw)
        planner.reset(len(obs), seeds=list(range(len(obs))))
        reward = GoalReward(goal.expand(len(obs), 2))
        return np.stack([planner.act(obs, reward, 20 - t) for t in range(4)])

    stalled = actions(rest[None], **stall)
    np.testing.assert_array_equal(
        stalled, actions(rest[None], **{**stall, "refresh_rows": 4, "stall_refresh_rows": 0})
    )
    np.testing.assert_array_equal(
        actions(moving[None], **stall), actions(moving[None], **{**stall, "stall_refresh_rows": 0})
    )
    plain = actions(rest[None], **{**stall, "stall_refresh_rows": 0})
    assert not np.allclose(stalled, plain)  # the deeper refresh matters
    together = actions(np.stack([rest, moving]), **stall)
    planner = tiny_planner(**stall)  # env 1 alone, with its batch seed
    planner.reset(1, seeds=[1])
    alone = [planner.act(moving[None], GoalReward(goal), 20 - t)[0] for t in range(4)]
    np.testing.assert_allclose(together[:, 1], np.stack(alone), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together[:, :1], stalled, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stall_speed"):
        tiny_planner(stall_speed=-1.0)
    with pytest.raises(ValueError, match="stall_speed"):
        tiny_planner(stall_speed=float("inf"))


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
        planner = tiny_planner(warm_start=warm, refresh_rows=2, mcg_samples=1)
        planner.reset(1, seeds=[0])
        count = 0

        def counting(module, inputs):
            nonlocal count
            count += 1

        planner.model.register_forward_pre_hook(counting)
        obs = np.array([[2.0, 2.0, 0.0, 0.0]])
        for t in range(3):
            planner.act(obs, GoalReward(torch.tensor([3.0, 3.0])), 24 - t)
        calls[warm] = count
    assert calls[True] < calls[False]


def test_carry_x0_saves_one_forward_per_warm_pass_and_shifts_the_last_x0():
    obs = np.array([[2.0, 2.0, 0.0, 0.0]])
    reward = GoalReward(torch.tensor([3.0, 3.0]))
    calls = {}
    for carry in (False, True):
        planner = tiny_planner(mcg_samples=2, deep_refresh_rows=4, carry_x0=carry)
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
    assert calls[False] - calls[True] == 3 * 2  # 3 warm decisions x 2 passes (shallow, deep)
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
        (KeepAwayReward(torch.tensor([2.0, 2.5]), 0.5), 2.0),
        (ActionEnergyReward(), 0.1),
    )
    a = planner.act(np.array([[2.0, 2.0, 0, 0], [1.0, 3.0, 0, 0]]), reward, 10)
    assert a.shape == (2, 2) and np.all(np.isfinite(a))


def test_cold_start_candidates_keep_the_best_plan_by_reward():
    reward = GoalReward(torch.tensor([[3.0, 3.0], [1.0, 2.0], [2.0, 1.0]]))
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.5, 2.5, 0.1, 0.0], [2.5, 1.5, 0.0, -0.1]])
    scores = {}
    for k in (1, 4):
        planner = tiny_planner(candidates=k, guidance_scale=0.5, mcg_samples=2)
        planner.reset(3, seeds=[0, 1, 2])
        first_obs, steps_left, tokens = planner._prepare(obs, 20)
        profile = planner_module.cold_schedule(planner.config, tokens)
        cold = torch.ones(3, dtype=torch.bool)
        _, x0 = planner._cold_start(profile, cold, first_obs, reward, steps_left)
        scores[k] = reward(planner.to_plan(x0, steps_left))
    # candidate 1 of 4 is the single plan (same generator, same draws), so 4 can only be better
    assert torch.all(scores[4] >= scores[1] - 1e-5)
    assert torch.any(scores[4] > scores[1] + 1e-3)


def test_warm_candidates_and_deep_refresh_keep_the_best_plan_by_reward():
    reward = GoalReward(torch.tensor([[3.0, 3.0], [1.0, 2.0], [2.0, 1.0]]))
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [1.5, 2.5, 0.1, 0.0], [2.5, 1.5, 0.0, -0.1]])

    def warm_planner(k, deep):
        planner = tiny_planner(
            warm_candidates=k, deep_refresh_rows=deep, guidance_scale=0.5, mcg_samples=2
        )
        planner.reset(3, seeds=[0, 1, 2])
        planner.act(obs, reward, 20)  # cold start: the same for every setting
        first_obs, steps_left, tokens = planner._prepare(obs, 19)
        floor = planner_module.cold_schedule(planner.config, tokens)[-1]
        warm = torch.ones(3, dtype=torch.bool)
        args = (floor, tokens, warm, first_obs, reward, steps_left)
        return planner, args, steps_left

    def score(planner, x0, steps_left):
        return reward(planner.to_plan(x0, steps_left))

    # K stacked draws: K different plans per env, and the kept one is the best of them.
    planner, args, steps_left = warm_planner(4, 0)
    states = [g.get_state() for g in planner.generators]
    _, x0_all = planner._refresh(*args, planner.config.refresh_rows, 4)
    for g, state in zip(planner.generators, states, strict=True):
        g.set_state(state)
    _, x0 = planner._warm_start(*args, planner.config.refresh_rows)
    each = torch.stack([score(planner, x0c, steps_left) for x0c in x0_all.split(3)])  # (4, B)
    torch.testing.assert_close(score(planner, x0, steps_left), each.amax(dim=0))
    assert torch.any(each.amax(dim=0) > each[0] + 1e-3)  # the extra draws do win somewhere
    assert np.all(np.abs(planner.act(obs, reward, 18)) <= 1.0)
    # A deep draw comes after the single shallow one (same generator, same first draw).
    scores = {}
    for deep in (0, 4):
        planner, args, steps_left = warm_planner(1, deep)
        x0 = planner._warm_start(*args, planner.config.refresh_rows)[1]
        scores[deep] = score(planner, x0, steps_left)
        assert np.all(np.abs(planner.act(obs, reward, 18)) <= 1.0)
    assert torch.all(scores[4] >= scores[0] - 1e-5)
    assert torch.any(scores[4] > scores[0] + 1e-3)
    with pytest.raises(ValueError, match="candidates"):
        tiny_planner(warm_candidates=0)
    with pytest.raises(ValueError, match="deep_refresh_rows"):
        tiny_planner(deep_refresh_rows=-1)


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
