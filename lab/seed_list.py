"""Score a method on an explicit list of seeds: tuning sets and failure cases.

    python -m lab.seed_list maze2d-umaze --seeds 2000-2015 [--method df]
        [--checkpoint P] [--planner FIELD=VALUE ...]
    python -m lab.seed_list maze2d-umaze --seeds 2013,2023,2025,2028
    python -m lab.seed_list maze2d-large --seeds 2000-2015 --objective effort=1

The protocol of `dfplan bench` (full episodes, the policy's own actions, D4RL-normalised) on the
given seeds, run as one batch; prints the mean ± SE, the failures (never reached the goal), the
decision rate and every episode's score. Tune here, on seeds you will not report.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from dfplan.benchmarks.harness import run_episodes
from dfplan.envs import get_task
from dfplan.policies import make_policy
from dfplan.policies.factory import parse_overrides
from dfplan.waypoints import WaypointConfig


def parse_seeds(text: str) -> list[int]:
    """'2000-2003,2013' -> [2000, 2001, 2002, 2003, 2013]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--seeds", required=True, help="e.g. 2000-2015 or 2013,2023,2025")
    parser.add_argument("--method", default="df")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planner", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument(
        "--policy-seed",
        type=int,
        default=None,
        help="seed of the planner's noise for env 0 (env k: +k); default: the first episode seed",
    )
    parser.add_argument(
        "--objective",
        nargs="*",
        default=None,
        metavar="NAME=WEIGHT",
        help="as dfplan bench: keepout=10 effort=1 module:attr=W, or none; default: the task's",
    )
    parser.add_argument(
        "--waypoints",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override the shipped waypoint graph's plan-time settings, e.g. lookahead=40",
    )
    args = parser.parse_args()
    task = get_task(args.task)
    seeds = parse_seeds(args.seeds)
    policy = make_policy(
        args.method, task, args.checkpoint, args.device, args.planner, args.objective
    )
    if args.waypoints:
        graph = policy.waypoints
        graph.config = replace(graph.config, **parse_overrides(args.waypoints, WaypointConfig))
    records, rate = run_episodes(
        task,
        policy,
        len(seeds),
        batch_size=len(seeds),
        seed_list=seeds,
        policy_seed=args.policy_seed,
    )
    scores = np.array([r.normalized for r in records])
    sem = scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else 0.0
    fails = sum(not r.success for r in records)
    print(
        f"{task.name} {args.method} "
        f"{' '.join(args.planner + args.waypoints) or '(shipped settings)'}: "
        f"{scores.mean():.1f} +- {sem:.1f}, never reached {fails}/{len(seeds)}, "
        f"{rate:.1f} decisions/s"
    )
    zone = np.array([r.zone_steps for r in records])
    energy = np.array([r.energy for r in records])
    print(
        f"zone steps per episode {zone.mean():.1f} ({(zone > 0).sum()} entering), "
        f"action energy per episode {energy.mean():.0f}"
    )
    print("per seed: " + " ".join(f"{r.seed}:{r.normalized:.0f}" for r in records))
    print("zone steps: " + " ".join(f"{r.seed}:{r.zone_steps}" for r in records))
    print("energy: " + " ".join(f"{r.seed}:{r.energy:.0f}" for r in records))


if __name__ == "__main__":
    main()
