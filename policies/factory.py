"""One place that builds a policy by method name, for the bench, the CLI and scripts.

policy = make_policy("df", "maze2d-large")                   # the shipped planner
policy = make_policy("df", "maze2d-large", "runs/x/latest", planner=["goal_weight=2"])
"""

from __future__ import annotations

from dfplan.envs import get_task
from dfplan.errors import UserError

METHODS = ("df", "df-paper", "df-nomcg", "diffuser", "gcbc", "expert", "greedy", "random")
# Methods that run on OGBench PointMaze tasks (the others are Maze2D's: the paper's setting,
# Diffuser, and the greedy controller tuned to Maze2D's dynamics).
POINTMAZE_METHODS = ("df", "gcbc", "expert", "random")
# A scenario's zones enter the DF planners as KeepOut(zones) * KEEPOUT_WEIGHT: each planned frame
# inside a zone weighs like 10 steps of travel, so any clean detour beats a route through it.
KEEPOUT_WEIGHT = 10.0


def parse_objective(terms: list[str], task):
    """['keepout=10', 'effort=0.5', 'pkg.mod:name=2'] -> one objective (a weighted sum), or None
    for [] or ['none']. keepout uses the task's zones; pkg.mod:name is any importable callable
    on a Plan (a class is instantiated with no arguments)."""
    import math

    from dfplan.guidance import Effort, KeepOut, SumReward

    if not terms or terms == ["none"]:
        return None
    parts = []
    for term in terms:
        name, _, text = term.rpartition("=")
        if not name:
            raise UserError(
                f"--objective takes NAME=WEIGHT (keepout, effort or module:attr), got '{term}'"
            )
        try:
            weight = float(text)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight):
            raise UserError(f"--objective {name}: the weight must be a finite number, got '{text}'")
        if name == "keepout":
            if not task.zones:
                raise UserError(f"--objective keepout: {task.name} has no zones; add --zone X,Y,R")
            parts.append((KeepOut(task.zones), weight))
        elif name == "effort":
            parts.append((Effort(), weight))
        elif ":" in name:
            parts.append((_import_objective(name), weight))
        else:
            raise UserError(f"--objective {name}: unknown; use keepout, effort or module:attr")
    return SumReward(*parts)


def _import_objective(path: str):
    import importlib
    import inspect

    module, _, attr = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--objective {path}: cannot import it ({e})") from None
    return found() if inspect.isclass(found) else found


def parse_overrides(pairs: list[str], config_cls: type | None = None) -> dict:
    """['guidance_scale=0.5', 'carry_x0=false'] -> typed overrides of `config_cls`'s fields
    (default: the DF planner's PlannerConfig)."""
    from dataclasses import fields

    from dfplan.planner import PlannerConfig

    types = {f.name: f.type for f in fields(config_cls or PlannerConfig)}
    out = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in types or not text:
            raise UserError(
                f"--planner takes FIELD=VALUE with FIELD one of {', '.join(types)}; got '{pair}'"
            )
        kind = types[name] if isinstance(types[name], str) else types[name].__name__
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[name] = text.lower() in ("true", "1")
            else:
                out[name] = {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:
            msg = f"--planner {name} needs a value of type {kind}, got '{text}'"
            raise UserError(msg) from None
    return out


def make_policy(
    method: str,
    task,
    checkpoint: str | None = None,
    device: str | None = None,
    planner=(),
    objective: list[str] | None = None,
):
    """The policy of `method` for `task` (a name or Task): learned ones from `checkpoint` (None:
    the shipped one) on `device`, with `planner` overrides ["FIELD=VALUE", ...].

    objective: terms for `parse_objective` (DF planners); None: the task's own, keep-out of its
    zones for a scenario task, nothing otherwise; ["none"]: no objective at all. The expert
    (and only it) treats a task's zones as walls.

    df: the checkpoint's planner; df-paper: the paper's setting (an unconditional model steered
    by Euclidean goal guidance with MCG): the maze's shipped `-paper` checkpoint where there is
    one, else the checkpoint's "planner_paper" settings; df-nomcg: df with one guidance sample.
    On OGBench PointMaze tasks only `POINTMAZE_METHODS` run (expert: `SubgoalOracleExpert`); a
    PointMaze df checkpoint routes by its data's waypoint graph (dfplan.waypoints)."""
    if isinstance(task, str):
        task = get_task(task)
    if task.family == "pointmaze" and method not in ("df", "gcbc"):
        return _pointmaze_policy(method, task)
    if method in ("df", "df-paper", "df-nomcg"):
        from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

        overrides = parse_overrides(list(planner))
        if method == "df-nomcg":
            overrides["mcg_samples"] = 1
        key = "planner"
        if method == "df-paper":  # a maze's own unconditional checkpoint, else the df one's
            from dfplan.checkpoint import shipped_paper_checkpoint

            paper = shipped_paper_checkpoint(task) if checkpoint is None else None
            checkpoint, key = (paper, "planner") if paper else (checkpoint, "planner_paper")
        if objective is None:
            objective = [f"keepout={KEEPOUT_WEIGHT:g}"] if task.zones else []
        return DiffusionForcingPolicy.from_pretrained(
            task.name,
            checkpoint,
            device,
            planner_key=key,
            objective=parse_objective(list(objective), task),
            **overrides,
        )
    if method == "diffuser":
        from dfplan.policies.diffuser import DiffuserConfig, DiffuserPolicy

        overrides = parse_overrides(list(planner), DiffuserConfig)
        return DiffuserPolicy.from_pretrained(task.name, checkpoint, device, **overrides)
    if method == "gcbc":
        from dfplan.policies.gcbc import GCBCPolicy

        return GCBCPolicy.from_pretrained(task.name, checkpoint, device)
    if method == "expert":
        from dfplan.policies import WaypointExpert

        return WaypointExpert(task.name, zones=task.zones)
    if method == "greedy":
        from dfplan.policies import GreedyPolicy

        return GreedyPolicy()
    if method == "random":
        from dfplan.policies import RandomPolicy

        return RandomPolicy()
    raise UserError(f"unknown method '{method}'; valid methods: {', '.join(METHODS)}")


def _pointmaze_policy(method: str, task):
    """expert: the oracle-subgoal expert (the ceiling: it reads the maze's oracle); random."""
    if method == "expert":
        from dfplan.policies.subgoal_oracle import SubgoalOracleExpert

        return SubgoalOracleExpert(task)
    if method == "random":
        from dfplan.policies import RandomPolicy

        return RandomPolicy()
    raise UserError(
        f"method '{method}' does not run on {task.name} yet; "
        f"use one of {', '.join(POINTMAZE_METHODS)}"
    )
