"""Planner memory over one long episode: resident memory and live tensors must stay flat.

    python -m dfplan.benchmarks.planner_memory                       # tiny model, 10,000 steps
    python -m dfplan.benchmarks.planner_memory --checkpoint shipped --steps 2000

Runs the Diffusion Forcing policy in one episode of `--steps` env steps (no time limit, so its
warm-start plan lives the whole way) and samples, every `--every` steps, the process's resident
memory (RSS, /proc/self/statm) and the number of live torch tensors. After the warm-up, neither
may grow: a cache that keeps every plan, or an autograd graph kept alive from one decision to the
next (guidance backpropagates through the model every step), would show in both. The weights do
not matter for this, so the default is a tiny random-weight model that runs fast on a CPU.
Prints one line per sample and exits 1 if memory grew.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import gymnasium as gym
import numpy as np
import torch

from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

GROWTH_LIMIT_MIB = 10.0  # allocator noise stays far below this; a graph kept per step does not


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): some torch module objects warn when asked for their __class__.
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def tiny_policy(task: str, **planner) -> DiffusionForcingPolicy:
    """The DF policy on a random-weight model of a few thousand parameters; warm start and MCG
    guidance on (`planner` overrides PlannerConfig fields)."""
    from dfplan.envs import get_task
    from dfplan.model import DiffusionForcingModel, ModelConfig
    from dfplan.normalizer import Normalizer
    from dfplan.planner import DiffusionForcingPlanner, PlannerConfig

    torch.manual_seed(0)
    model = DiffusionForcingModel(ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=4))
    ones = np.ones(4, np.float32)
    norm = Normalizer(ones * 2, ones, np.zeros(2, np.float32), np.full(2, 0.5, np.float32))
    config = PlannerConfig(**{"sampling_steps": 4, "refresh_rows": 2, "mcg_samples": 2, **planner})
    return DiffusionForcingPolicy(DiffusionForcingPlanner(model, norm, config), get_task(task))


def run(
    policy: DiffusionForcingPolicy, task: str, steps: int, every: int, seed: int = 0
) -> list[dict]:
    """One episode of `steps` env steps; a sample {step, rss_mib, tensors} every `every` steps."""
    from dfplan.envs import get_task

    env = gym.make(get_task(task).env_id, max_episode_steps=steps)
    policy.max_episode_steps = steps  # one episode: the policy never restarts its plan
    obs, info = env.reset(seed=seed)
    policy.reset(seed=seed)
    samples = []
    for t in range(1, steps + 1):
        obs, _, _, _, info = env.step(policy.act(obs, info))
        if t % every == 0:
            samples.append({"step": t, "rss_mib": rss_mib(), "tensors": live_tensors()})
    env.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dfplan.benchmarks.planner_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--task", default="maze2d-umaze")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint, or 'shipped' for the task's shipped one (default: a tiny model)",
    )
    parser.add_argument("--steps", type=int, default=10_000, help="episode length (10000)")
    parser.add_argument("--every", type=int, default=1000, help="steps between samples (1000)")
    parser.add_argument("--warmup", type=int, default=1000, help="steps before the baseline")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        policy = tiny_policy(args.task)
    else:
        stem = None if args.checkpoint == "shipped" else args.checkpoint
        policy = DiffusionForcingPolicy.from_pretrained(args.task, stem, "cpu")
    samples = run(policy, args.task, args.steps, args.every)
    for s in samples:
        print(f"step {s['step']:6d}  RSS {s['rss_mib']:8.1f} MiB  live tensors {s['tensors']}")
    base = next(s for s in samples if s["step"] >= args.warmup)
    end = samples[-1]
    growth = end["rss_mib"] - base["rss_mib"]
    print(
        f"after warm-up (step {base['step']}) to step {end['step']}: RSS {growth:+.1f} MiB, "
        f"live tensors {end['tensors'] - base['tensors']:+d}"
    )
    return 0 if growth < GROWTH_LIMIT_MIB and end["tensors"] <= base["tensors"] else 1


if __name__ == "__main__":
    sys.exit(main())
