"""Helpers shared by several test files: the CLI as a subprocess, tiny checkpoints, trajectories.

Imported as `from helpers import ...` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from dfplan.checkpoint import save_checkpoint
from dfplan.envs.trajectories import Trajectories
from dfplan.model import DiffusionForcingModel, ModelConfig
from dfplan.normalizer import Normalizer

DFPLAN = (sys.executable, "-m", "dfplan")
# Positions around the U-maze's middle, unit spread; actions in [-1, 1].
TINY_NORMALIZER = Normalizer(
    np.array([2, 2, 0, 0], np.float32),
    np.array([1, 1, 1, 1], np.float32),
    np.zeros(2, np.float32),
    np.full(2, 0.5, np.float32),
)


def dfplan(
    *args: str, env: dict | None = None, runner: tuple = DFPLAN, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the CLI as a user does; one thread, as on the busy 2-core test machine."""
    return subprocess.run(
        [*runner, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )


def assert_clear_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def save_tiny_checkpoint(
    stem: Path, max_tokens: int = 4, sampling_steps: int = 4, task: str = "maze2d-umaze"
) -> Path:
    """A random-weight model of a few thousand parameters, saved as a real checkpoint."""
    torch.manual_seed(0)
    model = DiffusionForcingModel(
        ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=max_tokens, frame_stack=5)
    )
    planner = {"sampling_steps": sampling_steps, "mcg_samples": 2, "refresh_rows": 1}
    meta = {"task": task, "normalizer": TINY_NORMALIZER.to_dict(), "planner": planner}
    save_checkpoint(stem, model, meta)
    return stem


def trajectories(observations: np.ndarray, actions: np.ndarray) -> Trajectories:
    """Trajectories around the given arrays: zero rewards, one episode (no ends marked)."""
    n = len(observations)
    return Trajectories(
        observations, actions, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
    )


def write_random_dataset(path: Path, rows: int = 400) -> Path:
    """A D4RL-format hdf5 of one episode of random U-maze-sized rows: enough to train on."""
    from dfplan.envs.datasets import write_d4rl_hdf5

    rng = np.random.default_rng(0)
    observations = rng.normal(2, 1, (rows, 4)).astype(np.float32)
    write_d4rl_hdf5(
        trajectories(observations, rng.uniform(-1, 1, (rows, 2)).astype(np.float32)), path
    )
    return path


def assert_vector_batch_equals_singles(make_policy, n: int, steps: int, seed: int = 50) -> None:
    """A policy acting on `n` vector envs (multi2d-umaze, env k reset with seed k) gives, within
    float tolerance, the actions of `n` single policies seeded seed + k on single envs.

    make_policy(): a fresh policy; actions must be (n, 2) in [-1, 1] batched and (2,) single.
    """
    import gymnasium as gym

    envs = gym.make_vec("dfplan/multi2d-umaze-v1", num_envs=n, vectorization_mode="sync")
    obs, info = envs.reset(seed=list(range(n)))
    batched = make_policy()
    batched.reset(seed=seed)
    batch_actions = []
    for _ in range(steps):
        a = batched.act(obs, info)
        assert a.shape == (n, 2) and np.all(np.abs(a) <= 1.0)
        batch_actions.append(a)
        obs, _, _, _, info = envs.step(a)
    for k in range(n):
        env = gym.make("dfplan/multi2d-umaze-v1")
        o, i = env.reset(seed=k)
        single = make_policy()
        single.reset(seed=seed + k)
        for step in range(steps):
            a = single.act(o, i)
            assert a.shape == (2,)
            np.testing.assert_allclose(a, batch_actions[step][k], rtol=1e-4, atol=1e-5)
            o, _, _, _, i = env.step(a)
