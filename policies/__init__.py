"""Policies with one protocol: `reset(goal=None, seed=None)`, then `act(obs, info) -> actions`.

Observations (B, 4) in, actions (B, 2) out (unbatched (4,) -> (2,) works too); the goal is read from
`info["goal"]` when given. Works in plain gymnasium loops and with `gymnasium.make_vec`.
"""

from dfplan.policies.diffuser import DiffuserPolicy
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy
from dfplan.policies.expert import WaypointExpert
from dfplan.policies.factory import METHODS, make_policy
from dfplan.policies.greedy import GreedyPolicy
from dfplan.policies.random import RandomPolicy

__all__ = [
    "METHODS",
    "DiffuserPolicy",
    "DiffusionForcingPolicy",
    "GreedyPolicy",
    "RandomPolicy",
    "WaypointExpert",
    "make_policy",
]
