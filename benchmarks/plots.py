"""`dfplan plot RESULT.json... [-o FILE]`: planning success curves, scores beside published
numbers, and score against compute. Writes FILE.png and FILE.svg.

(a) Success curve: the fraction of episodes that have reached the goal (within 0.5) by step t,
    one line per result file, with a 95% normal-approximation band.
(b) Normalised score per method (mean +- SE) with the published numbers of the Diffusion Forcing
    paper (Table 1) beside ours, hatched and labelled "published".
(c) Score against decisions per second, when the results differ in compute.
(d) Score against steps spent inside keep-out zones per episode, for results on keep-out tasks.
(e) Score against action energy per episode, when the results differ in their objectives.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from dfplan.envs import get_task
from dfplan.errors import UserError
from dfplan.files import atomic_write_bytes

# Diffusion Forcing paper (Chen et al. 2024), Table 1: mean, SE; normalised x100.
PUBLISHED = {
    "maze2d-umaze": {"Diffuser*": (113.9, 3.1), "DF w/o MCG": (110.1, 3.9), "DF": (116.7, 2.0)},
    "maze2d-medium": {"Diffuser*": (121.5, 2.7), "DF w/o MCG": (136.1, 10.2), "DF": (149.4, 7.5)},
    "maze2d-large": {"Diffuser*": (123.0, 6.4), "DF w/o MCG": (142.8, 5.6), "DF": (159.0, 2.7)},
    "multi2d-umaze": {"Diffuser*": (128.9, 1.8), "DF w/o MCG": (107.7, 4.9), "DF": (119.1, 4.0)},
    "multi2d-medium": {"Diffuser*": (127.2, 3.4), "DF w/o MCG": (145.6, 6.5), "DF": (152.3, 9.9)},
    "multi2d-large": {"Diffuser*": (132.1, 5.8), "DF w/o MCG": (129.8, 1.5), "DF": (167.1, 2.7)},
}
REQUIRED = ("task", "method", "episodes", "normalized_mean", "normalized_sem", "per_episode")


def load_result(path: str) -> dict:
    try:
        result = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(
            f"result file {path} does not exist; make one with 'dfplan bench'"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not a dfplan result file (not JSON)") from None
    missing = [k for k in REQUIRED if k not in result] if isinstance(result, dict) else REQUIRED
    if missing:
        raise UserError(f"{path} is not a dfplan result file (missing {', '.join(missing)})")
    get_task(result["task"])  # an unknown task is a clear error, not a KeyError later
    return result


def label(result: dict) -> str:
    return f"{result['task']} {result.get('label') or result['method']}"


def success_curve(result: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 0..T, fraction of episodes that reached the goal by then, and its 95% half-width."""
    limit = get_task(result["task"]).max_episode_steps
    firsts = [e["first_success_step"] for e in result["per_episode"]]
    reached = np.array([f if f is not None else np.inf for f in firsts], dtype=float)
    steps = np.arange(limit + 1)
    frac = (reached[None, :] <= steps[:, None]).mean(axis=1)
    half = 1.96 * np.sqrt(frac * (1 - frac) / len(reached))
    return steps, frac, half


def plot(results: list[dict], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    differ_in_compute = len({round(r.get("decisions_per_second", 0), 1) for r in results}) > 1
    with_zones = any(r.get("zones") for r in results)
    differ_in_objective = len({r.get("objective") for r in results}) > 1
    panels = 2 + differ_in_compute + with_zones + differ_in_objective
    fig = Figure(figsize=(5.2 * panels, 4.6), layout="constrained")
    axes = list(fig.subplots(1, panels))

    ax = axes[0]
    for r in results:
        steps, frac, half = success_curve(r)
        (line,) = ax.plot(steps, frac, label=label(r))
        ax.fill_between(steps, frac - half, frac + half, color=line.get_color(), alpha=0.2)
    ax.set(
        xlabel="environment step",
        ylabel="episodes that reached the goal",
        title="(a) planning success curve",
        ylim=(0, 1.02),
    )
    # One legend for panels (a) and (c), below the figure: inside a panel it hides curves.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8)

    ax = axes[1]
    names, means, sems, colors, hatches = [], [], [], [], []
    for r in results:
        names.append(label(r))
        means.append(r["normalized_mean"])
        sems.append(r["normalized_sem"])
        colors.append("C0")
        hatches.append("")
    for task in dict.fromkeys(r["task"] for r in results):
        for method, (mean, sem) in PUBLISHED.get(task, {}).items():
            names.append(f"{task} {method} (published)")
            means.append(mean)
            sems.append(sem)
            colors.append("0.75")
            hatches.append("//")
    y = np.arange(len(names))
    bars = ax.barh(y, means, xerr=sems, color=colors, capsize=3)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="D4RL-normalised score (mean ± SE)", title="(b) score: ours and published")

    extra = [
        (differ_in_compute, "decisions per second (log)", "(c) score against compute", None),
        (
            with_zones,
            "steps inside a keep-out zone per episode",
            "(d) score against zone steps",
            "zone_steps",
        ),
        (
            differ_in_objective,
            "action energy per episode (sum of |a|²)",
            "(e) score against effort",
            "energy",
        ),
    ]
    ax_iter = iter(axes[2:])
    for shown, xlabel, title, field in extra:
        if not shown:
            continue
        ax = next(ax_iter)
        for r in results:  # same colour order as panel (a), whose legend names them
            if field is None:
                x, xerr = r["decisions_per_second"], None
            else:
                values = np.array([e.get(field, np.nan) for e in r["per_episode"]], dtype=float)
                x, xerr = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
            ax.errorbar(
                x, r["normalized_mean"], xerr=xerr, yerr=r["normalized_sem"], fmt="o", capsize=3
            )
        if field is None:
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="D4RL-normalised score", title=title)

    episodes = sorted({r["episodes"] for r in results})
    seeds = sorted({r.get("seed", 0) for r in results})
    runs = f"{'/'.join(map(str, episodes))} episodes from seed {'/'.join(map(str, seeds))}"
    fig.suptitle(
        "Protocol: D4RL-faithful Maze2D, full time limit, sparse reward (radius 0.5), replanning "
        f"every step; {runs}. Published: Diffusion Forcing paper, Table 1 (looser protocol).",
        fontsize=8,
    )
    written = []
    for suffix in ("png", "svg"):
        path = out.with_suffix(f".{suffix}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix, dpi=110)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="result JSON files written by 'dfplan bench'")
    p.add_argument(
        "-o", "--out", default="dfplan_plot", help="output file stem (default dfplan_plot)"
    )


def run_plot(args: argparse.Namespace) -> int:
    results = [load_result(p) for p in args.results]
    out = Path(args.out)
    if out.suffix in (".png", ".svg"):
        out = out.with_suffix("")
    if not out.parent.exists():
        raise UserError(f"folder {out.parent} does not exist; create it or choose another -o")
    for path in plot(results, out):
        print(f"wrote {path}")
    return 0
