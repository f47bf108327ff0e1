"""D4RL-faithful Maze2D environments, task registry and datasets.

Importing this module registers the env ids with gymnasium:
`dfplan/maze2d-{umaze,medium,large}-v1`, `dfplan/multi2d-{umaze,medium,large}-v1` and the
keep-out scenarios `dfplan/{maze2d-large,maze2d-medium,multi2d-large}-keepout-v1`. The OGBench
PointMaze tasks (`POINTMAZE_TASKS`) use OGBench's own env ids; `ALL_TASKS` holds both families.
"""

import gymnasium as gym

from dfplan.envs.pointmaze import POINTMAZE_TASKS, PointMazeTask
from dfplan.envs.tasks import ALL_TASKS, TASKS, Task, get_task


def register_envs() -> None:
    for task in TASKS.values():
        if task.env_id in gym.registry:
            continue
        gym.register(
            id=task.env_id,
            entry_point="dfplan.envs.maze2d:Maze2DEnv",
            max_episode_steps=task.max_episode_steps,
            kwargs={
                "maze": task.maze,
                "multi_goal": task.multi_goal,
                "ref_min_score": task.ref_min_score,
                "ref_max_score": task.ref_max_score,
                "zones": task.zones,
            },
        )


register_envs()

__all__ = [
    "ALL_TASKS",
    "POINTMAZE_TASKS",
    "TASKS",
    "PointMazeTask",
    "Task",
    "get_task",
    "register_envs",
]
