"""Can the planner hold a goal? Start the agent at a chosen state and count steps near the goal.

    python -m lab.hold_probe maze2d-large --state 7,9,0,0 [--steps 100]
        [--policy-seeds 3] [--method df] [--checkpoint P] [--planner FIELD=VALUE ...]

The episode's goal is the task's (reset with `--env-seed`); the agent is then placed at
`--state` (x, y, vx, vy) and the policy acts for `--steps` steps. Prints, for each planner seed,
the steps spent within the success radius (D4RL's reward) and the distance to the goal every 20
steps. `--state` at the goal at rest asks whether plans keep an agent that has arrived; a state
past the goal asks whether they bring it back.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from dfplan.envs import get_task
from dfplan.errors import UserError
from dfplan.policies import make_policy


def hold(task, policy, state: np.ndarray, steps: int, policy_seed: int, env_seed: int):
    """-> (steps within the success radius, distances to the goal after each step)."""
    env = gym.make(task.env_id)
    _, info = env.reset(seed=env_seed)
    goal = np.asarray(info["goal"])
    env.unwrapped.set_state(state[:2], state[2:])
    obs = state.copy()
    policy.reset(seed=policy_seed)
    inside, distances = 0.0, []
    for _ in range(steps):
        obs, reward, _, _, info = env.step(policy.act(obs, info))
        inside += reward
        distances.append(float(np.linalg.norm(obs[:2] - goal)))
    env.close()
    return inside, distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--state", required=True, help="x,y,vx,vy")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--policy-seeds", type=int, default=3, help="planner seeds 0..N-1")
    parser.add_argument("--env-seed", type=int, default=0)
    parser.add_argument("--method", default="df")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planner", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    try:
        state = np.array([float(v) for v in args.state.split(",")])
        if state.shape != (4,):
            raise ValueError
    except ValueError:
        raise UserError(f"--state needs four numbers x,y,vx,vy, got '{args.state}'") from None
    task = get_task(args.task)
    policy = make_policy(args.method, task, args.checkpoint, args.device, args.planner)
    held = []
    for seed in range(args.policy_seeds):
        inside, distances = hold(task, policy, state, args.steps, seed, args.env_seed)
        held.append(inside)
        trace = " ".join(f"{d:.2f}" for d in distances[19::20])
        print(
            f"planner seed {seed}: {inside:.0f}/{args.steps} steps within the goal; "
            f"distance every 20 steps: {trace}"
        )
    print(
        f"{task.name} {args.method} {' '.join(args.planner)}: mean {np.mean(held):.1f} of "
        f"{args.steps} steps within the goal from {args.state}"
    )


if __name__ == "__main__":
    import sys

    try:
        main()
    except UserError as e:  # one line naming the mistake, exit status 2, as the CLI does
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
