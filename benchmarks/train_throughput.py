"""Training throughput on this machine: steps/s, samples/s, tokens/s for a training config.

    python -m dfplan.benchmarks.train_throughput                  # the shipped umaze config
    python -m dfplan.benchmarks.train_throughput --task maze2d-large --threads 2
    python -m dfplan.benchmarks.train_throughput --task maze2d-large --model diffuser --threads 1

Times the trainer's own step (window sampling, per-token noise, forward, backward, gradient clip,
AdamW) after a few warm-up steps. The data is random (throughput does not depend on values), laid
out as long episodes so every window length fits. Also prints how long the config's full step
budget would take at the measured rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dfplan.checkpoint import MODEL_KINDS
from dfplan.envs.trajectories import Trajectories
from dfplan.loss import diffusion_loss
from dfplan.model import ModelConfig
from dfplan.normalizer import Normalizer
from dfplan.policies.diffuser_unet import UNetConfig, diffuser_loss
from dfplan.train import make_optimizer, recommended_config
from dfplan.windows import WindowSampler


def random_trajectories(rows: int = 20_000, episode: int = 2_000, seed: int = 0) -> Trajectories:
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(rows, bool)
    timeouts[episode - 1 :: episode] = True
    return Trajectories(
        observations=rng.standard_normal((rows, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, (rows, 2)).astype(np.float32),
        rewards=np.zeros(rows, np.float32),
        terminals=np.zeros(rows, bool),
        timeouts=timeouts,
    )


def measure(
    model_config: ModelConfig | UNetConfig,
    window: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str = "cpu",
) -> dict:
    """Seconds per training step of the real loop's step, averaged over `steps` after warm-up."""
    torch.manual_seed(0)
    config = recommended_config("maze2d-umaze")
    diffuser = isinstance(model_config, UNetConfig)
    model = MODEL_KINDS["diffuser" if diffuser else "df"][1](model_config).to(device).train()
    loss_fn = diffuser_loss if diffuser else diffusion_loss
    opt = make_optimizer(model, config)
    data = random_trajectories()
    goals = data.observations[:, :2] if not diffuser and model_config.goal_dim else None
    sampler = WindowSampler(
        data, window, model_config.frame_stack, Normalizer.from_trajectories(data), 0, goals
    )
    gen = torch.Generator(device).manual_seed(0)

    def step() -> None:
        first_obs, tokens, goals = sampler.sample(batch_size)
        goals = goals.to(device) if goals is not None else None
        loss = loss_fn(model, first_obs.to(device), tokens.to(device), gen, None, goals, 0.15)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - tic) / steps
    tokens = window // model_config.frame_stack
    return {
        "params": model.num_params(),
        "ms_per_step": 1000 * seconds,
        "steps_per_s": 1 / seconds,
        "samples_per_s": batch_size / seconds,
        "tokens_per_s": batch_size * tokens / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="maze2d-umaze", help="picks the recommended config")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--window", type=int, default=None, help="default: the config's")
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--n-embd", type=int, default=None)
    parser.add_argument("--n-head", type=int, default=None)
    parser.add_argument("--model", choices=tuple(MODEL_KINDS), default="df")
    parser.add_argument("--dim", type=int, default=None, help="--model diffuser: U-Net channels")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = recommended_config(args.task, args.model)
    window = args.window or config.window
    batch = args.batch_size or config.batch_size
    if args.model == "diffuser":
        dim = {"dim": args.dim} if args.dim else {}
        model = UNetConfig(**{**config.model.__dict__, **dim, "horizon": window})
        shape = f"U-Net {model.dim} x {model.dim_mults} channels"
    else:
        names = ("n_layer", "n_embd", "n_head")
        overrides = {k: getattr(args, k) for k in names if getattr(args, k)}
        model = ModelConfig(
            **{
                **config.model.__dict__,
                **overrides,
                "max_tokens": window // config.model.frame_stack,
            }
        )
        shape = f"{model.n_layer} layers x {model.n_embd} wide, {model.n_head} heads"
    r = measure(model, window, batch, args.steps, args.warmup, args.device)
    print(
        f"task {args.task}: {shape}, {r['params'] / 1e6:.2f}M params; window {window} steps = "
        f"{window // model.frame_stack} tokens; batch {batch}; {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"  {r['ms_per_step']:.1f} ms/step  {r['steps_per_s']:.2f} steps/s  "
        f"{r['samples_per_s']:.0f} samples/s  {r['tokens_per_s']:.0f} tokens/s"
    )
    hours = config.steps / r["steps_per_s"] / 3600
    print(f"  the config's {config.steps} steps would take {hours:.2f} h at this rate")


if __name__ == "__main__":
    main()
