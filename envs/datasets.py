"""Expert datasets: D4RL's generation procedure, written as Minari datasets; readers for Minari
datasets and D4RL-format hdf5 files, both returning `Trajectories`.

Generation (D4RL's `generate_maze2d_datasets.py` procedure): one long stream in one env that is
never reset; the waypoint expert drives to a random target (a free or goal cell + U(-0.1, 0.1));
when it reaches the target cell (within 0.1), or after the maze's time limit without reaching it,
a new random target is drawn. Gaussian action noise N(0, sigma) is added, then actions are
clipped to [-1, 1]. Two documented departures from D4RL's script:
- dwelling (optional, on by default): on reaching a target, with probability P the expert holds
  it (PD on the target) for MIN..MAX steps before the next target is drawn;
- D4RL's script records the pre-switch observation twice at a target switch; we do not.
The stream is cut into Minari episodes of `EPISODE_STEPS` steps (truncation at each cut). Each
episode stores T actions and T + 1 observations; infos hold goal, qpos, qvel per observation.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from dfplan.envs.maze2d import Maze2DEnv
from dfplan.envs.tasks import Task
from dfplan.envs.trajectories import Trajectories
from dfplan.errors import UserError
from dfplan.policies.expert import WaypointFollower

EPISODE_STEPS = 10_000  # the stream is cut into episodes this long; windows stay inside one
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


@dataclass(frozen=True)
class DataConfig:
    task: str  # maze2d-{umaze,medium,large}
    steps: int  # transitions in the stream
    noise: float = 0.3  # std of Gaussian action noise (D4RL's published data used 0.5)
    seed: int = 0
    dwell_prob: float = 0.5  # probability of holding at a reached target (0 = pure D4RL)
    dwell_min: int = 50  # holding time range, in steps, drawn uniformly
    dwell_max: int = 100


def parse_dwell(text: str) -> tuple[float, int, int]:
    """'P,MIN,MAX' or '0' -> (P, MIN, MAX)."""
    parts = text.split(",")
    try:
        if len(parts) == 1 and float(parts[0]) == 0:
            return 0.0, 0, 0
        p, lo, hi = float(parts[0]), int(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        msg = f"--dwell must be 'P,MIN,MAX' (e.g. 0.5,50,100) or 0, got '{text}'"
        raise UserError(msg) from None
    if not (0 <= p <= 1) or lo < 0 or hi < lo:
        raise UserError(f"--dwell needs 0 <= P <= 1 and 0 <= MIN <= MAX, got '{text}'")
    return p, lo, hi


def datasets_root() -> Path:
    """Where Minari looks: MINARI_DATASETS_PATH if set, else Minari's default folder."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def dataset_path(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def generate_stream(config: DataConfig, task: Task, progress: bool = True) -> dict:
    """Run the expert stream; returns flat arrays with N + 1 observations (and infos)."""
    n = config.steps
    rng = np.random.default_rng(config.seed)
    env = Maze2DEnv(task.maze)
    obs, _ = env.reset(seed=config.seed)
    follower = WaypointFollower(env.layout, rng)
    cells = env.reset_cells

    def draw_target():
        return cells[rng.integers(len(cells))] + rng.uniform(-0.1, 0.1, size=2)

    observations = np.empty((n + 1, 4), np.float32)
    actions = np.empty((n, 2), np.float32)
    rewards = np.empty(n, np.float32)
    goals = np.empty((n + 1, 2), np.float32)
    target = draw_target()
    env.set_goal(target)
    steps_on_target, hold_left = 0, None  # hold_left: steps still to hold; None while travelling
    bar = tqdm(total=n, desc=f"data {task.dataset_task}", unit="step", disable=not progress)
    for t in range(n):
        observations[t] = obs
        goals[t] = target
        action, reached = follower.action(obs[:2], obs[2:4], target)
        if config.noise > 0:
            action = action + rng.normal(0.0, config.noise, size=2)
        actions[t] = np.clip(action, -1.0, 1.0)
        obs, rewards[t], _, _, _ = env.step(actions[t])
        steps_on_target += 1
        if reached and hold_left is None:  # first arrival: dwell or not
            dwelling = rng.random() < config.dwell_prob
            hold_left = int(rng.integers(config.dwell_min, config.dwell_max + 1)) if dwelling else 0
        if hold_left == 0 or steps_on_target >= task.max_episode_steps:
            target = draw_target()
            env.set_goal(target)
            steps_on_target, hold_left = 0, None
        elif hold_left is not None:
            hold_left -= 1
        if t % 10_000 == 9_999:
            bar.update(10_000)
    bar.update(n - bar.n)
    bar.close()
    observations[n] = obs
    goals[n] = target
    return {"observations": observations, "actions": actions, "rewards": rewards, "goals": goals}


def _episode_buffers(stream: dict) -> list:
    from minari.data_collector import EpisodeBuffer

    n = len(stream["actions"])
    buffers = []
    for start in range(0, n, EPISODE_STEPS):
        end = min(start + EPISODE_STEPS, n)
        obs = stream["observations"][start : end + 1]
        truncations = np.zeros(end - start, bool)
        truncations[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                observations=obs,
                actions=stream["actions"][start:end],
                rewards=stream["rewards"][start:end],
                terminations=np.zeros(end - start, bool),
                truncations=truncations,
                infos={
                    "goal": stream["goals"][start : end + 1],
                    "qpos": obs[:, :2].copy(),
                    "qvel": obs[:, 2:].copy(),
                },
            )
        )
    return buffers


def make_dataset(config: DataConfig, task: Task, force: bool = False, progress: bool = True):
    """Generate and write the Minari dataset for `task`; returns its path.

    Reuses an existing complete dataset unless `force`. Written in a hidden staging folder and
    renamed into place, so an interrupted run never leaves a dataset that looks complete.
    """
    from gymnasium import spaces

    if config.steps <= 0:
        raise UserError(f"--steps must be a positive number of steps, got {config.steps}")
    final = dataset_path(task.dataset_id)
    if final.exists() and not force:
        return final
    staging = open_staging()
    stream = generate_stream(config, task, progress=progress)
    write_staged(
        staging,
        task.dataset_id,
        _episode_buffers(stream),
        asdict(config),
        env=task.env_id,
        observation_space=spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space=spaces.Box(-1.0, 1.0, (2,), np.float32),
        algorithm_name="dfplan waypoint expert (D4RL maze2d procedure)",
        ref_min_score=task.ref_min_score,
        ref_max_score=task.ref_max_score,
    )
    publish(staging, task.dataset_id)
    shutil.rmtree(staging, ignore_errors=True)
    return final


# -- atomic writing (shared with the PointMaze data) -------------------------------------------
def open_staging() -> Path:
    """A fresh hidden staging folder under the datasets root (stale ones of dead runs go)."""
    root = datasets_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".dfplan-staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as e:
        raise UserError(
            f"cannot write datasets under {root} ({e.strerror}); "
            "set MINARI_DATASETS_PATH to a writable folder"
        ) from None
    _remove_stale_staging(root)
    return staging


def write_staged(staging: Path, dataset_id: str, buffers: list, config: dict, **minari_kwargs):
    """Write one Minari dataset into `staging`, with our generation settings beside it."""
    import minari

    with _minari_root(staging), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari nags about unset optional metadata
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            author="dfplan",
            description=json.dumps({"dfplan_data_config": config}),
            **minari_kwargs,
        )
    (staging / dataset_id / "dfplan_config.json").write_text(json.dumps(config, indent=2))


def publish(staging: Path, dataset_id: str) -> Path:
    """Rename a dataset written by `write_staged` into place (replacing an old one)."""
    root = datasets_root()
    final = dataset_path(dataset_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    namespace_meta = staging / dataset_id.split("/")[0] / "namespace_metadata.json"
    if namespace_meta.exists() and not (final.parent / namespace_meta.name).exists():
        shutil.copy(namespace_meta, final.parent / namespace_meta.name)
    if final.exists():
        old = root / f".dfplan-old-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old)
    (staging / dataset_id).rename(final)
    return final


@contextmanager
def _minari_root(path: Path):
    """Point Minari's dataset root at `path` for the duration (Minari reads it from the env)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _remove_stale_staging(root: Path) -> None:
    """Staging folders of runs that died (their process is gone)."""
    for p in root.glob(".dfplan-*-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- readers ---------------------------------------------------------------------------------
def load_trajectories(source: str | os.PathLike, task: Task | None = None) -> Trajectories:
    """Trajectories from a Minari dataset (id or folder) or a D4RL-format hdf5 file.

    With `task`, checks that observation and action sizes match it.
    """
    path = Path(source)
    if path.suffix in (".hdf5", ".h5"):
        traj = read_d4rl_hdf5(path)
    else:
        traj = read_minari(source)
    if task is not None:
        if traj.obs_dim != 4 or traj.act_dim != 2:
            raise UserError(
                f"dataset {source} has observations of size {traj.obs_dim} and actions of size "
                f"{traj.act_dim}; task {task.name} needs 4 and 2"
            )
    return traj


def read_d4rl_hdf5(path: Path) -> Trajectories:
    if not path.exists():
        raise UserError(f"dataset file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_KEYS if k not in f]
            if missing:
                raise UserError(f"{path} is not a D4RL dataset: missing keys {', '.join(missing)}")
            arrays = {k: f[k][()] for k in D4RL_KEYS}
            infos = {}
            if "infos" in f:
                infos = {k: v[()] for k, v in f["infos"].items() if isinstance(v, h5py.Dataset)}
            metadata = dict(f.attrs.items())
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"cannot read {path}: corrupt or truncated hdf5 ({e})") from None
    return _checked(
        Trajectories(
            observations=arrays["observations"].astype(np.float32),
            actions=arrays["actions"].astype(np.float32),
            rewards=arrays["rewards"].astype(np.float32).reshape(-1),
            terminals=arrays["terminals"].astype(bool).reshape(-1),
            timeouts=arrays["timeouts"].astype(bool).reshape(-1),
            infos=infos,
            metadata={k: _jsonable(v) for k, v in metadata.items()},
        ),
        str(path),
    )


def read_minari_episodes(source: str | os.PathLike, example_task: str) -> tuple[Path, object, list]:
    """(folder, storage, episodes) of a Minari dataset (id or folder); UserError (one line, naming
    `dfplan data example_task` as the fix) when it is missing, unreadable or empty."""
    from minari.dataset.minari_storage import MinariStorage

    path = Path(source)
    if not (path / "data").is_dir():
        path = dataset_path(str(source))
    if not (path / "data").is_dir():
        raise UserError(
            f"dataset '{source}' not found under {datasets_root()}; "
            f"make it with 'dfplan data TASK' (e.g. dfplan data {example_task})"
        )
    try:
        storage = MinariStorage.read(path / "data")
        episodes = list(storage.get_episodes(range(storage.total_episodes)))
    except Exception as e:  # minari raises many types for broken files
        raise UserError(f"cannot read Minari dataset {path}: {e}") from None
    if not episodes:
        raise UserError(f"Minari dataset {path} has no episodes")
    return path, storage, episodes


def read_minari(source: str | os.PathLike) -> Trajectories:
    """Flatten a Minari dataset: each episode's final observation (and info) is dropped."""
    path, storage, episodes = read_minari_episodes(source, "maze2d-large")

    def cat(key, sub=None, drop_last=False):
        parts = [ep[key] if sub is None else ep[key][sub] for ep in episodes]
        return np.concatenate([p[:-1] if drop_last else p for p in parts])

    info_keys = set(episodes[0]["infos"]) if isinstance(episodes[0].get("infos"), dict) else set()
    metadata = dict(storage.metadata)
    config_file = path / "dfplan_config.json"
    if config_file.exists():
        metadata["dfplan_data_config"] = json.loads(config_file.read_text())
    return _checked(
        Trajectories(
            observations=cat("observations", drop_last=True).astype(np.float32),
            actions=cat("actions").astype(np.float32),
            rewards=cat("rewards").astype(np.float32),
            terminals=cat("terminations").astype(bool),
            timeouts=cat("truncations").astype(bool),
            infos={k: cat("infos", k, drop_last=True) for k in sorted(info_keys)},
            metadata={k: _jsonable(v) for k, v in metadata.items()},
        ),
        str(source),
    )


def write_d4rl_hdf5(traj: Trajectories, path: str | os.PathLike) -> None:
    """Write `traj` in D4RL's hdf5 layout (atomically)."""
    from dfplan.files import atomic_write_bytes

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["observations"] = traj.observations
        f["actions"] = traj.actions
        f["rewards"] = traj.rewards
        f["terminals"] = traj.terminals
        f["timeouts"] = traj.timeouts
        for k, v in traj.infos.items():
            f[f"infos/{k}"] = v
    atomic_write_bytes(Path(path), buffer.getvalue())


def _checked(traj: Trajectories, source: str) -> Trajectories:
    n = len(traj.observations)
    lengths = {
        "actions": len(traj.actions),
        "rewards": len(traj.rewards),
        "terminals": len(traj.terminals),
        "timeouts": len(traj.timeouts),
        **{f"infos/{k}": len(v) for k, v in traj.infos.items()},
    }
    bad = [f"{k} ({m})" for k, m in lengths.items() if m != n]
    if traj.observations.ndim != 2 or traj.actions.ndim != 2 or bad:
        raise UserError(
            f"dataset {source} is inconsistent: {n} observations but " + ", ".join(bad or ["?"])
        )
    return traj


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v
