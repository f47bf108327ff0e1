"""The trainer on real expert data: windows, noise levels, learning, exact resume, DDP, CLI glue.

The data is real: the waypoint expert driving the dfplan Multi2D U-maze env (random goals, action
noise), packed into `Trajectories` as episodes of 300 steps.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.checkpoint import load_checkpoint
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.loss import diffusion_loss, noisy_batch, sample_levels
from dfplan.model import ModelConfig
from dfplan.normalizer import Normalizer
from dfplan.planner_config import PlannerConfig
from dfplan.policies import WaypointExpert
from dfplan.train import TrainConfig, recommended_config, train
from dfplan.train_cli import add_train_arguments, run_train
from dfplan.windows import WindowSampler

EPISODE_STEPS = 300
TINY_MODEL = ModelConfig(n_layer=2, n_head=2, n_embd=32, max_tokens=5)


def expert_trajectories(episodes: int, seed: int = 0, noise: float = 0.3) -> Trajectories:
    """Roll the waypoint expert in the real env; one Trajectories episode per env episode."""
    env = gym.make("dfplan/multi2d-umaze-v1")
    expert = WaypointExpert(env)
    rng = np.random.default_rng(seed)
    obs_rows, act_rows, rewards, goals = [], [], [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        expert.reset(seed=seed + episode)
        for _ in range(EPISODE_STEPS):
            action = np.clip(expert.act(obs, info) + rng.normal(0, noise, 2), -1, 1)
            goals.append(info["goal"])
            obs_rows.append(obs)
            act_rows.append(action)
            obs, reward, _, _, info = env.step(action)
            rewards.append(reward)
    env.close()
    n = len(obs_rows)
    timeouts = np.zeros(n, bool)
    timeouts[EPISODE_STEPS - 1 :: EPISODE_STEPS] = True
    return Trajectories(
        observations=np.asarray(obs_rows, np.float32),
        actions=np.asarray(act_rows, np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        infos={"goal": np.asarray(goals, np.float32)},
    )


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data() -> Trajectories:
    return expert_trajectories(episodes=10)  # 3,000 steps


def tiny_config(out: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        task="maze2d-umaze",
        steps=40,
        batch_size=16,
        lr=1e-3,
        warmup=20,
        window=50,
        log_every=10,
        checkpoint_every=1000,
        out=str(out),
        progress=False,
        model=TINY_MODEL,
    )
    return replace(base, **overrides)


# -- data ------------------------------------------------------------------------------------
def test_normalizer(data):
    norm = Normalizer.from_trajectories(data)
    z = norm.normalize_obs(data.observations)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-3)
    t = torch.from_numpy(data.actions)
    torch.testing.assert_close(norm.denormalize_act(norm.normalize_act(t)), t)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert all(np.array_equal(getattr(again, k), getattr(norm, k)) for k in norm.to_dict())


def test_windows_stay_inside_episodes_and_hold_the_right_frames(data):
    norm = Normalizer.from_trajectories(data)
    sampler = WindowSampler(data, window=50, frame_stack=10, normalizer=norm, seed=0)
    starts = sampler.starts.numpy()
    assert len(sampler) == 10 * (EPISODE_STEPS - 50)  # L - window starts per episode
    bounds = data.episode_bounds()
    episode = np.searchsorted(bounds[:, 1], starts, side="right")
    assert np.all(starts + 50 + 1 <= bounds[episode, 1])  # 51 observations, all in the episode
    # Content: token t, frame i = [obs_{s + 10t + i + 1}, action_{s + 10t + i}], normalised.
    first_obs, tokens, _ = sampler.sample(64)
    assert first_obs.shape == (64, 4) and tokens.shape == (64, 5, 60)
    raw_obs = norm.denormalize_obs(first_obs.numpy())
    for b in range(64):
        s = int(np.argmin(np.abs(data.observations - raw_obs[b]).sum(1)))
        frames = tokens[b].reshape(50, 6).numpy()
        np.testing.assert_allclose(
            norm.denormalize_obs(frames[:, :4]), data.observations[s + 1 : s + 51], atol=1e-4
        )
        np.testing.assert_allclose(
            norm.denormalize_act(frames[:, 4:]), data.actions[s : s + 50], atol=1e-5
        )
        assert s in set(starts.tolist())


def test_window_errors(data):
    norm = Normalizer.from_trajectories(data)
    with pytest.raises(UserError, match="no episode is long enough"):
        WindowSampler(data, window=300, frame_stack=10, normalizer=norm, seed=0)
    with pytest.raises(UserError, match="multiple of 10"):
        WindowSampler(data, window=55, frame_stack=10, normalizer=norm, seed=0)


# -- noise levels and loss -------------------------------------------------------------------
def test_noise_levels_are_independent_per_token_and_sample(data):
    norm = Normalizer.from_trajectories(data)
    sampler = WindowSampler(data, 50, 10, norm, seed=0)
    _, tokens, _ = sampler.sample(512)
    abar = torch.ones(1001)  # only the levels matter here
    _, levels, _ = noisy_batch(tokens, abar, 1000, torch.Generator().manual_seed(0))
    assert levels.shape == (512, 5)
    assert not torch.all(levels == levels[:, :1], dim=1).any()  # no window shares one level
    lv = levels.double()
    assert lv.min() >= 0 and lv.max() <= 1000
    assert abs(lv.mean().item() - 500) < 15  # uniform on {0..1000}
    corr = torch.corrcoef(torch.stack([lv[:, 0], lv[:, 1]]))[0, 1]
    assert abs(corr.item()) < 0.15  # neighbouring tokens are uncorrelated
    big = sample_levels((20_000, 2), 1000, torch.Generator().manual_seed(1))
    assert big.min() == 0 and big.max() == 1000  # both ends, clean level included


def test_loss_ignores_clean_tokens_and_reaches_every_parameter(data):
    torch.manual_seed(0)
    from dfplan.model import DiffusionForcingModel

    model = DiffusionForcingModel(TINY_MODEL)
    normalizer = Normalizer.from_trajectories(data)
    sampler = WindowSampler(data, 50, 10, normalizer, seed=0, goals=data.infos["goal"])
    first_obs, tokens, goals = sampler.sample(8)
    # Half the windows without their goal: both the goal input and "no goal" get gradients.
    gen = torch.Generator().manual_seed(0)
    loss = diffusion_loss(model, first_obs, tokens, gen, None, goals, 0.5)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# -- training --------------------------------------------------------------------------------
def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_tiny_dataset(data, tmp_path):
    stem = train(tiny_config(tmp_path, steps=250, log_every=25, checkpoint_every=250), data)
    losses = _losses(tmp_path)
    assert len(losses) == 10
    assert losses[-1] < 0.6 * losses[0], losses
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, meta = load_checkpoint(stem, task="maze2d-umaze")
    assert meta["train_step"] == 250 and meta["window"] == 50
    assert meta["config"] == TINY_MODEL.__dict__


def test_resume_is_exact(data, tmp_path):
    # Dropout and EMA on, so the global RNG and the EMA state must resume too.
    model = replace(TINY_MODEL, dropout=0.1)
    cfg = dict(steps=36, model=model, ema_decay=0.9, log_every=6, checkpoint_every=10)
    train(tiny_config(tmp_path / "straight", **cfg), data)
    train(tiny_config(tmp_path / "split", **{**cfg, "steps": 18}), data)
    train(tiny_config(tmp_path / "split", **{**cfg, "resume": True}), data)
    for name in ("latest.safetensors", "latest.resume.safetensors"):
        a = load_file(tmp_path / "straight" / name)
        b = load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")


def test_ema_only_reads_the_weights_so_ema_off_saves_the_same_run_s_raw_weights(data, tmp_path):
    # EMA changes only what is saved: docs/experiments.md compares an EMA run's raw weights with
    # a run without EMA on that ground.
    model = replace(TINY_MODEL, dropout=0.1)
    train(tiny_config(tmp_path / "ema", steps=30, model=model, ema_decay=0.9), data)
    train(tiny_config(tmp_path / "raw", steps=30, model=model, ema_decay=0.0), data)
    with_ema = load_file(tmp_path / "ema" / "latest.resume.safetensors")
    saved_raw = load_file(tmp_path / "raw" / "latest.safetensors")
    saved_ema = load_file(tmp_path / "ema" / "latest.safetensors")
    assert all(torch.equal(with_ema["model." + k], v) for k, v in saved_raw.items())
    assert not all(torch.equal(saved_ema[k], v) for k, v in saved_raw.items())


def test_run_folder_guards(data, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny_config(tmp_path, resume=True), data)
    train(tiny_config(tmp_path, steps=5), data)
    with pytest.raises(UserError, match="already holds a training run"):
        train(tiny_config(tmp_path, steps=5), data)
    with pytest.raises(UserError, match="model settings"):
        train(
            tiny_config(tmp_path, steps=10, resume=True, model=replace(TINY_MODEL, n_embd=64)), data
        )
    other = expert_trajectories(episodes=2, seed=99)
    with pytest.raises(UserError, match="other data"):
        train(tiny_config(tmp_path, steps=10, resume=True), other)


DDP_SCRIPT = """
import sys
import numpy as np
from dfplan.envs.trajectories import Trajectories
from dfplan.model import ModelConfig
from dfplan.train import TrainConfig, train

arrays = np.load(sys.argv[1], allow_pickle=False)
data = Trajectories(**{k: arrays[k] for k in arrays.files})
model = ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=5)
config = TrainConfig(task="maze2d-umaze", steps=6, batch_size=8, window=50, log_every=3,
                     out=sys.argv[2], progress=False, model=model)
train(config, data)
"""


def test_torchrun_two_process_gloo_smoke(data, tmp_path):
    np.savez(
        tmp_path / "data.npz",
        observations=data.observations,
        actions=data.actions,
        rewards=data.rewards,
        terminals=data.terminals,
        timeouts=data.timeouts,
    )
    (tmp_path / "run.py").write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--standalone", str(tmp_path / "run.py"), str(tmp_path / "data.npz"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Own session: on a timeout the whole group (torchrun and its workers) is killed.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun smoke run timed out")
    assert proc.returncode == 0, stderr[-3000:]
    files = sorted(p.name for p in out.iterdir() if p.name.startswith("latest"))
    assert files == [
        "latest.json",
        "latest.resume.json",
        "latest.resume.safetensors",
        "latest.safetensors",
    ]
    load_checkpoint(out / "latest", task="maze2d-umaze")
    info = json.loads((out / "latest.resume.json").read_text())
    assert info["world_size"] == 2 and info["step"] == 6
    state = load_file(out / "latest.resume.safetensors")
    assert not torch.equal(state["rng.data.rank0"], state["rng.data.rank1"])  # distinct windows


# -- CLI glue --------------------------------------------------------------------------------
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(list(argv))


def _write_d4rl(data: Trajectories, path: Path) -> None:
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            f[key] = getattr(data, key)


def test_run_train_cli_glue(data, tmp_path, capsys):
    source = tmp_path / "umaze.hdf5"
    _write_d4rl(data, source)
    out = tmp_path / "run"
    common = ["--dataset", str(source), "--out", str(out), "--no-progress", "--window", "50"]
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8"]
    assert run_train(_parse("maze2d-umaze", "--steps", "4", *common, *tiny)) == 0
    assert "checkpoint:" in capsys.readouterr().out
    # Resume takes the stored settings: no model flags needed, only the new step count.
    assert run_train(_parse("maze2d-umaze", "--steps", "6", "--resume", *common)) == 0
    _, meta = load_checkpoint(out / "latest")
    assert meta["train_step"] == 6 and meta["config"]["n_embd"] == 16
    assert meta["train_config"]["model"]["max_tokens"] == 5


def test_run_train_user_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            run_train(_parse("maze2d-umaze", "--device", "cuda", "--out", str(tmp_path)))
    with pytest.raises(UserError, match="unknown task"):
        run_train(_parse("maze2d-tiny"))


def test_recommended_configs_fit_their_windows():
    for task in ("maze2d-umaze", "maze2d-medium", "maze2d-large", "multi2d-large"):
        cfg = recommended_config(task)
        assert cfg.window % 10 == 0 and cfg.window // 10 == cfg.model.max_tokens
    assert recommended_config("maze2d-umaze").window == 300


def test_a_training_run_writes_its_recipes_planner_settings_in_full(data, tmp_path):
    from dfplan.recipe import model_recipe, planner_meta

    source = tmp_path / "umaze.hdf5"
    _write_d4rl(data, source)
    out = tmp_path / "run"
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8"]
    args = ["--dataset", str(source), "--out", str(out), "--no-progress", "--window", "50"]
    assert run_train(_parse("maze2d-umaze", "--steps", "2", *args, *tiny)) == 0
    _, meta = load_checkpoint(out / "latest")
    expected = planner_meta("umaze")
    assert meta["planner_tuning"] == expected["planner_tuning"]
    assert meta["planner"] == expected["planner"]  # every PlannerConfig field, written by code
    assert set(meta["planner"]) == {f.name for f in fields(PlannerConfig)}
    assert model_recipe("umaze")["planner"].items() <= meta["planner"].items()


def test_a_recipe_runs_its_stages_and_resumes_at_the_stage_reached(data, tmp_path, monkeypatch):
    from dfplan import recipe

    umaze = recipe._load("umaze")
    stages = [
        {"steps": 4, "batch_size": 8, "lr": 1e-3, "final_lr_ratio": 1.0, "window": 50},
        {"steps": 6, "lr": 5e-4, "ema_decay": 0.9},
    ]
    model = {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_tokens": 5}
    fake = {**umaze, "df": {**umaze["df"], "model": model, "stages": stages}}
    monkeypatch.setattr(recipe, "_load", lambda maze: fake)
    source = tmp_path / "umaze.hdf5"
    _write_d4rl(data, source)
    out = tmp_path / "run"
    args = ["--dataset", str(source), "--out", str(out), "--no-progress"]
    assert run_train(_parse("maze2d-umaze", *args)) == 0
    _, meta = load_checkpoint(out / "latest")
    assert meta["train_step"] == 6
    assert meta["train_config"]["lr"] == 5e-4 and meta["train_config"]["ema_decay"] == 0.9
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(1e-3 * 4 / 200) and lrs[-1] == pytest.approx(5e-4 * 6 / 200)
    # Resuming a finished recipe run has nothing left to do and keeps the checkpoint.
    assert run_train(_parse("maze2d-umaze", "--resume", *args)) == 0
    assert load_checkpoint(out / "latest")[1]["save_id"] == meta["save_id"]
