import os

import h5py
import minari
import numpy as np
import pytest
from helpers import trajectories

from dfplan.envs import get_task
from dfplan.envs.datasets import (
    DataConfig,
    dataset_path,
    generate_stream,
    load_trajectories,
    make_dataset,
    parse_dwell,
    write_d4rl_hdf5,
)
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError

UMAZE = get_task("maze2d-umaze")


def small(steps=2500, **kw):
    return DataConfig("maze2d-umaze", steps, **kw)


def test_stream_is_deterministic_for_a_seed():
    a = generate_stream(small(seed=1), UMAZE, progress=False)
    b = generate_stream(small(seed=1), UMAZE, progress=False)
    c = generate_stream(small(seed=2), UMAZE, progress=False)
    np.testing.assert_array_equal(a["observations"], b["observations"])
    np.testing.assert_array_equal(a["actions"], b["actions"])
    assert not np.array_equal(a["actions"], c["actions"])


def test_dwelling_holds_at_targets():
    """With dwelling the expert sits at its target far more often than without."""
    dwell = generate_stream(small(8000, noise=0.0, dwell_prob=1.0), UMAZE, progress=False)
    pure = generate_stream(small(8000, noise=0.0, dwell_prob=0.0), UMAZE, progress=False)
    slow = [np.mean(np.linalg.norm(s["observations"][:, 2:], axis=1) < 0.05) for s in (dwell, pure)]
    assert slow[0] > slow[1] + 0.2
    # Pure D4RL procedure: the target switches right when the old target cell is reached (or
    # after the time limit without reaching it).
    switches = np.flatnonzero(np.any(np.diff(pure["goals"], axis=0) != 0, axis=1))
    assert len(switches) > 10
    previous = -1
    for t in switches:
        cell = np.round(pure["goals"][t])
        reached = np.linalg.norm(pure["observations"][t, :2] - cell) < 0.1
        assert reached or t - previous >= UMAZE.max_episode_steps, t
        previous = t


@pytest.fixture
def short_episodes(monkeypatch):
    """Cut streams every 1000 steps so that small datasets hold several episodes."""
    from dfplan.envs import datasets

    monkeypatch.setattr(datasets, "EPISODE_STEPS", 1000)


def test_minari_dataset_roundtrip_and_reuse(short_episodes):
    path = make_dataset(small(), UMAZE, progress=False)
    ds = minari.load_dataset(UMAZE.dataset_id)
    assert ds.total_steps == 2500
    assert ds.total_episodes == 3  # cut every 1000 steps
    ep = next(iter(ds.iterate_episodes()))
    assert set(ep.infos) >= {"goal", "qpos", "qvel"}
    np.testing.assert_array_equal(ep.infos["qpos"], ep.observations[:, :2])
    mtime = os.path.getmtime(path / "data")
    make_dataset(small(seed=5), UMAZE, progress=False)  # exists: reused
    assert os.path.getmtime(path / "data") == mtime
    traj = load_trajectories(UMAZE.dataset_id, UMAZE)
    assert traj.metadata["dfplan_data_config"]["dwell_prob"] == 0.5
    make_dataset(small(seed=5, dwell_prob=0.0), UMAZE, force=True, progress=False)
    traj = load_trajectories(UMAZE.dataset_id, UMAZE)
    assert traj.metadata["dfplan_data_config"]["dwell_prob"] == 0.0
    assert not any(p.name.startswith(".dfplan") for p in path.parent.parent.iterdir())


def test_reader_gives_identical_arrays_for_minari_and_d4rl_hdf5(tmp_path, short_episodes):
    make_dataset(small(), UMAZE, progress=False)
    # The same stream, written independently in D4RL's layout.
    s = generate_stream(small(), UMAZE, progress=False)
    n = len(s["actions"])
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    timeouts[-1] = True
    obs = s["observations"][:-1]
    direct = Trajectories(
        obs,
        s["actions"],
        s["rewards"],
        np.zeros(n, bool),
        timeouts,
        {"goal": s["goals"][:-1], "qpos": obs[:, :2], "qvel": obs[:, 2:]},
    )
    write_d4rl_hdf5(direct, tmp_path / "umaze.hdf5")
    a = load_trajectories(UMAZE.dataset_id)
    b = load_trajectories(tmp_path / "umaze.hdf5")
    for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
        assert getattr(a, key).dtype == getattr(b, key).dtype
    assert a.infos.keys() == b.infos.keys()
    for key in a.infos:
        np.testing.assert_array_equal(a.infos[key], b.infos[key])
    np.testing.assert_array_equal(a.episode_bounds(), [[0, 1000], [1000, 2000], [2000, 2500]])


def test_bad_datasets_give_clear_errors(tmp_path):
    with pytest.raises(UserError, match="dfplan data"):
        load_trajectories("dfplan/maze2d-umaze-expert-v1")
    bad = tmp_path / "corrupt.hdf5"
    bad.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_trajectories(bad)
    good = tmp_path / "good.hdf5"
    n = 50
    traj = trajectories(np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32))
    write_d4rl_hdf5(traj, good)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_trajectories(truncated)
    wrong = tmp_path / "wrong.hdf5"
    wide = trajectories(np.zeros((n, 17), np.float32), np.zeros((n, 6), np.float32))
    write_d4rl_hdf5(wide, wrong)
    with pytest.raises(UserError, match="needs 4 and 2"):
        load_trajectories(wrong, UMAZE)
    missing_key = tmp_path / "missing.hdf5"
    with h5py.File(missing_key, "w") as f:
        f["observations"] = np.zeros((n, 4))
    with pytest.raises(UserError, match="missing keys"):
        load_trajectories(missing_key)


def test_parse_dwell():
    assert parse_dwell("0") == (0.0, 0, 0)
    assert parse_dwell("0.5,50,100") == (0.5, 50, 100)
    for bad in ("x", "0.5,100,50", "2,1,2", "0.5,1"):
        with pytest.raises(UserError):
            parse_dwell(bad)


def test_dataset_lands_only_when_complete():
    assert not dataset_path(UMAZE.dataset_id).exists()
    with pytest.raises(UserError, match="positive"):
        make_dataset(small(0), UMAZE)
    assert not dataset_path(UMAZE.dataset_id).exists()
