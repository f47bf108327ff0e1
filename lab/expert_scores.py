"""Score the map-aware waypoint expert under the benchmark protocol.

    python -m lab.expert_scores [--episodes 100] [--seed 0] [--tasks ...]

Protocol: full D4RL time limit, sparse reward (radius 0.5), episodes with seeds seed..seed+N-1,
D4RL-normalised mean +- standard error, success = reached the goal at least once.
"""

from __future__ import annotations

import argparse
import time

from dfplan.benchmarks.harness import run_episodes, summarize
from dfplan.envs import get_task
from dfplan.policies import WaypointExpert

REFERENCE = {
    "maze2d-umaze": 141.1,
    "maze2d-medium": 156.8,
    "maze2d-large": 206.1,
    "multi2d-umaze": 164.9,
    "multi2d-medium": 173.7,
    "multi2d-large": 223.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks", nargs="+", default=["maze2d-umaze", "maze2d-medium", "maze2d-large"]
    )
    args = parser.parse_args()
    rows = []
    for name in args.tasks:
        task = get_task(name)
        tic = time.perf_counter()
        records, _ = run_episodes(
            task,
            WaypointExpert(name),
            args.episodes,
            args.seed,
            batch_size=args.episodes,
            progress=False,
        )
        s = summarize(records)
        rows.append((name, s, REFERENCE[name], time.perf_counter() - tic))
    print(
        f"waypoint expert, {args.episodes} episodes, seeds {args.seed}..."
        f"{args.seed + args.episodes - 1}, full time limit, D4RL-normalised"
    )
    print(f"{'task':16s} {'score':>14s} {'reference':>10s} {'success':>8s} {'raw':>7s} {'s':>6s}")
    for name, s, ref, secs in rows:
        score = f"{s['normalized_mean']:.1f} +- {s['normalized_sem']:.1f}"
        print(
            f"{name:16s} {score:>14s} {ref:>10.1f} {s['success_rate']:>8.0%} "
            f"{s['raw_mean']:>7.1f} {secs:>6.1f}"
        )


if __name__ == "__main__":
    main()
