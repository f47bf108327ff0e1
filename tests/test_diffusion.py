"""Property tests of the diffusion math (dfplan.diffusion): per-token levels, level 0 = clean."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dfplan import diffusion as D

K = 1000
SCHEDULES = {kind: D.alphas_cumprod(D.make_betas(kind, K)) for kind in ("linear", "cosine")}
FAST = settings(max_examples=40, deadline=None)


def _batch(seed: int, b=3, t=7, d=5, low=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, t, d, generator=g, dtype=dtype) * 2
    noise = torch.randn(b, t, d, generator=g, dtype=dtype)
    levels = torch.randint(low, K + 1, (b, t), generator=g)
    return x0, noise, levels


def test_linear_betas_match_ddpm():
    betas = D.make_betas("linear", K)
    assert betas.shape == (K,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_convention(kind):
    abar = SCHEDULES[kind]
    assert abar.shape == (K + 1,) and abar[0].item() == 1.0
    assert torch.all(abar[1:] < abar[:-1]) and abar[-1].item() > 0


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        D.make_betas("quadratic", K)
    with pytest.raises(ValueError):
        D.make_betas("linear", 0)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["linear", "cosine"]))
def test_x0_eps_round_trip(seed, kind):
    abar = SCHEDULES[kind]
    x0, noise, levels = _batch(seed, low=1)
    x_k = D.q_sample(x0, levels, abar, noise)
    torch.testing.assert_close(D.eps_from_x0(x_k, x0, levels, abar), noise)
    # x0 from eps divides by sqrt(abar_K) (~6e-3 for linear): float64 keeps this tight.
    torch.testing.assert_close(D.x0_from_eps(x_k, noise, levels, abar), x0)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["linear", "cosine"]))
def test_v_round_trip(seed, kind):
    abar = SCHEDULES[kind]
    x0, noise, levels = _batch(seed)
    x_k = D.q_sample(x0, levels, abar, noise)
    v = D.v_from_x0_eps(x0, noise, levels, abar)
    torch.testing.assert_close(D.x0_from_v(x_k, v, levels, abar), x0)
    torch.testing.assert_close(D.eps_from_v(x_k, v, levels, abar), noise)


def test_round_trip_float32_is_usable():
    abar = SCHEDULES["linear"]
    x0, noise, levels = _batch(0, b=8, t=30, d=60, low=1, dtype=torch.float32)
    x_k = D.q_sample(x0, levels, abar, noise)
    assert x_k.dtype == torch.float32
    torch.testing.assert_close(D.x0_from_eps(x_k, noise, levels, abar), x0, atol=1e-3, rtol=1e-3)


def test_level_zero_is_clean():
    abar = SCHEDULES["linear"]
    x0, noise, _ = _batch(1)
    zero = torch.zeros(x0.shape[:2], dtype=torch.long)
    assert torch.equal(D.q_sample(x0, zero, abar, noise), x0)
    assert torch.equal(D.eps_from_x0(x0, x0 + 1, zero, abar), torch.zeros_like(x0))
    assert torch.equal(D.x0_from_eps(x0, noise, zero, abar), x0)


@pytest.mark.parametrize("level", [1, 100, 500, 1000])
def test_q_sample_statistics(level):
    abar = SCHEDULES["linear"]
    n = 20_000
    x0 = torch.full((n, 1, 1), 1.5, dtype=torch.float64)
    noise = torch.randn(n, 1, 1, generator=torch.Generator().manual_seed(level), dtype=x0.dtype)
    x_k = D.q_sample(x0, torch.full((n, 1), level), abar, noise)
    a = abar[level].item()
    std = (1 - a) ** 0.5
    assert x_k.mean().item() == pytest.approx(a**0.5 * 1.5, abs=5 * std / n**0.5 + 1e-12)
    assert x_k.var().item() == pytest.approx(1 - a, rel=0.05, abs=1e-12)


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["linear", "cosine"]))
def test_ddim_to_zero_with_true_x0_recovers_x0(seed, kind):
    abar = SCHEDULES[kind]
    x0, noise, levels = _batch(seed, low=1)
    x_k = D.q_sample(x0, levels, abar, noise)
    out = D.ddim_step(x_k, x0, levels, torch.zeros_like(levels), abar)
    assert torch.equal(out, x0)


@FAST
@given(seed=st.integers(0, 2**31 - 1))
def test_ddim_with_true_x0_follows_the_same_noise(seed):
    # Deterministic DDIM with the true x0 implies the true eps, so it lands on q_sample(x0, j, eps).
    abar = SCHEDULES["linear"]
    x0, noise, levels = _batch(seed, low=1)
    to = (levels.double() * torch.rand(levels.shape, dtype=torch.float64)).long()
    x_k = D.q_sample(x0, levels, abar, noise)
    out = D.ddim_step(x_k, x0, levels, to, abar)
    torch.testing.assert_close(out, D.q_sample(x0, to, abar, noise))


@FAST
@given(seed=st.integers(0, 2**31 - 1), eta=st.sampled_from([0.0, 0.5, 1.0]))
def test_ddim_leaves_tokens_with_equal_levels_unchanged(seed, eta):
    abar = SCHEDULES["linear"]
    x_k, x0_pred, levels = _batch(seed)
    to = torch.where(torch.rand(levels.shape) < 0.5, levels, levels // 2)
    out = D.ddim_step(x_k, x0_pred, levels, to, abar, eta, torch.Generator().manual_seed(seed))
    same = (to == levels).unsqueeze(-1).expand_as(x_k)
    assert torch.equal(out[same], x_k[same])
    moved = (to < levels).unsqueeze(-1).expand_as(x_k)
    assert not torch.equal(out[moved], x_k[moved]) or not moved.any()


def test_ddim_eta_noise_is_reproducible_and_has_the_right_marginal():
    abar = SCHEDULES["linear"]
    n = 20_000
    x0 = torch.zeros(n, 1, 1, dtype=torch.float64)
    noise = torch.randn(n, 1, 1, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)
    frm, to = torch.full((n, 1), 600), torch.full((n, 1), 300)
    x_k = D.q_sample(x0, frm, abar, noise)
    a = D.ddim_step(x_k, x0, frm, to, abar, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = D.ddim_step(x_k, x0, frm, to, abar, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # With the true x0, DDIM's update keeps q's marginal at the new level: var 1 - abar_300.
    assert a.var().item() == pytest.approx(1 - abar[300].item(), rel=0.05)


def test_ddim_argument_errors():
    abar = SCHEDULES["linear"]
    x, _, levels = _batch(0, low=1)
    with pytest.raises(ValueError, match="Generator"):
        D.ddim_step(x, x, levels, levels - 1, abar, eta=0.5)
    with pytest.raises(ValueError, match="only denoises"):
        D.ddim_step(x, x, levels - 1, levels, abar)
