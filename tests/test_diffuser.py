"""The Diffuser baseline: temporal U-Net, inpainted sampling, PD tracking, training in the shared
trainer, checkpoints of the right kind, the policy in batches and `dfplan bench --method diffuser`.

Models are a few thousand parameters; the whole file runs in well under a minute on one thread.
"""

import argparse
import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import TINY_NORMALIZER, assert_vector_batch_equals_singles, dfplan
from safetensors.torch import load_file

from dfplan import cli  # importing dfplan registers the env ids
from dfplan.checkpoint import load_checkpoint, save_checkpoint
from dfplan.envs.datasets import write_d4rl_hdf5
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.policies import WaypointExpert
from dfplan.policies.diffuser import DiffuserConfig, DiffuserPlanner, DiffuserPolicy, pd_action
from dfplan.policies.diffuser_unet import TemporalUNet, UNetConfig, window_to_plan
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy
from dfplan.train import TrainConfig, recommended_config, train
from dfplan.train_cli import add_train_arguments, run_train

TINY = UNetConfig(horizon=16, dim=8, dim_mults=(1, 2), num_levels=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def save_tiny_diffuser(stem, planner: dict | None = None, task: str = "maze2d-umaze"):
    torch.manual_seed(0)
    meta = {"task": task, "normalizer": TINY_NORMALIZER.to_dict(), "planner": planner or {}}
    save_checkpoint(stem, TemporalUNet(TINY), meta)
    return stem


@pytest.fixture
def tiny(tmp_path):
    return save_tiny_diffuser(tmp_path / "tiny")


@pytest.fixture(scope="module")
def data() -> Trajectories:
    """The waypoint expert in the Multi2D U-maze: 6 episodes of 120 steps, action noise 0.3."""
    env = gym.make("dfplan/multi2d-umaze-v1")
    expert, rng = WaypointExpert(env), np.random.default_rng(0)
    obs_rows, act_rows = [], []
    for episode in range(6):
        obs, info = env.reset(seed=episode)
        expert.reset(seed=episode)
        for _ in range(120):
            action = np.clip(expert.act(obs, info) + rng.normal(0, 0.3, 2), -1, 1)
            obs_rows.append(obs)
            act_rows.append(action)
            obs, _, _, _, info = env.step(action)
    n = len(obs_rows)
    timeouts = np.zeros(n, bool)
    timeouts[119::120] = True
    return Trajectories(
        np.asarray(obs_rows, np.float32),
        np.asarray(act_rows, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, bool),
        timeouts,
    )


def tiny_train_config(out, **overrides) -> TrainConfig:
    base = TrainConfig(
        task="maze2d-umaze",
        model_kind="diffuser",
        model=TINY,
        window=TINY.horizon,
        steps=200,
        batch_size=16,
        lr=3e-3,
        warmup=20,
        log_every=20,
        checkpoint_every=1000,
        out=str(out),
        progress=False,
    )
    return replace(base, **overrides)


# -- the model -------------------------------------------------------------------------------
@pytest.mark.parametrize("horizon", [128, 256, 384])
def test_unet_maps_plans_to_plans_at_the_recommended_horizons(horizon):
    torch.manual_seed(0)
    model = TemporalUNet(UNetConfig(horizon=horizon, dim=8, dim_mults=(1, 2, 4), num_levels=8))
    x = torch.randn(2, horizon, 6)
    out = model(x, torch.tensor([1, 8]))
    assert out.shape == (2, horizon, 6) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], model(x, torch.tensor([8, 8]))[0])  # the level matters
    for task, h in (("maze2d-umaze", 128), ("maze2d-medium", 256), ("maze2d-large", 384)):
        cfg = recommended_config(task, "diffuser")
        assert cfg.window == cfg.model.horizon == h
        cfg.model.validate()


def test_unet_config_checks():
    with pytest.raises(ValueError, match="multiple of 4"):
        UNetConfig(horizon=130).validate()
    with pytest.raises(ValueError, match="divide by 8"):
        UNetConfig(dim=12).validate()


def test_window_to_plan_puts_each_state_beside_its_action():
    first = torch.tensor([[0.0, 0, 0, 0]])
    # frame t = [o_{t+1}, a_t] with o_t = (t, t, t, t) and a_t = (-t, -t)
    frames = torch.tensor([[[t + 1.0] * 4 + [-t] * 2 for t in range(3)]])
    plan = window_to_plan(first, frames)
    expected = torch.tensor([[[t * 1.0] * 4 + [-t] * 2 for t in range(3)]])
    torch.testing.assert_close(plan, expected)


# -- sampling and tracking -------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{}, {"sampling_steps": 3, "eta": 0.0}])
def test_inpainting_holds_the_first_and_last_states(tiny, settings):
    model, _ = load_checkpoint(tiny, kind="diffuser")
    planner = DiffuserPlanner(model, TINY_NORMALIZER, DiffuserConfig(**settings))
    planner.reset(3, seeds=[0, 1, 2])
    obs = np.array([[1.0, 1.0, 0.3, -0.2], [3.0, 1.0, 0.0, 0.0], [2.5, 3.0, -1.0, 1.0]])
    goals = np.array([[1.0, 1.0], [3.0, 3.0], [1.2, 0.8]])
    states, actions = planner.plan(obs, goals, np.arange(3))
    assert states.shape == (3, 16, 4) and actions.shape == (3, 16, 2)
    np.testing.assert_allclose(states[:, 0], obs, atol=1e-5)
    np.testing.assert_allclose(states[:, -1, :2], goals, atol=1e-5)
    np.testing.assert_allclose(states[:, -1, 2:], 0.0, atol=1e-5)
    assert np.ptp(states[:, 1:-1], axis=1).min() > 0  # the middle is sampled, not copied


def test_pd_tracking_action_formula():
    obs = np.array([[1.0, 2.0, 0.5, -0.5], [0.0, 0.0, 0.0, 0.0]])
    nxt = np.array([[1.1, 2.3, 0.7, -0.4], [3.0, -2.0, 0.0, 0.0]])
    # (s_next[:2] - pos) + (s_next[2:] - vel), clipped to [-1, 1]
    np.testing.assert_allclose(pd_action(obs, nxt), [[0.1 + 0.2, 0.3 + 0.1], [1.0, -1.0]])


class FixedPlans:
    """Stands in for DiffuserPlanner.plan: known plans, and a count of the calls."""

    def __init__(self, horizon: int):
        self.calls, self.h = [], horizon

    def __call__(self, obs, goals, envs):
        self.calls.append(list(envs))
        t = np.arange(self.h)[None, :, None]
        states = obs[:, None, :] + 0.01 * t * np.array([1.0, 2.0, 3.0, 4.0])
        actions = np.broadcast_to(0.1 * np.arange(self.h)[None, :, None], (len(envs), self.h, 2))
        return states, actions.copy()


def test_policy_plans_once_and_tracks_the_plan_by_index(tiny):
    policy = DiffuserPolicy.from_pretrained("maze2d-umaze", tiny, "cpu")
    policy.planner.plan = fake = FixedPlans(16)
    obs0 = np.array([2.0, 2.0, 0.0, 0.0])
    info = {"goal": np.array([1.0, 1.0])}
    policy.reset(seed=0)
    plan0 = obs0[None, :] + 0.01 * np.arange(16)[:, None] * np.array([1.0, 2.0, 3.0, 4.0])
    obs = obs0
    for t in range(20):
        action = policy.act(obs, info)
        nxt = plan0[min(t + 1, 15)].copy()
        if t + 1 >= 16:
            nxt[2:] = 0.0  # past the end: the last state, at rest
        np.testing.assert_allclose(action, pd_action(obs[None], nxt[None])[0])
        obs = obs + np.array([0.001, 0.0, 0.01, 0.0])  # a small move: same episode
    assert fake.calls == [[0]]  # one plan per episode
    policy.act(obs, {"goal": np.array([3.0, 3.0])})  # a new goal: a new plan
    assert fake.calls == [[0], [0]]


def test_replan_every_and_diffused_actions(tiny):
    policy = DiffuserPolicy.from_pretrained("maze2d-umaze", tiny, "cpu", replan_every=5)
    policy.planner.plan = fake = FixedPlans(16)
    policy.reset(seed=0, goal=[1.0, 1.0])
    obs = np.array([[2.0, 2.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]])
    for _ in range(11):
        policy.act(obs)
    assert fake.calls == [[0, 1], [0, 1], [0, 1]]  # steps 0, 5, 10
    policy = DiffuserPolicy.from_pretrained("maze2d-umaze", tiny, "cpu", diffused_actions=True)
    policy.planner.plan = fake = FixedPlans(16)
    policy.reset(seed=0, goal=[1.0, 1.0])
    actions = [policy.act(obs[0]) for _ in range(18)]
    expected = np.clip(0.1 * np.r_[np.arange(16), 0, 1], -1, 1)  # the plan's own actions
    np.testing.assert_allclose([a[0] for a in actions], expected)
    assert len(fake.calls) == 2  # the plan's 16 actions ran out: a new plan


def test_vector_env_batch_equals_single_policies(tiny):
    assert_vector_batch_equals_singles(
        lambda: DiffuserPolicy.from_pretrained("multi2d-umaze", tiny, "cpu", replan_every=3),
        n=4,
        steps=6,
    )
    # The seed matters: another seed gives another plan from the same state.
    o, i = gym.make("dfplan/multi2d-umaze-v1").reset(seed=3)
    plans = []
    for seed in (50, 51):
        policy = DiffuserPolicy.from_pretrained("multi2d-umaze", tiny, "cpu")
        policy.reset(seed=seed)
        policy.act(o, i)
        plans.append(policy.states[0])
    assert not np.allclose(*plans)


# -- training and checkpoints ----------------------------------------------------------------
def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_tiny_dataset(data, tmp_path):
    stem = train(tiny_train_config(tmp_path, model=replace(TINY, dim=16)), data)
    losses = _losses(tmp_path)
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    model, meta = load_checkpoint(stem, task="maze2d-umaze", kind="diffuser")
    assert isinstance(model, TemporalUNet) and meta["model_kind"] == "diffuser"
    assert meta["train_step"] == 200 and meta["train_config"]["model_kind"] == "diffuser"


def test_resume_is_exact(data, tmp_path):
    cfg = dict(steps=8, ema_decay=0.9, log_every=2, checkpoint_every=4)
    train(tiny_train_config(tmp_path / "straight", **cfg), data)
    train(tiny_train_config(tmp_path / "split", **{**cfg, "steps": 4}), data)
    train(tiny_train_config(tmp_path / "split", **{**cfg, "resume": True}), data)
    for name in ("latest.safetensors", "latest.resume.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_save_load_round_trip_and_kind_mismatch(tiny, tmp_path):
    model, meta = load_checkpoint(tiny, kind="diffuser")
    assert meta["model_kind"] == "diffuser" and model.config == TINY
    torch.manual_seed(0)
    fresh = TemporalUNet(TINY).eval()  # the same init as the saved one
    x, lv = torch.randn(2, 16, 6), torch.tensor([3, 8])
    torch.testing.assert_close(model(x, lv), fresh(x, lv), rtol=0, atol=0)
    with pytest.raises(UserError, match="holds a 'diffuser' model, not a 'df' one"):
        load_checkpoint(tiny)  # the default kind is df
    with pytest.raises(UserError, match="--method diffuser"):
        DiffusionForcingPolicy.from_pretrained("maze2d-umaze", tiny, "cpu")
    from helpers import save_tiny_checkpoint

    df = save_tiny_checkpoint(tmp_path / "df")
    with pytest.raises(UserError, match="holds a 'df' model, not a 'diffuser' one"):
        DiffuserPolicy.from_pretrained("maze2d-umaze", df, "cpu")
    with pytest.raises(UserError, match="not the large maze"):
        DiffuserPolicy.from_pretrained("maze2d-large", tiny, "cpu")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


def test_train_cli_glue(data, tmp_path, capsys):
    write_d4rl_hdf5(data, tmp_path / "umaze.hdf5")
    out = tmp_path / "run"
    common = ["--model", "diffuser", "--dataset", str(tmp_path / "umaze.hdf5"), "--no-progress"]
    common += ["--out", str(out), "--window", "16", "--dim", "8", "--batch-size", "4"]
    assert run_train(_parse("maze2d-umaze", "--steps", "2", *common)) == 0
    _, meta = load_checkpoint(out / "latest", kind="diffuser")
    assert meta["config"]["horizon"] == 16 and meta["config"]["dim"] == 8
    assert run_train(_parse("maze2d-umaze", "--steps", "3", "--resume", "--out", str(out))) == 0
    assert json.loads((out / "latest.json").read_text())["train_step"] == 3
    with pytest.raises(UserError, match="--n-layer is not a setting of the diffuser model"):
        run_train(_parse("maze2d-umaze", "--n-layer", "2", *common))
    with pytest.raises(UserError, match="--dim is not a setting of the df model"):
        run_train(_parse("maze2d-umaze", "--dim", "8", "--out", str(tmp_path / "df")))
    with pytest.raises(UserError, match="trains a 'diffuser' model"):
        run_train(_parse("maze2d-umaze", "--model", "df", "--resume", "--out", str(out)))


# -- the bench command -----------------------------------------------------------------------
def test_bench_diffuser_end_to_end(tmp_path, tiny):
    r = dfplan(
        "bench",
        "maze2d-umaze",
        "--method",
        "diffuser",
        "--checkpoint",
        str(tiny),
        "--episodes",
        "2",
        "--out",
        str(tmp_path / "res"),
        "--device",
        "cpu",
        "--planner",
        "sampling_steps=4",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "res" / "maze2d-umaze_diffuser.json").read_text())
    assert result["method"] == "diffuser" and [e["seed"] for e in result["per_episode"]] == [0, 1]
    assert result["config"] == {**DiffuserConfig().__dict__, "sampling_steps": 4}
    assert "one plan per episode" in result["protocol"]


def test_bench_without_a_shipped_diffuser_checkpoint_says_how_to_train(
    monkeypatch, tmp_path, capsys
):
    from dfplan import checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "none")
    code = cli.main(["bench", "maze2d-large", "--method", "diffuser", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no trained diffuser checkpoint ships for maze2d-large" in err[0]
    assert "dfplan train maze2d-large --model diffuser" in err[0]


def test_every_shipped_diffuser_checkpoint_loads_and_acts():
    """Shipped baselines (dfplan/checkpoints/<maze>-diffuser.*) load and plan; none: nothing."""
    from dfplan.checkpoint import shipped_checkpoints

    for stem in shipped_checkpoints("diffuser"):
        task = stem.name.removesuffix("-diffuser")
        policy = DiffuserPolicy.from_pretrained(task, device="cpu", sampling_steps=2)
        env = gym.make(f"dfplan/{task}-v1")
        obs, info = env.reset(seed=0)
        policy.reset(seed=0)
        action = policy.act(obs, info)
        assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    assert all(not s.name.endswith("-diffuser") for s in shipped_checkpoints("df"))
