"""Pins of the shipped planners' decisions, keyed to each checkpoint's content hash.

`decisions(stem)` runs a shipped planner for a few steps of its own task from fixed seeds and
returns its actions; tests/pinned_decisions.json holds them. A refactor must leave every pinned
action unchanged; a new shipped checkpoint changes its hash and is re-pinned on its own:

    python tests/pinned_decisions.py maze2d-large          # re-pin one checkpoint
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

PINS = Path(__file__).with_name("pinned_decisions.json")
STEPS = 3  # decisions per episode
SEEDS = (0, 1)  # env and planner seed of each pinned episode


def checkpoint_hash(stem: Path) -> str:
    """sha256 of the weights and the JSON (config, normaliser, planner settings)."""
    h = hashlib.sha256()
    for suffix in (".safetensors", ".json"):
        h.update(stem.with_name(stem.name + suffix).read_bytes())
    return h.hexdigest()[:16]


def decisions(name: str) -> list[list[float]]:
    """Actions of shipped checkpoint `name` (e.g. maze2d-large, maze2d-medium-paper): STEPS
    decisions from env seed s, planner seed s, for each s in SEEDS; (len(SEEDS) * STEPS, 2)."""
    import torch

    from dfplan.envs import get_task
    from dfplan.policies.diffuser import DiffuserPolicy
    from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy
    from dfplan.policies.gcbc import GCBCPolicy

    torch.set_num_threads(1)
    from dfplan.checkpoint import shipped_checkpoints

    task = name.removesuffix("-diffuser").removesuffix("-paper").removesuffix("-gcbc")
    kinds = {"-diffuser": DiffuserPolicy, "-gcbc": GCBCPolicy}
    cls = next((c for end, c in kinds.items() if name.endswith(end)), DiffusionForcingPolicy)
    stem = {s.name: s for s in shipped_checkpoints()}[name]
    policy = cls.from_pretrained(task, stem, device="cpu")
    spec = get_task(task)
    env = spec.make_env()
    actions = []
    for seed in SEEDS:
        obs, info = spec.reset(env, seed)
        policy.reset(seed=seed)
        for _ in range(STEPS):
            action = policy.act(obs, info)
            actions.append([float(a) for a in action])
            obs, _, _, _, info = env.step(action)
    env.close()
    return actions


def shipped() -> dict[str, Path]:
    from dfplan.checkpoint import shipped_checkpoints

    return {stem.name: stem for stem in shipped_checkpoints()}


def repin(names: list[str]) -> None:
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    stems = shipped()
    for name in names:
        pins[name] = {"hash": checkpoint_hash(stems[name]), "actions": decisions(name)}
        print(f"pinned {name}")
    for name in set(pins) - set(stems):
        del pins[name]  # a checkpoint no longer shipped
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    repin(sys.argv[1:] or sorted(shipped()))
