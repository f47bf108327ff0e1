"""Fuzzing: the planner policy on arbitrary inputs and settings, the env under arbitrary pushes.

Policy: whatever the finite observations (extreme values, positions outside the maze), goals in
the maze, batch sizes and planner settings, actions are finite, in [-1, 1] and shaped like the
batch; the only exceptions are the documented ones (ValueError for NaN or infinite observations
and for goals outside the maze, UserError for invalid settings). Env: long runs of random and
held extreme pushes never take the ball through a wall and never produce NaN. Examples are
bounded (`max_examples`) so CI stays fast.
"""

import gymnasium as gym
import numpy as np
import pytest
from helpers import save_tiny_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.errors import UserError
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

FUZZ = settings(
    max_examples=25,
    derandomize=True,  # the same examples on every run: CI results do not depend on luck
    database=None,
    deadline=None,  # a busy 2-core machine makes single examples slow now and then
    suppress_health_check=[HealthCheck.too_slow],
)
# The U-maze inside its border walls, in D4RL's qpos frame: cells 1..3, each the unit square
# centred 0.2 below its index (walls sit at world (i + 1, j + 1), the ball's body at 1.2).
UMAZE_LOW, UMAZE_HIGH = 0.3, 3.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("fuzz") / "tiny")


finite = st.floats(allow_nan=False, allow_infinity=False)  # up to +-1.8e308
plausible = st.floats(-10, 10)
goal_in_maze = hnp.arrays(np.float64, 2, elements=st.floats(UMAZE_LOW, UMAZE_HIGH))
planner_settings = st.fixed_dictionaries(
    {
        "sampling_steps": st.integers(1, 8),
        "mcg_samples": st.integers(1, 4),
        "refresh_rows": st.integers(1, 8),
        "guidance_scale": st.floats(0, 1e3),
        "horizon_tokens": st.integers(0, 6),  # 0: the model's 4; above 4: capped to it
        "uncertainty": st.floats(0, 8),  # 0: full sequence; up to one token at a time
        "goal_weight": st.floats(0, 5),
        "warm_candidates": st.integers(1, 3),
    }
)


@st.composite
def observation_batches(draw, steps: int = 3):
    """`steps` consecutive (B, 4) observation batches, B in 1..8, or (4,) for a single env."""
    batch = draw(st.integers(0, 8))  # 0: a single env, unbatched
    shape = (4,) if batch == 0 else (batch, 4)
    values = st.one_of(plausible, finite)
    return [draw(hnp.arrays(np.float64, shape, elements=values)) for _ in range(steps)]


@FUZZ
@given(observations=observation_batches(), goal=goal_in_maze, overrides=planner_settings)
def test_policy_actions_are_finite_bounded_and_shaped(checkpoint, observations, goal, overrides):
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", checkpoint, "cpu", **overrides)
    policy.reset(seed=0)
    for obs in observations:
        action = policy.act(obs, {"goal": goal})
        assert action.shape == obs.shape[:-1] + (2,)
        assert np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.0), (obs, action)


@FUZZ
@given(
    overrides=st.fixed_dictionaries(
        {
            "sampling_steps": st.integers(-2, 4),
            "mcg_samples": st.integers(-2, 4),
            "refresh_rows": st.integers(-2, 4),
            "guidance_scale": st.one_of(
                st.floats(-2, 2), st.sampled_from([1e7, 1e30, float("inf"), float("nan")])
            ),
            "horizon_tokens": st.integers(-2, 4),
            "action_step": st.one_of(st.floats(-2, 2), st.sampled_from([float("nan")])),
        }
    )
)
def test_invalid_planner_settings_get_one_clear_error(checkpoint, overrides):
    valid = (
        min(overrides["sampling_steps"], overrides["mcg_samples"], overrides["refresh_rows"]) >= 1
        and 0 <= overrides["guidance_scale"] <= 1e6
        and overrides["horizon_tokens"] >= 0
        and 0 <= overrides["action_step"] <= 1e6
    )
    if valid:
        policy = DiffusionForcingPolicy.from_pretrained(
            "maze2d-umaze", checkpoint, "cpu", **overrides
        )
        assert np.all(np.isfinite(policy.act(np.array([1.0, 1.0, 0, 0]), {"goal": [3.0, 1.0]})))
    else:
        with pytest.raises(UserError, match="bad planner settings") as e:
            DiffusionForcingPolicy.from_pretrained("maze2d-umaze", checkpoint, "cpu", **overrides)
        assert "\n" not in str(e.value)


@FUZZ
@given(
    observations=observation_batches(steps=1),
    where=st.integers(0, 31),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_nan_or_infinite_observations_are_refused(checkpoint, observations, where, bad):
    obs = observations[0].copy()
    obs.flat[where % obs.size] = bad
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", checkpoint, "cpu")
    policy.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        policy.act(obs, {"goal": [3.0, 1.0]})


@FUZZ
@given(
    goal=hnp.arrays(np.float64, 2, elements=st.one_of(st.floats(0, 4), st.floats())),
    batch=st.integers(1, 8),
)
def test_goals_outside_the_maze_are_refused(checkpoint, goal, batch):
    policy = DiffusionForcingPolicy.from_pretrained("maze2d-umaze", checkpoint, "cpu")
    policy.reset(seed=0)
    obs = np.tile([1.0, 1.0, 0.0, 0.0], (batch, 1))
    if np.all((goal >= UMAZE_LOW) & (goal <= UMAZE_HIGH)):  # False for NaN
        assert np.all(np.isfinite(policy.act(obs, {"goal": goal})))
    else:
        with pytest.raises(ValueError, match=r"is outside the umaze maze: goals lie in x \[0.3"):
            policy.act(obs, {"goal": goal})


# -- the env ---------------------------------------------------------------------------------
RADIUS = 0.1  # the ball
# Contacts are soft: at the top speed (5 per axis) the ball sinks into a wall by up to 0.048
# (measured); a ball that sinks deeper than this is going through.
MAX_SINK = 0.06


def wall_clearance(layout: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Distance from each (x, y) ball centre (qpos frame) to the nearest wall box."""
    walls = np.argwhere(layout == "#") - 0.2  # box centres; each box is 1 x 1
    gap = np.abs(positions[:, None, :] - walls[None]) - 0.5  # (N, walls, 2)
    return np.linalg.norm(np.maximum(gap, 0.0), axis=2).min(axis=1)


def pushes(rng: np.random.Generator, steps: int) -> np.ndarray:
    """Random actions in segments: uniform, held corner pushes, held huge pushes (the env clips
    them), wild Gaussian ones, and rests."""
    out, t = np.empty((steps, 2)), 0
    while t < steps:
        n = min(int(rng.integers(1, 200)), steps - t)
        kind = rng.integers(5)
        if kind == 0:
            out[t : t + n] = rng.uniform(-1, 1, (n, 2))
        elif kind == 1:
            out[t : t + n] = rng.choice([-1.0, 1.0], 2)
        elif kind == 2:
            out[t : t + n] = rng.choice([-1e6, 0.0, 1e6], 2)
        elif kind == 3:
            out[t : t + n] = rng.normal(0, 3, (n, 2))
        else:
            out[t : t + n] = 0.0
        t += n
    return out


def run_pushes(env, actions) -> np.ndarray:
    """Step the raw env (no time limit) through `actions`; (N, 4) observations."""
    return np.array([env.step(a)[0] for a in actions])


@pytest.mark.parametrize("name", ["maze2d-large", "maze2d-umaze"])
def test_walls_hold_over_20000_steps_of_random_and_extreme_pushes(name):
    env = gym.make(f"dfplan/{name}-v1").unwrapped  # one long episode, no time limit
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    obs = run_pushes(env, pushes(rng, 20_000))
    assert np.all(np.isfinite(obs))
    clearance = wall_clearance(env.layout, obs[:, :2])
    assert clearance.min() >= RADIUS - MAX_SINK, obs[np.argmin(clearance)]
    # The pushes did drive the ball into walls, so the check above was put to the test.
    assert np.mean(clearance < RADIUS + 0.01) > 0.05


@FUZZ
@given(
    actions=hnp.arrays(np.float64, (300, 2), elements=st.one_of(finite, st.sampled_from([1, -1]))),
    seed=st.integers(0, 2**16),
)
def test_walls_hold_under_arbitrary_finite_actions(actions, seed):
    env = gym.make("dfplan/maze2d-umaze-v1").unwrapped
    env.reset(seed=seed)
    obs = run_pushes(env, actions)
    assert np.all(np.isfinite(obs))
    assert wall_clearance(env.layout, obs[:, :2]).min() >= RADIUS - MAX_SINK
