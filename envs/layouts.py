"""Maze layouts of D4RL maze2d-v1 and the MJCF model built from them.

Layout strings use D4RL's notation: `#` wall, `O` free, `G` goal; row i, column j.
Everything here is expressed in D4RL's qpos frame: the agent body sits at world (1.2, 1.2), so a
qpos of (i, j) is the centre of cell (i, j) as seen by the wall grid minus 0.2. Targets and reset
locations are the integer cell indices themselves, exactly as D4RL uses them.
"""

from __future__ import annotations

import numpy as np

UMAZE = "#####\\#GOO#\\###O#\\#OOO#\\#####"
MEDIUM = "########\\#OO##OO#\\#OO#OOO#\\##OOO###\\#OO#OOO#\\#O#OO#O#\\#OOO#OG#\\########"
LARGE = (
    "############\\#OOOO#OOOOO#\\#O##O#O#O#O#\\#OOOOOO#OOO#\\#O####O###O#\\#OO#O#OOOOO#"
    "\\##O#O#O#O###\\#OO#OOO#OGO#\\############"
)
LAYOUTS = {"umaze": UMAZE, "medium": MEDIUM, "large": LARGE}

WALL, FREE, GOAL = "#", "O", "G"


def parse_layout(spec: str) -> np.ndarray:
    """Layout string (rows separated by a backslash) -> (H, W) array of single characters."""
    rows = spec.split("\\")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"maze rows have different lengths: {rows}")
    return np.array([list(r) for r in rows])


def free_cells(grid: np.ndarray) -> list[tuple[int, int]]:
    """Free and goal cells in D4RL's order (free cells sorted, then goal cells)."""
    free = sorted(zip(*np.where(grid == FREE), strict=True))
    goals = list(zip(*np.where(grid == GOAL), strict=True))
    return [(int(i), int(j)) for i, j in free + goals]


def goal_cell(grid: np.ndarray) -> tuple[int, int]:
    (i,), (j,) = np.where(grid == GOAL)
    return int(i), int(j)


def inner_bounds(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) (x, y) corners of the area inside the border walls, in D4RL's qpos frame.

    Wall (i, j) is the unit box centred at world (i + 1, j + 1) and the agent's body sits at
    world (1.2, 1.2), so in the qpos frame cell (i, j) spans [i - 0.7, i + 0.3] on each axis.
    """
    h, w = grid.shape
    return np.full(2, 0.3), np.array([h, w]) - 1.7  # cells 1 .. H - 2: [1 - 0.7, H - 2 + 0.3]


def wall_mask(grid: np.ndarray) -> np.ndarray:
    """(H, W) bool, True where the cell is a wall."""
    return grid == WALL


def build_mjcf(grid: np.ndarray) -> str:
    """MJCF of D4RL's point maze: physics parameters exactly as D4RL's maze_model.py sets them.

    Visual-only elements (textures, materials) are simplified; they do not affect dynamics.
    """
    walls = []
    for i, j in zip(*np.where(grid == WALL), strict=True):
        walls.append(
            f'    <geom name="wall_{i}_{j}" type="box" pos="{i + 1.0} {j + 1.0} 0" '
            f'size="0.5 0.5 0.2" conaffinity="1" rgba="0.7 0.5 0.3 1"/>'
        )
    h, w = grid.shape
    return f"""<mujoco model="point_maze">
  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2"
          conaffinity="1"/>
  </default>
  <visual><global offwidth="512" offheight="512"/></visual>
  <worldbody>
    <light pos="{h / 2} {w / 2} 10" dir="0 0 -1" directional="true"/>
    <camera name="top" pos="{h / 2 + 0.5} {w / 2 + 0.5} {1.2 * max(h, w)}" xyaxes="0 -1 0 1 0 0"/>
    <geom name="ground" type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="1"
          conaffinity="0" rgba="0.9 0.9 0.9 1"/>
    <body name="particle" pos="1.2 1.2 0">
      <geom name="particle_geom" type="sphere" size="0.1" contype="1" rgba="0.1 0.3 0.9 1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
    <site name="target_site" pos="0 0 0" size="0.2" rgba="0.9 0.2 0.2 0.6"/>
{chr(10).join(walls)}
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""
