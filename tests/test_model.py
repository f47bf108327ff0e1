"""Shape contract, causality and parametrisations of the Diffusion Forcing model."""

import pytest
import torch

from dfplan import diffusion
from dfplan.model import (
    DiffusionForcingModel,
    ModelConfig,
    frames_to_tokens,
    tokens_to_frames,
)

TINY = dict(n_layer=2, n_head=2, n_embd=32, max_tokens=8)


def _inputs(config: ModelConfig, b=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, config.token_dim, generator=g)
    levels = torch.randint(0, config.num_levels + 1, (b, t), generator=g)
    first_obs = torch.randn(b, config.obs_dim, generator=g)
    return x, levels, first_obs


def _model(seed=0, **overrides) -> DiffusionForcingModel:
    torch.manual_seed(seed)
    return DiffusionForcingModel(ModelConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("prediction", ["x0", "eps", "v"])
def test_shapes(prediction):
    model = _model(prediction=prediction)
    x, levels, first_obs = _inputs(model.config)
    assert model.config.token_dim == 60
    assert model(x, levels, first_obs).shape == x.shape
    assert model.predict_x0(x, levels, first_obs).shape == x.shape


def test_default_size_is_the_reference_probe():
    model = DiffusionForcingModel(ModelConfig())
    n = model.num_params()
    assert 0.8e6 < n < 0.9e6  # the 0.85M-parameter default
    assert n * 4 < 10e6  # float32 weights under 10 MB


@pytest.mark.parametrize("options", [{}, {"goal_dim": 0}])
def test_causality_later_tokens_never_change_earlier_outputs(options):
    model = _model(**options)
    x, levels, first_obs = _inputs(model.config, t=8)
    goal = torch.randn(3, 8, 2) if model.config.goal_dim else None
    with torch.no_grad():
        base = model(x, levels, first_obs, goal)
        for t in range(7):
            x2, levels2 = x.clone(), levels.clone()
            x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 5
            levels2[:, t + 1 :] = torch.randint(0, 1001, levels2[:, t + 1 :].shape)
            goal2 = None
            if goal is not None:  # later tokens' goals are as invisible as later tokens
                goal2 = goal.clone()
                goal2[:, t + 1 :] += 3.0
            out = model(x2, levels2, first_obs, goal2)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


@pytest.mark.parametrize("options", [{}, {"goal_dim": 0}])
def test_conditioning_and_levels_reach_the_output(options):
    model = _model(**options)
    x, levels, first_obs = _inputs(model.config)
    with torch.no_grad():
        base = model(x, levels, first_obs)
        # o_0 is visible to every token.
        moved = model(x, levels, first_obs + 1)
        assert (moved - base).abs().amax(dim=-1).min() > 0
        # A token's own level changes its own output.
        levels2 = levels.clone()
        levels2[:, 0] = (levels2[:, 0] + 500) % 1001
        assert not torch.allclose(model(x, levels2, first_obs)[:, 0], base[:, 0])


def test_goal_dim_sizes_the_goal_input_and_must_not_be_negative():
    model = _model()
    assert model.goal_in.in_features == 2 and model.no_goal.shape == (32,)
    with pytest.raises(ValueError, match="goal_dim"):
        ModelConfig(goal_dim=-1).validate()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_predict_x0_converts_with_diffusion_math(prediction):
    model = _model(prediction=prediction)
    x, levels, first_obs = _inputs(model.config)
    with torch.no_grad():
        pred = model(x, levels, first_obs)
        x0 = model.predict_x0(x, levels, first_obs)
    convert = diffusion.x0_from_eps if prediction == "eps" else diffusion.x0_from_v
    torch.testing.assert_close(x0, convert(x, pred, levels, model.abar))
    clean = levels == 0
    torch.testing.assert_close(x0[clean], x[clean])  # a clean token is its own x0


def test_x0_prediction_is_returned_as_is():
    model = _model()
    x, levels, first_obs = _inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model.predict_x0(x, levels, first_obs), model(x, levels, first_obs))


def test_same_seed_same_weights_and_weights_only_state():
    a, b = _model(seed=5), _model(seed=5)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert "abar" not in a.state_dict()  # the schedule is config, not a weight


def test_input_errors():
    model = _model()
    x, levels, first_obs = _inputs(model.config, t=9)
    with pytest.raises(ValueError, match="max_tokens"):
        model(x, levels, first_obs)
    with pytest.raises(ValueError, match="numbers"):
        model(x[:, :3, :50], levels[:, :3], first_obs)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionForcingModel(ModelConfig(prediction="score"))
    with pytest.raises(ValueError, match="multiple of n_head"):
        DiffusionForcingModel(ModelConfig(n_embd=30, n_head=4))


def test_token_layout():
    frames = torch.arange(2 * 20 * 6, dtype=torch.float32).reshape(2, 20, 6)
    tokens = frames_to_tokens(frames, 10)
    assert tokens.shape == (2, 2, 60)
    # token t holds frames 10t .. 10t + 9 in order, each [obs (4), action (2)]
    assert torch.equal(tokens[1, 1, 6:12], frames[1, 11])
    assert torch.equal(tokens_to_frames(tokens, 10), frames)
    with pytest.raises(ValueError):
        frames_to_tokens(frames[:, :15], 10)
