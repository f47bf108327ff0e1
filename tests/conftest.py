"""Keep every test away from the user's real data folders and from the source tree.

Tests run in a fresh temporary working directory, so subprocesses (`python -m dfplan ...`) import
the installed package, never the source folder of the same name. The clone's root goes at the end
of sys.path, so the lab probes (`lab.*`) import while `dfplan` stays the installed package.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("DFPLAN_HOME", str(tmp_path / "dfplan_home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module (`pytestmark = pytest.mark.usefixtures(...)`).

    Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP
    threads wait on each other for the core another process holds: 30x slower steps.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
