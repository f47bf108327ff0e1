"""The CLI end to end, as a user runs it: subprocesses, exit codes, one-line errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_clear_error, dfplan, trajectories


def test_help_and_info():
    r = dfplan("--help")
    assert r.returncode == 0 and "data" in r.stdout and "info" in r.stdout
    r = dfplan("info")
    assert r.returncode == 0
    assert "maze2d-large" in r.stdout and "missing (make it: dfplan data maze2d-large)" in r.stdout


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["data", "maze2d-huge"], ["unknown task 'maze2d-huge'", "maze2d-large"]),
        (["data", "maze2d-umaze", "--steps", "0"], ["--steps must be a positive"]),
        (["data", "maze2d-umaze", "--steps", "-5"], ["--steps must be a positive"]),
        (["data", "maze2d-umaze", "--dwell", "0.5,9"], ["--dwell must be"]),
        (["data", "multi2d-umaze"], ["dfplan data maze2d-umaze"]),
        (["bench", "maze2d-huge"], ["unknown task"]),
    ],
)
def test_bad_input_gets_one_clear_line(args, fragments):
    assert_clear_error(dfplan(*args), *fragments)


def test_bad_datasets_through_the_cli(tmp_path):
    import numpy as np

    from dfplan.envs.datasets import write_d4rl_hdf5

    r = dfplan("train", "maze2d-medium", "--steps", "1")
    assert_clear_error(r, "not found", "dfplan data")
    r = dfplan("train", "maze2d-umaze", "--dataset", str(tmp_path / "none.hdf5"))
    assert_clear_error(r, "does not exist")
    corrupt = tmp_path / "corrupt.hdf5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert_clear_error(dfplan("train", "maze2d-umaze", "--dataset", str(corrupt)), "corrupt")
    wrong = trajectories(np.zeros((400, 17), np.float32), np.zeros((400, 6), np.float32))
    write_d4rl_hdf5(wrong, tmp_path / "wrong.hdf5")
    r = dfplan("train", "maze2d-umaze", "--dataset", str(tmp_path / "wrong.hdf5"))
    assert_clear_error(r, "observations of size 17")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = dfplan("data", "maze2d-umaze", "--steps", "10", env={"MINARI_DATASETS_PATH": str(blocker)})
    assert_clear_error(r, "cannot write datasets", "MINARI_DATASETS_PATH")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        r = dfplan("data", "maze2d-umaze", "--steps", "10", env={"MINARI_DATASETS_PATH": str(ro)})
        assert_clear_error(r, "cannot write datasets")


def test_data_command_writes_and_reuses(tmp_path):
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    r = dfplan("data", "maze2d-umaze", "--steps", "1500", "--dwell", "0")
    assert r.returncode == 0, r.stderr
    assert (root / "dfplan/maze2d-umaze-expert-v1/data").is_dir()
    r = dfplan("info")
    assert "dfplan/maze2d-umaze-expert-v1      present" in r.stdout


def test_kill_during_data_leaves_no_complete_looking_dataset():
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "dfplan", "data", "maze2d-umaze", "--steps", "400000"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not list(root.glob(".dfplan-staging-*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "dfplan/maze2d-umaze-expert-v1").exists()
    r = dfplan("data", "maze2d-umaze", "--steps", "1200")  # the rerun cleans up and completes
    assert r.returncode == 0, r.stderr
    assert (root / "dfplan/maze2d-umaze-expert-v1/data").is_dir()
    assert not list(root.glob(".dfplan-*"))
