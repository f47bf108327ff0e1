"""Top-down matplotlib drawing of a maze, the agent and the goal (the renderer needing no GL).

Also used by plots that overlay planned trajectories on the maze.
"""

from __future__ import annotations

import numpy as np

from dfplan.envs.layouts import WALL


def draw_walls(ax, layout: np.ndarray) -> None:
    """Draw wall cells on `ax` in the qpos frame: x (row) downwards, y (column) rightwards.

    Wall cell (i, j) covers qpos [i - 0.7, i + 0.3] x [j - 0.7, j + 0.3].
    """
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.where(layout == WALL), strict=True):
        ax.add_patch(Rectangle((j - 0.7, i - 0.7), 1.0, 1.0, color="#8b6b4a"))
    h, w = layout.shape
    ax.set_xlim(-0.7, w - 0.7)
    ax.set_ylim(h - 0.7, -0.7)
    ax.set_aspect("equal")


def draw_maze(layout: np.ndarray, position, goal, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8 image of the maze with the agent (blue) and goal (red)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    draw_walls(ax, layout)
    ax.add_patch(Circle((goal[1], goal[0]), 0.5, color="#d62728", alpha=0.3))
    ax.add_patch(Circle((position[1], position[0]), 0.1, color="#1f4fd6"))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
