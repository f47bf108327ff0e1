import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dfplan.schedules import autoregressive, full_sequence, pyramid, to_train_levels, validate


@given(tokens=st.integers(1, 40), steps=st.integers(1, 50), u=st.floats(0, 3))
def test_all_builtin_schedules_are_valid(tokens, steps, u):
    for k in (
        full_sequence(tokens, steps),
        autoregressive(tokens, steps),
        pyramid(tokens, steps, u),
    ):
        validate(k, steps)
        assert k.shape[1] == tokens
        assert (k[0] == steps).all()  # sampling starts from pure noise


def test_shapes_and_lags():
    k = full_sequence(5, 10)
    assert k.shape == (11, 5) and (k == k[:, :1]).all()
    k = autoregressive(3, 4)
    assert k.shape == (13, 3)
    assert k[4].tolist() == [0, 4, 4]  # token 0 is clean before token 1 moves
    k = pyramid(6, 10)
    assert k.shape == (10 + 5 + 1, 6)
    # Each token lags the previous one by exactly one row while both are in motion.
    for m in range(1, 10):
        assert k[m, 0] == 10 - m and k[m, 1] == min(10, 10 - m + 1)
    assert (k[:, 1:] >= k[:, :-1]).all()  # far tokens are never cleaner than near ones
    steep = pyramid(6, 10, uncertainty=2.0)
    assert steep.shape[0] == 10 + 10 + 1 and steep[5, 5] == 10


def test_validate_rejects_bad_matrices():
    good = pyramid(4, 5)
    rising = good.clone()
    rising[[0, 1]] = good[[1, 0]]
    with pytest.raises(ValueError, match="row 1 does"):
        validate(rising, 5)
    bad = good.clone()
    bad[-1, 2] = 1
    with pytest.raises(ValueError, match="last row"):
        validate(bad, 5)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        validate(good + 1, 5)
    with pytest.raises(ValueError, match="matrix"):
        validate(torch.zeros(3), 5)
    with pytest.raises(ValueError, match="integers"):
        validate(good.double() / 2, 5)


def test_train_levels_span_the_range():
    levels = to_train_levels(torch.arange(0, 21), 20, 1000)
    assert levels[0] == 0 and levels[-1] == 1000
    assert (levels[1:] > levels[:-1]).all()
