"""`dfplan bench`: score a method on a task under the benchmark protocol; table + JSON result.

Protocol (Maze2D): D4RL-faithful env, full time limit (300 / 600 / 800), sparse reward radius
0.5, the policy's own actions, the planner replans every step, N episodes with seeds
seed..seed+N-1, D4RL-normalised mean +- standard error, raw return, success rate (reached the goal
at least once) and steps to first success. Protocol (OGBench PointMaze): OGBench's, see
`POINTMAZE_PROTOCOL`. Episode k's result depends only on its seed, not on how episodes are
batched, so results are comparable across batch sizes and workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import sys
import time
import traceback
from pathlib import Path

from dfplan.benchmarks.harness import run_episodes, step_bar, summarize
from dfplan.envs import get_task
from dfplan.errors import UserError
from dfplan.files import atomic_write_json, ensure_writable_dir, remove_stale_temps
from dfplan.policies.factory import METHODS, make_policy

POINTMAZE_PROTOCOL = (
    "OGBench's protocol: OGBench 1.2.2 env, its five evaluation tasks, the episode with seed s "
    "runs task_id 1 + s % 5 (= 1 + k % 5 for episode k of a run from seed 0), success = within "
    "1.0 of the goal, which ends the episode, 1000 steps, score = 100 * success (no "
    "normalisation exists: the mean is the success rate in %), mean +- SE"
)
# The summary fields a result JSON carries, in order.
SUMMARY_FIELDS = (
    "normalized_mean",
    "normalized_sem",
    "raw_mean",
    "success_rate",
    "success_sem",
    "success_by_task",
    "steps_to_goal_mean",
    "zone_steps_mean",
    "zone_entered_rate",
    "energy_mean",
)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "task",
        help="maze2d-{umaze,medium,large}, multi2d-{umaze,medium,large} or "
        "pointmaze-{medium,large,giant,teleport}-{navigate,stitch} (dfplan info lists all)",
    )
    p.add_argument("--method", default="df", help=f"one of {', '.join(METHODS)} (default df)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to bench (NAME.safetensors or its stem); default: shipped",
    )
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--batch-size", type=int, default=100, help="episodes run in lock-step")
    p.add_argument("--out", default=None, help="folder for the JSON result (default ./results)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--planner",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override planner settings, e.g. guidance_scale=0.5 mcg_samples=8 (df), "
        "replan_every=10 diffused_actions=true (diffuser)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes on this machine, each running a share of the episodes "
        "(default: one per two CPU cores, at most 8, for the learned planners on CPU; else 1)",
    )
    p.add_argument("--label", default=None, help="name for this variant in tables, plots, files")
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="X,Y,R",
        help="add a keep-out disk (qpos frame); repeat for more; the DF planners avoid it by "
        "default and the expert treats it as a wall",
    )
    p.add_argument(
        "--objective",
        nargs="*",
        default=None,
        metavar="NAME=WEIGHT",
        help="objective of the DF planners: keepout=W, effort=W, module:attr=W (a callable on "
        "a plan), or none (default: keepout=10 on tasks with zones, else none)",
    )


def with_zones(task, zones: list[str]):
    """The task with the `--zone X,Y,R` disks added (checked against its maze)."""
    import dataclasses

    from dfplan.envs.layouts import LAYOUTS, parse_layout
    from dfplan.envs.maze2d import check_zones

    if not zones:
        return task
    if task.family != "maze2d":
        raise UserError(f"--zone works on maze2d and multi2d tasks only, not on {task.name}")
    parsed = []
    for text in zones:
        try:
            x, y, r = (float(v) for v in text.split(","))
        except ValueError:
            raise UserError(f"--zone takes X,Y,R (three numbers), got '{text}'") from None
        parsed.append((x, y, r))
    try:
        check_zones(parsed, parse_layout(LAYOUTS[task.maze]))
    except ValueError as e:
        raise UserError(f"--zone: {e}") from None
    return dataclasses.replace(task, zones=tuple(task.zones) + tuple(parsed))


def check_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device '{device}'; use cpu or cuda")
    return device


def run_bench(args: argparse.Namespace) -> int:
    task = with_zones(get_task(args.task), args.zone)
    if args.method not in METHODS:
        raise UserError(f"unknown method '{args.method}'; valid methods: {', '.join(METHODS)}")
    if args.episodes <= 0:
        raise UserError(f"--episodes must be a positive number, got {args.episodes}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", args.label):
        raise UserError(f"--label may use letters, digits and _.+- only, got '{args.label}'")
    if args.workers is not None and args.workers <= 0:
        raise UserError(f"--workers must be a positive number, got {args.workers}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be a positive number, got {args.batch_size}")
    device = check_device(args.device)
    workers = args.workers or default_workers(args.method, device, args.episodes)
    out = Path(args.out) if args.out else Path("results")
    ensure_writable_dir(out, "--out", "results")

    objective = None if args.objective is None else tuple(args.objective)
    spec = (args.method, task, args.checkpoint, device, tuple(args.planner), args.batch_size)
    spec = (*spec, objective)
    rank, world = _distributed()
    if world > 1 and device == "cuda":  # one GPU per rank, as torchrun numbers them
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        spec = (*spec[:3], device, *spec[4:])
    # Built before any episode runs, so a bad checkpoint or planner setting fails at once.
    policy = make_policy(*spec[:5], objective) if world == 1 else None
    tic = time.perf_counter()
    if world > 1:  # under torchrun: rank r runs shard r; rank 0 gathers and writes
        import torch.distributed as dist

        shard = run_shard(spec, *_shard(args.seed, args.episodes, rank, world), progress=rank == 0)
        shards = [None] * world
        dist.gather_object(shard, shards if rank == 0 else None, dst=0)
        if rank != 0:
            dist.destroy_process_group()
            return 0
        dist.destroy_process_group()
    elif workers > 1:
        shards = _run_workers(spec, args.seed, args.episodes, workers)
    else:
        shards = [run_shard(spec, args.seed, args.episodes, policy=policy)]
    records = sorted((r for sh in shards for r in sh["records"]), key=lambda r: r.seed)
    dps = sum(sh["decisions_per_second"] for sh in shards)  # shards run at the same time
    wall = time.perf_counter() - tic
    summary = summarize(records)
    result = {
        "task": task.name,
        "method": args.method,
        "label": args.label,
        "episodes": args.episodes,
        "seed": args.seed,
        **{k: summary[k] for k in SUMMARY_FIELDS},
        "decisions_per_second": dps,
        "wall_seconds": wall,
        "device": device if args.method not in ("expert", "greedy", "random") else "cpu",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "checkpoint": shards[0]["checkpoint"],
        "config": shards[0]["config"],
        "zones": [list(z) for z in task.zones],
        "objective": shards[0]["objective"],
        "workers": max(world, workers),
        "protocol": _protocol(task, shards[0]["config"]),
        "per_episode": [r.to_dict() for r in records],
    }
    name = f"{task.name}_{args.method}" + (f"_{args.label}" if args.label else "")
    path = out / f"{name}.json"
    remove_stale_temps(path)  # left by a bench killed while writing this result
    atomic_write_json(path, result)
    print_table([result])
    print(f"result: {path}")
    return 0


def _protocol(task, config: dict) -> str:
    if task.family == "pointmaze":
        return POINTMAZE_PROTOCOL
    return (
        "D4RL-faithful env, full time limit, sparse reward r=0.5, "
        f"{_replanning(config)}, seeds seed..seed+N-1, D4RL-normalised x100, mean +- SE"
    )


def _replanning(config: dict) -> str:
    """How often the policy plans, for the protocol line (Diffuser's may plan once)."""
    every = config.get("replan_every")
    if every is None:
        return "replanning every step"
    if every:
        return f"replanning every {every} steps"
    if config.get("diffused_actions"):
        return "a plan's actions executed open-loop, replanned when they run out"
    return "one plan per episode, tracked"


def default_workers(method: str, device: str, episodes: int) -> int:
    """Worker processes when `--workers` is not given.

    Learned planners on CPU: one per two cores (at most 8), each with two threads. On this
    2-core machine that is one process: the main job ran at 65 environment steps/s in one
    2-thread process and at 59 in two 1-thread workers (the planner's matrix products already
    keep both cores busy). On more cores, one process cannot use them all on batch-100 products
    of this size. On a GPU, or for methods that cost nothing: one.
    """
    if device != "cpu" or method not in ("df", "df-nomcg", "diffuser"):
        return 1
    return max(1, min((os.cpu_count() or 1) // 2, 8, episodes))


def run_shard(
    spec: tuple, seed: int, episodes: int, progress: bool = True, policy=None, report=None
) -> dict:
    """Run episodes seed..seed+episodes-1 of one bench; everything a result file needs."""
    from dataclasses import asdict, is_dataclass

    method, task, checkpoint, device, planner, batch_size, objective = spec
    if policy is None:
        policy = make_policy(method, task, checkpoint, device, planner, objective)
    records, dps = run_episodes(
        task, policy, episodes, seed, batch_size, progress=progress, report=report
    )
    config = getattr(getattr(policy, "planner", None), "config", None)
    return {
        "records": records,
        "decisions_per_second": dps,
        "checkpoint": getattr(policy, "checkpoint", None),
        "config": asdict(config) if is_dataclass(config) else {},
        "objective": describe_objective(getattr(policy, "objective", None)),
    }


def describe_objective(objective) -> str | None:
    """A readable line for result files: 'KeepOut*10 + Effort*0.5'."""
    if objective is None:
        return None
    terms = getattr(objective, "terms", ((objective, 1.0),))
    return " + ".join(f"{type(r).__name__}*{w:g}" for r, w in terms)


def _shard(seed: int, episodes: int, index: int, count: int) -> tuple[int, int]:
    """Contiguous share `index` of `count` of the episodes: (first seed, episodes)."""
    lo, hi = index * episodes // count, (index + 1) * episodes // count
    return seed + lo, hi - lo


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises gloo under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def _send(out, message: tuple) -> None:
    """Send to the parent bench; if it is gone (killed), stop instead of running on unseen."""
    try:
        out.send(message)
    except BrokenPipeError:
        os._exit(1)


def _worker(job: tuple, out) -> None:
    """A worker process: run one shard, sending ("step", (steps, reached)) as it goes and
    ("done", shard) or ("error", exception) at the end, over its own pipe `out`."""
    import torch

    spec, seed, episodes, threads = job
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    # ... with SIGTERM, taken as a normal exit so the worker's semaphores (tqdm's lock) are
    # released, not reported leaked.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    torch.set_num_threads(threads)

    def report(steps: int, reached: int) -> None:
        _send(out, ("step", (steps, reached)))

    try:
        shard = run_shard(spec, seed, episodes, progress=False, report=report)
    except Exception as e:  # noqa: BLE001  (the parent re-raises it)
        if not isinstance(e, UserError):
            e = RuntimeError(f"bench worker failed: {traceback.format_exc()}")
        _send(out, ("error", e))
    else:
        _send(out, ("done", shard))


def _run_workers(spec: tuple, seed: int, episodes: int, workers: int) -> list[dict]:
    """Shards in `workers` processes; their steps feed one progress bar here."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(spec, *_shard(seed, episodes, i, workers), threads) for i in range(workers)]
    jobs = [j for j in jobs if j[2] > 0]
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    task = spec[1]
    bar = step_bar(task, episodes, desc=f"{task.name} ({len(jobs)} workers)")
    procs, pending, shards, reached = [], {}, {}, 0
    try:
        for i, job in enumerate(jobs):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(job, send), daemon=True)
            proc.start()
            send.close()  # the worker holds the only write end: EOF means it died
            procs.append(proc)
            pending[receive] = i
        while pending:
            for conn in wait(list(pending)):
                i = pending[conn]
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    procs[i].join()
                    code = procs[i].exitcode
                    raise RuntimeError(f"bench worker {i} died (exit code {code})") from None
                if kind == "step":
                    bar.update(payload[0])
                    if payload[1]:
                        reached += payload[1]
                        bar.set_postfix(reached=f"{reached}/{episodes}", refresh=False)
                elif kind == "error":
                    raise payload
                else:
                    shards[i] = payload
                    del pending[conn]
        return [shards[i] for i in range(len(jobs))]
    finally:
        bar.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()


def print_table(results: list[dict]) -> None:
    """One row per result; PointMaze rows add their success rate per evaluation task below."""
    width = max(15, *(len(r["task"]) for r in results))
    head = (
        f"{'task':{width}s} {'method':9s} {'score':>14s} {'raw':>7s} {'success':>8s} "
        f"{'to goal':>8s} {'dec/s':>8s} {'wall s':>7s}"
    )
    print(head)
    for r in results:
        score = f"{r['normalized_mean']:.1f} +- {r['normalized_sem']:.1f}"
        to_goal = f"{r['steps_to_goal_mean']:.0f}" if r["steps_to_goal_mean"] else "-"
        method = r.get("label") or r["method"]
        print(
            f"{r['task']:{width}s} {method:9s} {score:>14s} {r['raw_mean']:>7.1f} "
            f"{r['success_rate']:>8.0%} {to_goal:>8s} {r['decisions_per_second']:>8.1f} "
            f"{r['wall_seconds']:>7.1f}"
        )
        if r.get("success_by_task"):  # keys are ints here, strings once read back from JSON
            rates = ", ".join(f"{k}: {v:.0%}" for k, v in r["success_by_task"].items())
            print(f"{'':{width}s} success by evaluation task: {rates}")
    print(
        f"({results[0]['episodes']} episodes, seeds {results[0]['seed']}.."
        f"{results[0]['seed'] + results[0]['episodes'] - 1}; {results[0]['protocol']})"
    )
