"""dfplan: Diffusion Forcing planning and control, with D4RL-faithful Maze2D on modern MuJoCo."""

from pathlib import Path

__version__ = "0.1.0"

# In a clone, the subpackages dfplan.envs, dfplan.policies and dfplan.benchmarks are the
# top-level folders envs/, policies/ and benchmarks/ (setup.cfg maps them on install). Python
# started in the clone's root finds this folder before the installed package, so look for them
# beside it too: `import dfplan`, `python -m dfplan` and torchrun then work from the root.
_clone_root = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "envs").is_dir() and (_clone_root / "envs" / "maze2d.py").is_file():
    __path__.append(str(_clone_root))  # noqa: F821  (a package's __path__)

import dfplan.envs  # noqa: E402,F401  (registers the gymnasium env ids)
