"""OGBench PointMaze in the bench: tasks, OGBench's protocol, the navigate and stitch data.

Real OGBench 1.2.2 envs throughout, no mocks; everything on the medium maze and short runs.
"""

import json
import os
from pathlib import Path

import numpy as np
import ogbench
import pytest
from helpers import assert_clear_error, dfplan

from dfplan.benchmarks.harness import run_episodes, summarize
from dfplan.envs import POINTMAZE_TASKS, get_task
from dfplan.envs.pointmaze_data import (
    PointMazeDataConfig,
    cells_at_distance,
    generate_episodes,
    make_pointmaze_dataset,
    maze_cells,
    read_episodes,
)
from dfplan.policies.factory import make_policy

MEDIUM = "pointmaze-medium-navigate"
STITCH = "pointmaze-medium-stitch"
MAZES = ("medium", "large", "giant", "teleport")
KINDS = ("navigate", "stitch")


def test_registry_has_the_four_navigate_tasks_with_ogbench_time_limit():
    navigate = {f"pointmaze-{m}-navigate" for m in MAZES}
    assert navigate <= set(POINTMAZE_TASKS)
    for name in navigate:
        task = POINTMAZE_TASKS[name]
        assert task.kind == "navigate" and task.recipe == f"pointmaze-{task.maze}"
        assert task.max_episode_steps == 1000
        env = task.make_env()
        assert env.spec.max_episode_steps == 1000
        assert env.observation_space.shape == (2,) and env.action_space.shape == (2,)


def test_registry_has_the_four_stitch_tasks_with_ogbench_sizes():
    """OGBench's commands.sh: 5,000 episodes of 201 steps on every maze; env and evaluation
    are the navigate task's, the dataset and recipe are their own."""
    assert set(POINTMAZE_TASKS) == {f"pointmaze-{m}-{k}" for m in MAZES for k in KINDS}
    for maze in MAZES:
        stitch = POINTMAZE_TASKS[f"pointmaze-{maze}-stitch"]
        navigate = POINTMAZE_TASKS[f"pointmaze-{maze}-navigate"]
        assert stitch.kind == "stitch" and stitch.maze == maze
        assert (stitch.data_episodes, stitch.data_episode_steps) == (5000, 201)
        assert stitch.env_id == navigate.env_id == f"pointmaze-{maze}-v0"
        assert (stitch.max_episode_steps, stitch.eval_tasks) == (1000, 5)
        assert stitch.dataset_id == f"dfplan/pointmaze-{maze}-stitch-v0"
        assert stitch.val_dataset_id == f"dfplan/pointmaze-{maze}-stitch-val-v0"
        assert stitch.recipe == f"pointmaze-{maze}-stitch" != navigate.recipe
    assert get_task(STITCH) is POINTMAZE_TASKS[STITCH]


@pytest.mark.parametrize("task_id", [1, 2, 3, 4, 5])
def test_evaluation_tasks_reset_like_ogbench(task_id):
    """Our env is OGBench's: with the global RNG seeded alike, OGBench's own env resets to the
    same start and goal, which lie within OGBench's noise (1.0 per axis) of the task's cells."""
    task = get_task(MEDIUM)
    ours = task.make_env()
    obs, info = ours.reset(seed=11, options={"task_id": task_id})
    plain = ogbench.make_env_and_datasets("pointmaze-medium-navigate-v0", env_only=True)
    np.random.seed(11)  # OGBench draws the start and goal noise from the global RNG
    plain_obs, plain_info = plain.reset(seed=11, options={"task_id": task_id})
    np.testing.assert_array_equal(obs, plain_obs)
    np.testing.assert_array_equal(info["goal"], plain_info["goal"])
    spec = plain.unwrapped.task_infos[task_id - 1]
    assert ours.unwrapped.task_infos[task_id - 1] == spec
    assert ours.unwrapped.cur_task_id == task_id
    assert np.all(np.abs(obs - spec["init_xy"]) <= 1.0)
    assert np.all(np.abs(info["goal"] - spec["goal_xy"]) <= 1.0)
    np.testing.assert_array_equal(ours.unwrapped.cur_goal_xy, info["goal"])


def test_seeded_reset_ignores_the_global_rng():
    env = get_task(MEDIUM).make_env()
    first = env.reset(seed=3, options={"task_id": 2})
    np.random.seed(12345)
    np.random.rand(7)
    again = env.reset(seed=3, options={"task_id": 2})
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1]["goal"], again[1]["goal"])
    other = env.reset(seed=4, options={"task_id": 2})
    assert not np.array_equal(first[0], other[0])


def test_success_within_one_of_the_goal_ends_the_episode():
    env = get_task(MEDIUM).make_env()
    _, info = env.reset(seed=0, options={"task_id": 1})
    goal = np.asarray(info["goal"])
    env.unwrapped.set_xy(goal + np.array([0.0, 1.5]))  # outside the radius
    _, reward, terminated, _, step = env.step(np.zeros(2))
    assert not step["success"] and not terminated and reward == 0.0
    env.unwrapped.set_xy(goal + np.array([0.0, 0.9]))  # inside
    _, reward, terminated, _, step = env.step(np.zeros(2))
    assert step["success"] and terminated and reward == 1.0


def test_every_step_info_holds_the_current_goal():
    task = get_task(MEDIUM)
    env = task.make_env()
    _, info = task.reset(env, seed=7)  # seed 7: evaluation task 1 + 7 % 5 = 3
    np.testing.assert_array_equal(info["goal"], env.unwrapped.cur_goal_xy)
    _, _, _, _, step = env.step(np.zeros(2))
    np.testing.assert_array_equal(step["goal"], info["goal"])
    env.set_goal((1, 1))  # the generator's redraw: later steps carry the new goal
    _, _, _, _, step = env.step(np.zeros(2))
    np.testing.assert_array_equal(step["goal"], env.unwrapped.cur_goal_xy)
    assert not np.array_equal(step["goal"], info["goal"])


class Recorder:
    """Wraps a policy; keeps every batch of observations it was given."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []

    def reset(self, goal=None, seed=None):
        self.policy.reset(goal=goal, seed=seed)

    def act(self, obs, info=None):
        self.seen.append(np.array(obs))
        return self.policy.act(obs, info)


def test_expert_episodes_follow_the_protocol_and_stop_at_the_goal():
    task = get_task(MEDIUM)
    expert = Recorder(make_policy("expert", task))
    records, _ = run_episodes(task, expert, 5, seed=0, batch_size=5, progress=False)
    assert [r.task_id for r in records] == [1, 2, 3, 4, 5]  # 1 + seed % 5
    assert [r.seed for r in records] == [0, 1, 2, 3, 4]
    for k, r in enumerate(records):
        assert r.success and r.normalized == 100.0 and r.raw_return == 1.0
        assert 1 <= r.first_success_step < 1000
        # After its success step the env takes no action: the policy sees its last
        # observation again, in a batch that stays full.
        frames = [seen[k] for seen in expert.seen[r.first_success_step :]]
        assert len(frames) == max(x.first_success_step for x in records) - r.first_success_step
        assert all(np.array_equal(f, frames[0]) for f in frames)
    assert all(seen.shape == (5, 2) for seen in expert.seen)
    summary = summarize(records)
    assert summary["success_by_task"] == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert summary["success_rate"] == 1.0 and summary["success_sem"] == 0.0
    assert records[0].to_dict()["task_id"] == 1


def test_random_episodes_depend_on_their_seed_only():
    task = get_task(MEDIUM)
    alone, _ = run_episodes(task, make_policy("random", task), 3, seed=5, progress=False)
    # Seeds 6 and 7 again, in a batch of their own: env k of a batch draws its actions from
    # policy_seed + k, so policy_seed 6 gives them the actions they had above (5 + 1, 5 + 2).
    batched, _ = run_episodes(
        task, make_policy("random", task), 2, seed=6, batch_size=2, progress=False, policy_seed=6
    )
    assert [r.task_id for r in alone] == [1, 2, 3]
    for a, b in zip(alone[1:], batched, strict=True):
        assert a.seed == b.seed and a.task_id == b.task_id
        assert a.final_position == b.final_position and a.success == b.success
    for r in alone:
        assert r.normalized == 100.0 * r.success
        assert r.success == (r.first_success_step is not None)


def test_bench_writes_ogbench_protocol_fields(tmp_path):
    r = dfplan("bench", MEDIUM, "--method", "expert", "--episodes", "5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "success by evaluation task" in r.stdout and "OGBench" in r.stdout
    result = json.loads((tmp_path / f"{MEDIUM}_expert.json").read_text())
    assert result["success_rate"] == 1.0 and result["normalized_mean"] == 100.0
    assert result["success_by_task"] == {str(k): 1.0 for k in range(1, 6)}
    assert result["success_sem"] == 0.0
    assert "task_id 1 + s % 5" in result["protocol"] and "1.0 of the goal" in result["protocol"]
    assert [e["task_id"] for e in result["per_episode"]] == [1, 2, 3, 4, 5]


# -- data ------------------------------------------------------------------------------------
def test_vertex_cells_leave_out_straight_hallways():
    maze_map = get_task(MEDIUM).make_env().unwrapped.maze_map
    free, vertices = maze_cells(maze_map)
    assert len(free) == int((maze_map == 0).sum())
    assert (3, 3) in free and (3, 3) not in vertices  # left/right free, up/down walls
    assert (1, 1) in vertices  # a room corner
    assert set(vertices) < set(free)


def test_navigate_episodes_redraw_the_goal_on_arrival():
    task = get_task(MEDIUM)
    config = PointMazeDataConfig(MEDIUM, episodes=3, episode_steps=300, seed=1)
    episodes = generate_episodes(task, config, 3, progress=False)
    maze = task.make_env().unwrapped
    _, vertices = maze_cells(maze.maze_map)
    arrivals = 0
    for ep in episodes:
        assert ep["observations"].shape == (301, 2) and ep["actions"].shape == (300, 2)
        assert np.all(np.abs(ep["actions"]) <= 1.0)
        goals = ep["oracle_goal"]
        changed = np.any(goals[1:] != goals[:-1], axis=1)
        arrived = ep["rewards"] == 1.0
        np.testing.assert_array_equal(changed, arrived)  # a new goal exactly after a success
        arrivals += arrived.sum()
        for g in goals:
            assert maze.xy_to_ij(g) in vertices
        # success means within 1.0 of the goal held before the step
        for t in np.flatnonzero(arrived):
            assert np.linalg.norm(ep["qpos"][t + 1] - goals[t]) <= 1.0
    assert arrivals >= 1
    again = generate_episodes(task, config, 3, progress=False)
    for a, b in zip(episodes, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def _distances(maze_map: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """BFS distance of every cell from `start` (-1: wall or unreachable), by growing the reached
    set one move at a time: independent of `cells_at_distance`."""
    free = maze_map == 0
    dist = np.full(maze_map.shape, -1)
    dist[start] = 0
    reached = dist == 0
    for d in range(1, free.size):
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        if not (grown & ~reached).any():
            return dist
        dist[grown & ~reached] = d
        reached = grown
    return dist


def test_stitch_goal_cells_are_four_bfs_steps_away():
    maze_map = get_task(STITCH).make_env().unwrapped.maze_map
    # Counted by hand on the medium map (row i, column j; # wall):
    #   ########
    #   #..##..#
    #   #..#...#
    #   ##...###
    #   #..#...#
    #   #.#..#.#
    #   #...#..#
    #   ########
    assert cells_at_distance(maze_map, (3, 3)) == [(1, 1), (1, 5), (2, 6), (4, 6), (5, 1), (5, 3)]
    assert cells_at_distance(maze_map, (1, 1)) == [(3, 3), (4, 2)]
    free, _ = maze_cells(maze_map)
    for start in free:
        dist = _distances(maze_map, start)
        expected = sorted(map(tuple, np.argwhere(dist == 4).tolist()))
        assert cells_at_distance(maze_map, start) == expected
        assert expected  # every start of this maze has a goal
        assert cells_at_distance(maze_map, start, 1) == sorted(
            map(tuple, np.argwhere(dist == 1).tolist())
        )
    # The teleport maze's exit cell (1, 7) is walled in: no goal, so OGBench's fallback (the
    # start cell) is its stitch goal.
    teleport = get_task("pointmaze-teleport-stitch").make_env().unwrapped.maze_map
    assert teleport[1, 7] == 0 and cells_at_distance(teleport, (1, 7)) == []


def test_stitch_episodes_keep_one_goal_four_cells_away():
    task = get_task(STITCH)
    config = PointMazeDataConfig(STITCH, episodes=3, episode_steps=201, seed=1)
    episodes = generate_episodes(task, config, 3, progress=False)
    maze = task.make_env().unwrapped
    for ep in episodes:
        assert ep["observations"].shape == (202, 2) and ep["actions"].shape == (201, 2)
        assert np.all(np.abs(ep["actions"]) <= 1.0)
        goals = ep["oracle_goal"]
        assert np.all(goals == goals[0])  # one goal, kept after arrival
        start_ij, goal_ij = maze.xy_to_ij(ep["observations"][0]), maze.xy_to_ij(goals[0])
        assert _distances(maze.maze_map, start_ij)[goal_ij] == 4
        # It arrives, and stays: never again farther than 2.0 (half a cell) from its goal.
        arrived = np.flatnonzero(ep["rewards"] == 1.0)
        assert len(arrived) > 0
        away = np.linalg.norm(ep["qpos"][arrived[0] + 1 :] - goals[0], axis=1)
        assert away.max() < 2.0
    again = generate_episodes(task, config, 3, progress=False)
    for a, b in zip(episodes, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_data_command_writes_a_stitch_dataset():
    r = dfplan("data", STITCH, "--episodes", "2", "--episode-steps", "201", "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert "2 episodes" in r.stdout and "603 steps" in r.stdout  # + 1 validation episode
    train = read_episodes(f"dfplan/{STITCH}-v0")
    val = read_episodes(f"dfplan/{STITCH}-val-v0")
    assert len(train) == 2 and len(val) == 1
    for i in range(2):
        obs, actions = train.episode(i)
        assert obs.shape == (202, 2) and actions.shape == (201, 2)
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    config = json.loads((root / f"dfplan/{STITCH}-v0/dfplan_config.json").read_text())
    assert config == {"task": STITCH, "episodes": 2, "episode_steps": 201, "seed": 4, "noise": 0.5}
    meta = json.loads((root / f"dfplan/{STITCH}-v0/data/metadata.json").read_text())
    assert meta["algorithm_name"].startswith("OGBench stitch procedure")
    assert f"dfplan/{STITCH}-v0" in dfplan("info").stdout


def test_data_command_writes_train_and_validation_datasets():
    r = dfplan("data", MEDIUM, "--episodes", "3", "--episode-steps", "60", "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1
    assert "3 episodes" in r.stdout and "240 steps" in r.stdout
    train = read_episodes(f"dfplan/{MEDIUM}-v0")
    val = read_episodes(f"dfplan/{MEDIUM}-val-v0")
    assert len(train) == 3 and len(val) == 1
    for i in range(3):
        obs, actions = train.episode(i)
        assert obs.shape == (61, 2) and actions.shape == (60, 2)
    assert train.observations.shape == (183, 2) and list(train.act_starts) == [0, 60, 120, 180]
    assert np.all(np.abs(train.actions) <= 1.0)
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    config = json.loads((root / f"dfplan/{MEDIUM}-v0/dfplan_config.json").read_text())
    assert config == {"task": MEDIUM, "episodes": 3, "episode_steps": 60, "seed": 2, "noise": 0.5}
    r = dfplan("data", MEDIUM, "--episodes", "3", "--episode-steps", "60")
    assert r.returncode == 0 and "present" in r.stdout
    assert f"dfplan/{MEDIUM}-v0" in dfplan("info").stdout


def test_the_same_seed_writes_the_same_data():
    task = get_task(MEDIUM)
    config = PointMazeDataConfig(MEDIUM, episodes=2, episode_steps=40, seed=7)
    make_pointmaze_dataset(task, config, progress=False)
    first = read_episodes(task.dataset_id)
    make_pointmaze_dataset(task, config, force=True, progress=False)
    second = read_episodes(task.dataset_id)
    np.testing.assert_array_equal(first.observations, second.observations)
    np.testing.assert_array_equal(first.actions, second.actions)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["bench", "pointmaze-nope-navigate"], ["unknown task", MEDIUM, "maze2d-large"]),
        (["data", "pointmaze-nope"], ["unknown task 'pointmaze-nope'", MEDIUM, "maze2d-large"]),
        (["bench", MEDIUM, "--method", "diffuser"], ["does not run on", "df, gcbc, expert"]),
        (["bench", MEDIUM, "--method", "expert", "--zone", "1,1,0.5"], ["--zone"]),
        (["data", MEDIUM, "--steps", "10"], ["--steps is for maze2d", "--episodes"]),
        (["data", MEDIUM, "--episodes", "0"], ["--episodes must be a positive"]),
        (["data", "maze2d-umaze", "--episodes", "3"], ["for pointmaze tasks"]),
    ],
)
def test_bad_input_gets_one_clear_line(args, fragments):
    assert_clear_error(dfplan(*args), *fragments)
