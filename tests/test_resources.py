"""Resource bounds: the planner's memory stays flat over a long episode and keeps no autograd
graph; `lab/peak_rss.py` reports a command's peak memory."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfplan.benchmarks.planner_memory import run, tiny_policy

PEAK_RSS = (sys.executable, str(Path(__file__).parents[1] / "lab" / "peak_rss.py"))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from a second thread on a busy CPU
    yield
    torch.set_num_threads(threads)


def test_planner_memory_stays_flat_and_keeps_no_graph(one_thread):
    # Guidance backpropagates through the model at every step: a graph or plan kept from one
    # decision to the next would add tensors and memory at every step. (The 10,000-step run is
    # `python -m dfplan.benchmarks.planner_memory`; this one is short enough for CI.)
    policy = tiny_policy("maze2d-umaze", sampling_steps=2, refresh_rows=1)
    samples = run(policy, "maze2d-umaze", steps=400, every=50)
    after_warmup = samples[1:]
    assert {s["tensors"] for s in after_warmup} == {after_warmup[0]["tensors"]}, samples
    assert samples[-1]["rss_mib"] - after_warmup[0]["rss_mib"] < 5.0, samples
    planner = policy.planner
    for t in (planner.tokens, planner.levels):
        assert not t.requires_grad and t.grad_fn is None
    assert all(p.grad is None for p in planner.model.parameters())
    action = policy.act(np.array([1.0, 1.0, 0.0, 0.0]), {"goal": np.array([3.0, 1.0])})
    assert isinstance(action, np.ndarray) and action.shape == (2,)


def test_peak_rss_script_measures_the_child():
    big = "b = b'x' * (200 * 2**20)"  # 200 MiB, filled, so resident
    r = subprocess.run([*PEAK_RSS, "--", sys.executable, "-c", big], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    peak = float(r.stdout.split("peak RSS ")[1].split(" MiB")[0])
    assert 200 < peak < 400, r.stdout
    r = subprocess.run(
        [*PEAK_RSS, sys.executable, "-c", "raise SystemExit(3)"], capture_output=True, text=True
    )
    assert r.returncode == 3 and "exit code 3" in r.stdout
    peak = float(r.stdout.split("peak RSS ")[1].split(" MiB")[0])
    assert peak < 150, r.stdout  # a bare interpreter: the 200 MiB above was the child's, not ours
    r = subprocess.run([*PEAK_RSS, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "dfplan bench maze2d-large" in r.stdout
