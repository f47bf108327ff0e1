"""`dfplan` command line: info, data, train, bench, plot.

User mistakes raise `UserError`; `main` prints its message on one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from dfplan.errors import UserError


# -- info ------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from dfplan.envs import ALL_TASKS
    from dfplan.envs.datasets import dataset_path, datasets_root

    print("tasks:")
    width = max(len(name) for name in ALL_TASKS)
    for task in ALL_TASKS.values():
        print(f"  {task.name:{width}s} env {task.env_id:34s} time limit {task.max_episode_steps}")
    print(f"datasets (under {datasets_root()}):")
    id_width = max(len(task.dataset_id) for task in ALL_TASKS.values())
    seen = set()
    for task in ALL_TASKS.values():
        if task.dataset_id in seen:
            continue
        seen.add(task.dataset_id)
        present = dataset_path(task.dataset_id).exists()
        state = "present" if present else f"missing (make it: dfplan data {task.dataset_task})"
        print(f"  {task.dataset_id:{id_width}s} {state}")
    from dfplan.checkpoint import shipped_checkpoints

    ckpts = shipped_checkpoints()
    print("shipped checkpoints:" + ("" if ckpts else " none yet"))
    for c in ckpts:
        print(f"  {c.name}")
    return 0


# -- data ------------------------------------------------------------------------------------
def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "task",
        help="maze2d-{umaze,medium,large} or "
        "pointmaze-{medium,large,giant,teleport}-{navigate,stitch}",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="maze2d: transitions to generate (default: the maze's recipe, D4RL's 1M / 2M / 4M)",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="pointmaze: train episodes (default OGBench's: navigate 1000, giant 500; "
        "stitch 5000; +10%% validation)",
    )
    p.add_argument(
        "--episode-steps",
        type=int,
        default=None,
        help="pointmaze: steps per episode (default OGBench's: navigate 1001, giant 2001; "
        "stitch 201)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=None,
        help="std of Gaussian action noise (default: the recipe's 0.3; D4RL's data used 0.5)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the recipe's; pointmaze: 0)"
    )
    p.add_argument(
        "--dwell",
        default=None,
        help="P,MIN,MAX: hold at a reached target with probability P for MIN..MAX "
        "steps; 0 for the pure D4RL procedure (default: the recipe's 0.5,50,100)",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if the dataset exists")


def cmd_data(args: argparse.Namespace) -> int:
    from dfplan.envs import get_task
    from dfplan.envs.datasets import DataConfig, make_dataset, parse_dwell
    from dfplan.recipe import data_settings

    task = get_task(args.task)
    if task.family == "pointmaze":
        return _pointmaze_data(task, args)
    if args.episodes is not None or args.episode_steps is not None:
        raise UserError("--episodes and --episode-steps are for pointmaze tasks; use --steps")
    if task.name != task.dataset_task:
        raise UserError(
            f"{task.name} uses the {task.dataset_task} dataset: "
            f"run 'dfplan data {task.dataset_task}'"
        )
    settings = data_settings(task.maze)  # the recipe's, then the flags given
    for name in ("steps", "noise", "seed"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.dwell is not None:
        p, lo, hi = parse_dwell(args.dwell)
        settings.update(dwell_prob=p, dwell_min=lo, dwell_max=hi)
    if settings["steps"] <= 0:
        raise UserError(f"--steps must be a positive number of steps, got {settings['steps']}")
    if settings["noise"] < 0:
        raise UserError(f"--noise must be >= 0, got {settings['noise']}")
    config = DataConfig(task.name, **settings)
    path = make_dataset(config, task, force=args.force)
    print(f"dataset {task.dataset_id} at {path}")
    return 0


def _pointmaze_data(task, args: argparse.Namespace) -> int:
    """OGBench's procedure of the task's kind (navigate or stitch); OGBench's sizes unless
    --episodes / --episode-steps."""
    from dfplan.envs.pointmaze_data import PointMazeDataConfig, make_pointmaze_dataset

    for flag in ("steps", "noise", "dwell"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag} is for maze2d tasks; {task.name} takes --episodes")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be in 0..2**32-1, got {args.seed}")
    config = PointMazeDataConfig(
        task.name,
        task.data_episodes if args.episodes is None else args.episodes,
        task.data_episode_steps if args.episode_steps is None else args.episode_steps,
        seed=0 if args.seed is None else args.seed,
    )
    path, steps, seconds = make_pointmaze_dataset(task, config, force=args.force)
    if steps == 0:
        print(f"dataset {task.dataset_id} at {path} (present; --force to regenerate)")
    else:
        print(
            f"dataset {task.dataset_id} at {path}: {config.episodes} episodes "
            f"(+{config.val_episodes} in {task.val_dataset_id}), {steps} steps in all, "
            f"{seconds:.1f} s"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dfplan import __version__

    parser = argparse.ArgumentParser(
        prog="dfplan", description="Diffusion Forcing planning for Maze2D on modern MuJoCo."
    )
    parser.add_argument("--version", action="version", version=f"dfplan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="list tasks, datasets present and shipped checkpoints")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", help="generate an expert dataset (Minari format)")
    add_data_arguments(p)
    p.set_defaults(func=cmd_data)

    try:
        from dfplan.train_cli import add_train_arguments, run_train
    except ImportError:  # pragma: no cover - the trainer is optional while it is being built
        pass
    else:
        p = sub.add_parser(
            "train",
            help="train a Diffusion Forcing model (or --model diffuser) on a dataset",
            description="Train by the task's recipe, dfplan/recipes/MAZE.json (its model, "
            "training stages and the planner settings written into the checkpoint); flags "
            "override every stage.",
        )
        add_train_arguments(p)
        p.set_defaults(func=run_train)

    from dfplan.benchmarks.bench import add_bench_arguments, run_bench

    p = sub.add_parser("bench", help="score a planner on the benchmark protocol")
    add_bench_arguments(p)
    p.set_defaults(func=run_bench)

    from dfplan.benchmarks.plots import add_plot_arguments, run_plot

    p = sub.add_parser("plot", help="success curves and score plots from bench results")
    add_plot_arguments(p)
    p.set_defaults(func=run_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"dfplan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfplan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
