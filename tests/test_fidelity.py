"""The env against a reference MuJoCo model written here, independently, from D4RL's facts
(its maze2d-v1 MJCF and step): same start, same 500 actions (with wall contacts), same
observations to 1e-6."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import dfplan  # noqa: F401

LARGE = [
    "############",
    "#OOOO#OOOOO#",
    "#O##O#O#O#O#",
    "#OOOOOO#OOO#",
    "#O####O###O#",
    "#OO#O#OOOOO#",
    "##O#O#O#O###",
    "#OO#OOO#OGO#",
    "############",
]
UMAZE = ["#####", "#GOO#", "###O#", "#OOO#", "#####"]


def reference_xml(rows: list[str]) -> str:
    boxes = "".join(
        f'<geom type="box" size="0.5 0.5 0.2" pos="{i + 1} {j + 1} 0"/>'
        for i, row in enumerate(rows)
        for j, c in enumerate(row)
        if c == "#"
    )
    return (
        '<mujoco><option timestep="0.01" gravity="0 0 0" integrator="Euler" iterations="20"/>'
        '<default><joint damping="1" limited="false"/>'
        '<geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" '
        'conaffinity="1"/></default><worldbody>'
        '<geom type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="1" conaffinity="0"/>'
        '<body pos="1.2 1.2 0"><joint name="x" type="slide" axis="1 0 0"/>'
        '<joint name="y" type="slide" axis="0 1 0"/>'
        '<geom type="sphere" size="0.1" contype="1"/></body>'
        f"{boxes}</worldbody><actuator>"
        '<motor joint="x" ctrlrange="-1 1" ctrllimited="true" gear="100"/>'
        '<motor joint="y" ctrlrange="-1 1" ctrllimited="true" gear="100"/>'
        "</actuator></mujoco>"
    )


def reference_step(model, data, action):
    data.qvel[:] = np.clip(data.qvel, -5.0, 5.0)
    mujoco.mj_forward(model, data)
    data.ctrl[:] = np.clip(action, -1.0, 1.0)
    mujoco.mj_step(model, data)
    return np.concatenate([data.qpos, data.qvel])


@pytest.mark.parametrize("name,rows", [("maze2d-large", LARGE), ("maze2d-umaze", UMAZE)])
def test_observations_match_reference_model(name, rows):
    env = gym.make(f"dfplan/{name}-v1", max_episode_steps=1000)
    obs, _ = env.reset(seed=11)
    model = mujoco.MjModel.from_xml_string(reference_xml(rows))
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = obs[:2], obs[2:]
    mujoco.mj_forward(model, data)

    rng = np.random.default_rng(0)
    # Pushes held for 20 steps at full strength drive the ball into walls; the rest is noise.
    pushes = np.repeat(rng.choice([-1.0, 1.0], size=(25, 2)), 20, axis=0)
    actions = np.clip(pushes + rng.normal(0, 0.3, size=pushes.shape), -1.5, 1.5)
    wall_contacts = 0
    for action in actions[:500]:
        ref = reference_step(model, data, action)
        got, *_ = env.step(action)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
        wall_contacts += sum(
            1
            for c in data.contact[: data.ncon]
            if model.geom_type[c.geom2] == mujoco.mjtGeom.mjGEOM_BOX
            or model.geom_type[c.geom1] == mujoco.mjtGeom.mjGEOM_BOX
        )
    assert wall_contacts > 20, "the action sequence must push the ball into walls"
