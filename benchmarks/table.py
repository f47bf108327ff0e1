"""The results table in markdown, from the JSONs `dfplan bench` wrote.

    python -m dfplan.benchmarks.table results                       # every task x method found
    python -m dfplan.benchmarks.table results --methods df greedy expert

One row per task, one column per method; a cell is the D4RL-normalised mean +- standard error of
`TASK_METHOD.json` (unlabelled runs, plus `--labels` ones), with the success rate when `--success`
is given; on keep-out tasks a cell also gives the mean steps per episode spent inside a zone
("z 3.1"). Cells without a JSON are left empty.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dfplan.envs import ALL_TASKS
from dfplan.policies.factory import METHODS


def load_results(folder: Path, labels: list[str] = ()) -> dict[tuple[str, str], dict]:
    """{(task, column): result} of the result files in `folder`: unlabelled ones under their
    method, and `labels` runs (`TASK_METHOD_LABEL.json`) under METHOD_LABEL."""
    results = {}
    for task in ALL_TASKS:
        for method in METHODS:
            for column in (method, *(f"{method}_{lab}" for lab in labels)):
                path = folder / f"{task}_{column}.json"
                if path.exists():
                    results[task, column] = json.loads(path.read_text())
    return results


def markdown(results: dict, methods: list[str], success: bool = False) -> str:
    tasks = [t for t in ALL_TASKS if any((t, m) in results for m in methods)]
    lines = ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task in tasks:
        cells = []
        for method in methods:
            r = results.get((task, method))
            if r is None:
                cells.append("")
                continue
            cell = f"{r['normalized_mean']:.1f} ± {r['normalized_sem']:.1f}"
            if success:
                cell += f" ({r['success_rate']:.0%})"
            if ALL_TASKS[task].zones and r.get("zone_steps_mean") is not None:
                cell += f", z {r['zone_steps_mean']:.1f}"
            cells.append(cell)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of result JSONs (e.g. results)")
    parser.add_argument("--methods", nargs="+", default=None, help="columns, in order")
    parser.add_argument("--success", action="store_true", help="add each cell's success rate")
    parser.add_argument("--labels", nargs="*", default=[], help="labelled runs to add as columns")
    parser.add_argument("--tasks", nargs="*", default=None, help="rows (default: all found)")
    args = parser.parse_args()
    results = load_results(args.folder, args.labels)
    if args.tasks:
        results = {k: v for k, v in results.items() if k[0] in args.tasks}
    methods = args.methods or list(dict.fromkeys(k[1] for k in results))
    print(markdown(results, methods, args.success))


if __name__ == "__main__":
    main()
