"""`dfplan bench` and `dfplan plot` end to end on a tiny model: result schema, sharding."""

import json
import sys

import numpy as np
import pytest
from helpers import dfplan, save_tiny_checkpoint

SCHEMA = {
    "task": str,
    "method": str,
    "episodes": int,
    "seed": int,
    "normalized_mean": float,
    "normalized_sem": float,
    "raw_mean": float,
    "success_rate": float,
    "decisions_per_second": float,
    "device": str,
    "config": dict,
    "per_episode": list,
}
EPISODE_SCHEMA = {"seed": int, "raw_return": float, "normalized": float, "success": bool}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return str(save_tiny_checkpoint(tmp_path / "tiny", max_tokens=3, sampling_steps=3))


def test_bench_end_to_end_writes_a_valid_result_and_plots(tmp_path, tiny_checkpoint):
    r = dfplan(
        "bench",
        "maze2d-umaze",
        "--checkpoint",
        tiny_checkpoint,
        "--episodes",
        "2",
        "--seed",
        "7",
        "--out",
        str(tmp_path / "res"),
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert "maze2d-umaze" in r.stdout and "+-" in r.stdout
    result = json.loads((tmp_path / "res" / "maze2d-umaze_df.json").read_text())
    for key, kind in SCHEMA.items():
        assert isinstance(result[key], kind), key
    assert result["steps_to_goal_mean"] is None or isinstance(result["steps_to_goal_mean"], float)
    assert [e["seed"] for e in result["per_episode"]] == [7, 8]
    for e in result["per_episode"]:
        for key, kind in EPISODE_SCHEMA.items():
            assert isinstance(e[key], kind), key
        assert e["success"] == (e["first_success_step"] is not None)
    assert result["config"]["mcg_samples"] == 2
    r = dfplan("plot", str(tmp_path / "res" / "maze2d-umaze_df.json"), "-o", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").stat().st_size > 10_000 and (tmp_path / "p.svg").exists()


def test_torchrun_and_workers_give_the_same_episodes_as_one_process(tmp_path, tiny_checkpoint):
    common = [
        "bench",
        "maze2d-umaze",
        "--checkpoint",
        tiny_checkpoint,
        "--episodes",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    r = dfplan(*common, "--out", str(tmp_path / "one"), "--workers", "1")
    assert r.returncode == 0, r.stderr
    r = dfplan(*common, "--out", str(tmp_path / "workers"), "--workers", "2")
    assert r.returncode == 0, r.stderr
    # The workers' steps reach the parent's one progress bar, all of them.
    assert "(2 workers): 100%" in r.stderr and "900/900" in r.stderr, r.stderr
    torchrun = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "dfplan",
    )
    r = dfplan(*common, "--out", str(tmp_path / "ranks"), runner=torchrun)
    assert r.returncode == 0, r.stderr
    episodes = {
        name: json.loads((tmp_path / name / "maze2d-umaze_df.json").read_text())["per_episode"]
        for name in ("one", "workers", "ranks")
    }
    assert [e["seed"] for e in episodes["one"]] == [0, 1, 2]
    for name in ("workers", "ranks"):
        for a, b in zip(episodes["one"], episodes[name], strict=True):
            assert a["seed"] == b["seed"]
            assert a["raw_return"] == b["raw_return"]
            assert a["first_success_step"] == b["first_success_step"]
            np.testing.assert_allclose(a["final_position"], b["final_position"], atol=1e-3)
    # The episodes really differ, so the comparison above is not between identical runs.
    assert len({tuple(np.round(e["final_position"], 3)) for e in episodes["one"]}) == 3


def test_episodes_on_an_explicit_seed_list_match_the_same_seeds_run_alone():
    from dfplan.benchmarks.harness import run_episodes
    from dfplan.envs import get_task
    from dfplan.policies import WaypointExpert
    from lab.seed_list import parse_seeds

    assert parse_seeds("5-7,2") == [5, 6, 7, 2]
    task = get_task("maze2d-umaze")
    # env k of the batch draws its policy noise from policy_seed + k: here 1 + 1, as alone
    expert = WaypointExpert(task.name)
    listed, _ = run_episodes(task, expert, 0, seed_list=[7, 2], progress=False, policy_seed=1)
    alone, _ = run_episodes(task, expert, 1, seed=2, progress=False)
    assert [r.seed for r in listed] == [7, 2]
    assert listed[1].raw_return == alone[0].raw_return
    assert listed[1].final_position == alone[0].final_position


def test_hold_probe_places_the_agent_and_counts_steps_at_the_goal():
    """The waypoint expert, started at rest on the goal, holds it every step; started one cell
    away it needs some steps to arrive, so it collects fewer."""
    import gymnasium as gym

    from dfplan.envs import get_task
    from dfplan.policies import make_policy
    from lab.hold_probe import hold

    task = get_task("maze2d-umaze")
    expert = make_policy("expert", task, None, "cpu")
    _, info = gym.make(task.env_id).reset(seed=0)
    goal = np.asarray(info["goal"])
    inside, distances = hold(task, expert, np.array([*goal, 0.0, 0.0]), 20, 0, 0)
    assert inside == 20 and len(distances) == 20 and max(distances) < 0.5
    away, _ = hold(task, expert, np.array([3.0, 1.0, 0.0, 0.0]), 20, 0, 0)
    assert away < 20


def test_bench_defaults_to_one_worker_per_two_cores_for_learned_planners_on_cpu(monkeypatch):
    from dfplan.benchmarks.bench import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers("df", "cpu", 100) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_workers("df", "cpu", 100) == 4
    assert default_workers("diffuser", "cpu", 100) == 4
    assert default_workers("df", "cpu", 2) == 2  # never more workers than episodes
    assert default_workers("df", "cuda", 100) == 1
    assert default_workers("expert", "cpu", 100) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_workers("df-nomcg", "cpu", 100) == 8


def test_the_results_table_renders_each_json_in_its_cell(tmp_path):
    from dfplan.benchmarks.table import load_results, markdown

    for task, method, mean in (("maze2d-large", "df", 171.25), ("multi2d-umaze", "greedy", 9.0)):
        result = {"normalized_mean": mean, "normalized_sem": 3.04, "success_rate": 0.97}
        (tmp_path / f"{task}_{method}.json").write_text(json.dumps(result))
    (tmp_path / "maze2d-large_df_tuned.json").write_text("{}")  # labelled runs stay out
    table = markdown(load_results(tmp_path), ["df", "greedy"], success=True).splitlines()
    assert table[0] == "| task | df | greedy |"
    assert table[2] == "| maze2d-large | 171.2 ± 3.0 (97%) |  |"
    assert table[3] == "| multi2d-umaze |  | 9.0 ± 3.0 (97%) |"
    assert len(table) == 4
