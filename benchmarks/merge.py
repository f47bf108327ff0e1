"""Merge bench results of the same run made in seed chunks into one result.

    dfplan bench multi2d-large-keepout --seed 0 --episodes 25 --out parts   # ... and 25, 50, 75
    python -m dfplan.benchmarks.merge parts/*.json --out results/multi2d-large-keepout_df.json

Episode k's result depends only on its seed, not on the batch it ran in, so chunks of one run
(same task, method, checkpoint, planner settings and objective) merge into the result the whole
run would have written: per-episode records pooled, the summary recomputed from them. Wall time
is the chunks' sum; decisions per second is total decisions over total time spent deciding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dfplan.benchmarks.harness import EpisodeRecord, summarize
from dfplan.envs import get_task
from dfplan.errors import UserError
from dfplan.files import atomic_write_json

# Fields that must agree for chunks to be parts of one run.
SAME_RUN = ("task", "method", "checkpoint", "config", "zones", "objective", "device")


def merge(results: list[dict]) -> dict:
    """One result from chunk results; UserError (one line) when they are not parts of one run."""
    first = results[0]
    for r in results[1:]:
        for key in SAME_RUN:
            if r.get(key) != first.get(key):
                raise UserError(f"cannot merge: the chunks differ in '{key}'; merge one run only")
    dicts = [e for r in results for e in r["per_episode"]]
    seeds = [e["seed"] for e in dicts]
    if len(set(seeds)) != len(seeds):
        raise UserError("cannot merge: an episode seed appears in two chunks; drop the duplicate")
    records = sorted((EpisodeRecord(**e) for e in dicts), key=lambda e: e.seed)
    decisions = [r["episodes"] * get_task(r["task"]).max_episode_steps for r in results]
    deciding = sum(d / r["decisions_per_second"] for d, r in zip(decisions, results, strict=True))
    merged = {k: v for k, v in first.items() if k != "per_episode"}
    merged.update(summarize(records))  # episodes and every summary field, from all records
    merged.update(
        label=None,
        seed=min(r["seed"] for r in results),
        decisions_per_second=sum(decisions) / deciding,
        wall_seconds=sum(r["wall_seconds"] for r in results),
        chunks=sorted([r["seed"], r["episodes"]] for r in results),
        per_episode=[r.to_dict() for r in records],
    )
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("chunks", nargs="+", help="result JSONs of one run's seed chunks")
    p.add_argument("--out", required=True, help="the merged result's path")
    args = p.parse_args(argv)
    try:
        results = []
        for path in args.chunks:
            try:
                results.append(json.loads(Path(path).read_text()))
            except (OSError, json.JSONDecodeError) as e:
                raise UserError(f"cannot read result {path}: {e}") from None
        merged = merge(results)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args.out), merged)
    n = len(merged["per_episode"])
    print(
        f"{merged['task']} {merged['method']}: {n} episodes, "
        f"{merged['normalized_mean']:.1f} +- {merged['normalized_sem']:.1f}, "
        f"zone steps {merged['zone_steps_mean']:.2f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
