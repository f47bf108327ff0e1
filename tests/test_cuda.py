"""The CUDA paths: the same model, planner, policy and trainer code on a GPU.

Skipped where no CUDA GPU is visible (CI has none); `benchmarks/gpu_check.sh` runs them on one.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import (
    TINY_NORMALIZER,
    assert_vector_batch_equals_singles,
    save_tiny_checkpoint,
    write_random_dataset,
)

import dfplan  # noqa: F401  (registers the env ids)
from dfplan.checkpoint import load_checkpoint, shipped_checkpoints
from dfplan.guidance import GoalReward
from dfplan.model import DiffusionForcingModel, ModelConfig
from dfplan.planner import DiffusionForcingPlanner, PlannerConfig
from dfplan.policies.diffuser import DiffuserPolicy
from dfplan.policies.diffusion_forcing import DiffusionForcingPolicy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def _tiny_model(seed: int = 0) -> DiffusionForcingModel:
    torch.manual_seed(seed)
    return DiffusionForcingModel(
        ModelConfig(n_layer=2, n_head=2, n_embd=32, max_tokens=6, frame_stack=4)
    )


def test_model_on_cuda_computes_what_it_computes_on_cpu():
    model = _tiny_model().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, model.config.token_dim, generator=gen)
    first = torch.randn(3, model.config.obs_dim, generator=gen)
    levels = torch.randint(0, model.config.num_levels + 1, (3, 6), generator=gen)
    with torch.no_grad():
        on_cpu = model(x, levels, first)
        on_gpu = model.to("cuda")(x.cuda(), levels.cuda(), first.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-4)


def test_planner_on_cuda_batches_like_single_planners_and_stays_in_bounds():
    def planner():
        config = PlannerConfig(
            sampling_steps=6, guidance_scale=0.3, mcg_samples=3, warm_candidates=2, goal_weight=2.0
        )
        return DiffusionForcingPlanner(_tiny_model().to("cuda"), TINY_NORMALIZER, config)

    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 4, size=(4, 4))
    goals = torch.as_tensor(rng.uniform(0, 4, size=(4, 2)), dtype=torch.float32, device="cuda")
    batched = planner()
    batched.reset(4, seeds=[10, 11, 12, 13])
    together = [batched.act(obs, GoalReward(goals), 20, goals) for _ in range(3)]
    for a in together:
        assert a.shape == (4, 2) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0)
    for k in range(4):
        single = planner()
        single.reset(1, seeds=[10 + k])
        for step in range(3):
            a = single.act(obs[k : k + 1], GoalReward(goals[k : k + 1]), 20, goals[k : k + 1])
            np.testing.assert_allclose(a[0], together[step][k], rtol=1e-3, atol=1e-4)


def test_policy_on_cuda_in_a_vector_env_loop(tmp_path):
    stem = save_tiny_checkpoint(tmp_path / "tiny")
    assert_vector_batch_equals_singles(
        lambda: DiffusionForcingPolicy.from_pretrained("multi2d-umaze", stem, "cuda"), n=4, steps=3
    )


@pytest.mark.parametrize("kind", ["df", "diffuser"])
def test_every_shipped_checkpoint_acts_on_cuda(kind):
    policy_class = {"df": DiffusionForcingPolicy, "diffuser": DiffuserPolicy}[kind]
    for stem in shipped_checkpoints(kind):
        task = stem.name.removesuffix("-diffuser")
        policy = policy_class.from_pretrained(task, device="cuda")
        env = gym.make(f"dfplan/{task}-v1")
        obs, info = env.reset(seed=0)
        policy.reset(seed=0)
        for _ in range(3):
            action = policy.act(obs, info)
            assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
            obs, _, _, _, info = env.step(action)


def test_training_on_cuda_with_bf16_writes_a_checkpoint_that_loads_on_cpu(tmp_path):
    from helpers import dfplan as run_cli

    source = write_random_dataset(tmp_path / "random.hdf5")
    out = tmp_path / "run"
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8"]
    result = run_cli(
        "train", "maze2d-umaze", "--dataset", str(source), "--out", str(out), "--window", "50",
        "--steps", "20", "--device", "cuda", "--no-progress", *tiny,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model, meta = load_checkpoint(out / "latest", device="cpu")
    assert meta["train_step"] == 20
    assert all(torch.isfinite(p).all() for p in model.parameters())
