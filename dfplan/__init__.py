"""dfplan: Diffusion Forcing planning and control, with D4RL-faithful Maze2D on modern MuJoCo."""

__version__ = "0.1.0"

import dfplan.envs  # noqa: E402,F401  (registers the gymnasium env ids)
