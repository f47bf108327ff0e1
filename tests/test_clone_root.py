"""Commands run from the clone's root, where the local `dfplan/` folder comes first on sys.path:
it must still find dfplan.envs, dfplan.policies and dfplan.benchmarks (the root's envs/,
policies/ and benchmarks/), as the installed package does."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_python_imports_the_public_api_from_the_root():
    code = (
        "import dfplan, gymnasium as gym; "
        "from dfplan.policies import DiffusionForcingPolicy, DiffuserPolicy, make_policy; "
        "from dfplan.benchmarks.bench import run_bench; "
        "env = gym.make('dfplan/maze2d-umaze-v1'); print(env.reset(seed=0)[0].shape)"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(4,)"


def test_python_dash_m_dfplan_runs_from_the_root():
    result = run(sys.executable, "-m", "dfplan", "--help")
    assert result.returncode == 0, result.stderr
    assert "bench" in result.stdout and "train" in result.stdout


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_dash_m_dfplan_runs_from_the_root():
    result = run("torchrun", "--nproc_per_node", "1", "-m", "dfplan", "info")
    assert result.returncode == 0, result.stderr
    assert "maze2d-large" in result.stdout
