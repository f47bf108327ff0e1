"""D4RL maze2d-v1 point maze on the official `mujoco` bindings (no mujoco-py)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from dfplan.envs.layouts import (
    LAYOUTS,
    build_mjcf,
    free_cells,
    goal_cell,
    inner_bounds,
    parse_layout,
)

SUCCESS_RADIUS = 0.5  # D4RL's sparse reward radius
MAX_SPEED = 5.0  # D4RL clips qvel to [-5, 5] before each step
# One step moves the ball at most 5 * 0.01 per axis; a jump ten times that means a reset.
RESET_JUMP = 0.5
ZONE_CLEARANCE = 0.2  # starts and goals keep this far outside every keep-out zone


def check_zones(zones, layout: np.ndarray) -> np.ndarray:
    """Keep-out zones ((x, y, radius), ...) -> (Z, 3) float64; ValueError (one line) for a zone
    that is not three finite numbers, has a radius <= 0, or has its centre outside the maze."""
    z = np.asarray(zones, dtype=np.float64).reshape(-1, 3) if len(zones) else np.zeros((0, 3))
    low, high = inner_bounds(layout)
    for x, y, r in z:
        if not np.all(np.isfinite((x, y, r))):
            raise ValueError(f"keep-out zone ({x:g}, {y:g}, {r:g}) is not finite")
        if r <= 0:
            raise ValueError(f"keep-out zone at ({x:g}, {y:g}) needs a radius > 0, got {r:g}")
        if not (low[0] <= x <= high[0] and low[1] <= y <= high[1]):
            raise ValueError(
                f"keep-out zone centre ({x:g}, {y:g}) is outside the maze: centres lie in "
                f"x [{low[0]:g}, {high[0]:g}], y [{low[1]:g}, {high[1]:g}] (D4RL's qpos frame)"
            )
    return z


class Maze2DEnv(gym.Env):
    """A 2-D point mass pushed by two motors through a maze, to a goal.

    ## Description
    A faithful re-creation of D4RL's `maze2d-{umaze,medium,large}-v1` on modern MuJoCo: same MJCF
    physics parameters, same step, reward and reset rules, same normalisation constants.
    With `multi_goal=True` the goal is redrawn every episode (the "Multi2D" variant used by
    Diffuser and Diffusion Forcing).

    ## Action space
    `Box(-1, 1, (2,))`: motor commands along x and y (gear 100); clipped to [-1, 1].

    ## Observation space
    `Box(-inf, inf, (4,))`: `[x, y, vx, vy]`, the joint positions and velocities in D4RL's qpos
    frame (cell (i, j) of the layout is the point (i, j)).

    ## Rewards
    Sparse: 1 when `||(x, y) - goal|| <= 0.5`, else 0 (`reward_type="dense"`: `exp(-distance)`).

    ## Starting state
    A uniformly chosen free or goal cell plus U(-0.1, 0.1) per axis; velocity N(0, 0.1) per axis.
    The goal is D4RL's fixed goal cell, or (multi-goal) a uniformly chosen free or goal cell plus
    U(-0.1, 0.1). `reset(options={"goal": (x, y)})` sets the goal explicitly.

    ## Episode end
    Never terminates; truncated at the D4RL time limit (300 / 600 / 800 steps) by `gym.make`.

    ## Info
    `info["goal"]` (2,) and `info["success"]` (distance to goal <= 0.5), on reset and every step;
    `info["cost"]` (1.0 inside a keep-out zone, else 0.0) and `info["zones"]` ((Z, 3) rows
    (x, y, radius)). With zones, starts and random goals are drawn from the cells whose centre
    lies farther than radius + 0.2 from every zone centre (so no start or goal is inside one).

    ## Arguments
    `maze` ("umaze", "medium", "large"), `multi_goal`, `zones` ((x, y, radius), ...),
    `reward_type` ("sparse", "dense"),
    `render_mode` (None, "rgb_array"), `renderer` ("auto", "mujoco", "matplotlib"),
    `ref_min_score`, `ref_max_score` (D4RL normalisation).

    ## Version history
    v1: matches D4RL maze2d-v1.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}

    def __init__(
        self,
        maze: str = "umaze",
        multi_goal: bool = False,
        reward_type: str = "sparse",
        render_mode: str | None = None,
        renderer: str = "auto",
        ref_min_score: float = 0.0,
        ref_max_score: float = 1.0,
        image_size: int = 256,
        zones=(),
    ):
        if maze not in LAYOUTS:
            raise ValueError(f"unknown maze '{maze}'; valid: {', '.join(LAYOUTS)}")
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got '{reward_type}'")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got '{render_mode}'")
        self.maze = maze
        self.layout = parse_layout(LAYOUTS[maze])
        self.multi_goal = multi_goal
        self.reward_type = reward_type
        self.render_mode = render_mode
        self.renderer = renderer
        self.image_size = image_size
        self.ref_min_score = ref_min_score
        self.ref_max_score = ref_max_score
        self.zones = check_zones(zones, self.layout)  # (Z, 3)
        cells = np.array(free_cells(self.layout), dtype=np.float64)
        clear = np.ones(len(cells), dtype=bool)
        for x, y, r in self.zones:  # 0.2: the start / goal jitter of 0.1 per axis, and a margin
            clear &= np.linalg.norm(cells - (x, y), axis=1) > r + ZONE_CLEARANCE
        self.reset_cells = cells[clear]
        self.goal_cell = np.array(goal_cell(self.layout), dtype=np.float64)

        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.layout))
        self.data = mujoco.MjData(self.model)
        self._target_site = self.model.site("target_site").id
        self.goal = self.goal_cell.copy()

        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self._mj_renderer = None

    # -- state ------------------------------------------------------------------------------
    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set joint positions and velocities, as Gymnasium's MuJoCo envs do."""
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def set_goal(self, goal: np.ndarray) -> None:
        self.goal = np.asarray(goal, dtype=np.float64).reshape(2).copy()
        # The site lives in world coordinates: undo the body's (1.2, 1.2) offset.
        self.model.site_pos[self._target_site, :2] = self.goal + 1.2

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def _info(self, obs: np.ndarray) -> dict[str, Any]:
        distance = float(np.linalg.norm(obs[:2] - self.goal))
        info = {"goal": self.goal.copy(), "success": distance <= SUCCESS_RADIUS}
        inside = np.linalg.norm(obs[:2] - self.zones[:, :2], axis=1) <= self.zones[:, 2]
        info["cost"] = float(inside.any())
        info["zones"] = self.zones.copy()
        return info

    def normalized_score(self, raw_return: float) -> float:
        """D4RL normalisation, x100: 0 is a random policy, 100 is D4RL's reference 'expert'."""
        return 100.0 * (raw_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)  # as D4RL's sim.reset(): no state carries over
        rng = self.np_random
        cell = self.reset_cells[rng.integers(len(self.reset_cells))]
        qpos = cell + rng.uniform(-0.1, 0.1, size=2)
        qvel = rng.standard_normal(2) * 0.1
        self.set_state(qpos, qvel)
        if options is not None and options.get("goal") is not None:
            self.set_goal(options["goal"])
        elif self.multi_goal:
            goal = self.reset_cells[rng.integers(len(self.reset_cells))]
            self.set_goal(goal + rng.uniform(-0.1, 0.1, size=2))
        else:
            self.set_goal(self.goal_cell)
        obs = self._obs()
        return obs, self._info(obs)

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        # D4RL clips the velocity through set_state (which runs mj_forward) before stepping.
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -MAX_SPEED, MAX_SPEED))
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data)
        obs = self._obs()
        info = self._info(obs)
        distance = np.linalg.norm(obs[:2] - self.goal)
        if self.reward_type == "sparse":
            reward = float(distance <= SUCCESS_RADIUS)
        else:
            reward = float(np.exp(-distance))
        return obs, reward, False, False, info

    # -- rendering --------------------------------------------------------------------------
    def render(self):
        if self.render_mode != "rgb_array":
            return None
        use_mujoco = self.renderer == "mujoco" or (
            self.renderer == "auto" and os.environ.get("MUJOCO_GL") in ("egl", "osmesa")
        )
        if use_mujoco:
            if self._mj_renderer is None:
                self._mj_renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            self._mj_renderer.update_scene(self.data, camera="top")
            return self._mj_renderer.render()
        from dfplan.envs.drawing import draw_maze

        return draw_maze(self.layout, self.data.qpos.copy(), self.goal, size=self.image_size)

    def close(self):
        if self._mj_renderer is not None:
            self._mj_renderer.close()
            self._mj_renderer = None
