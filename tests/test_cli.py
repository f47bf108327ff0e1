"""The CLI end to end, as a user runs it: subprocesses, exit codes, one-line errors."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    assert_clear_error,
    dfplan,
    save_tiny_checkpoint,
    trajectories,
    write_random_dataset,
)


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
    ro = read_only_folder(tmp_path)
    r = dfplan("data", "maze2d-umaze", "--steps", "10", env={"MINARI_DATASETS_PATH": str(ro)})
    assert_clear_error(r, "cannot write datasets")


def test_data_command_writes_and_reuses(tmp_path):
    root = Path(os.environ["MINARI_DATASETS_PATH"])
    r = dfplan("data", "maze2d-umaze", "--steps", "1500", "--dwell", "0")
    assert r.returncode == 0, r.stderr
    assert (root / "dfplan/maze2d-umaze-expert-v1/data").is_dir()
    r = dfplan("info")
    assert "dfplan/maze2d-umaze-expert-v1 present" in " ".join(r.stdout.split())


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


# -- the README's bad-input table, row by row ------------------------------------------------
# Rows above run as real processes; these call the same entry point (`dfplan.cli.main`, what the
# console script runs) in this process, to spare a 3 s interpreter start per row. capfd reads
# file descriptor 2 itself, so anything written to stderr counts against the one line.
def run_main(capfd, *args: str) -> subprocess.CompletedProcess:
    from dfplan.cli import main

    code = main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "tiny")


def bench(*args: str) -> list[str]:
    return ["bench", "maze2d-umaze", "--episodes", "1", "--device", "cpu", *args]


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--method", "foo"], ["unknown method 'foo'; valid methods: df, df-paper, df-nomcg"]),
        (["--episodes", "0"], ["--episodes must be a positive number, got 0"]),
        (["--seed", "-3"], ["--seed must be >= 0, got -3"]),
        (["--planner", "warp=9"], ["--planner takes FIELD=VALUE", "sampling_steps"]),
        (["--planner", "mcg_samples=0"], ["bad planner settings", "must be >= 1"]),
        (["--planner", "carry_x0=maybe"], ["--planner carry_x0 needs a value of type bool"]),
        (["--label", "a/b"], ["--label may use letters, digits and _.+- only"]),
        (["--device", "tpu"], ["unknown device 'tpu'; use cpu or cuda"]),
        (["--zone", "20,2,0.5"], ["--zone", "centre (20, 2) is outside the maze"]),
        (["--zone", "2,2,0"], ["--zone", "needs a radius > 0, got 0"]),
        (["--zone", "2,2"], ["--zone takes X,Y,R"]),
        (["--objective", "effort=nan"], ["--objective effort", "finite number, got 'nan'"]),
        (["--objective", "keepout=1"], ["has no zones; add --zone X,Y,R"]),
        (["--objective", "warp=1"], ["--objective warp: unknown"]),
        (
            ["--objective", "objective_fixtures:wrong_shape=1"],
            ["one score per plan, shape (2,) for 2 plans; got (2, 3)"],
        ),
    ],
)
def test_bad_bench_flags(capfd, tiny_checkpoint, args, fragments):
    r = run_main(capfd, *bench("--checkpoint", str(tiny_checkpoint), *args))
    assert_clear_error(r, *fragments)


def test_device_cuda_without_a_gpu_says_so(capfd, tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    r = run_main(capfd, *bench("--checkpoint", str(tiny_checkpoint), "--device", "cuda"))
    assert_clear_error(r, "--device cuda: no CUDA GPU is available here; use --device cpu")
    r = run_main(capfd, "train", "maze2d-umaze", "--device", "cuda")
    assert_clear_error(r, "--device cuda", "no CUDA GPU is available")


def test_bad_checkpoints_through_bench(capfd, tiny_checkpoint, tmp_path):
    stem = str(tiny_checkpoint)
    r = run_main(capfd, *bench("--checkpoint", str(tmp_path / "nothing")))
    assert_clear_error(r, "not found", "nothing.safetensors")
    # Another maze's checkpoint, and a DF checkpoint given to the Diffuser baseline.
    r = run_main(capfd, "bench", "maze2d-large", "--checkpoint", stem, "--device", "cpu")
    assert_clear_error(r, "trained for 'maze2d-umaze', which is not the large maze")
    r = run_main(capfd, *bench("--checkpoint", stem, "--method", "diffuser"))
    assert_clear_error(r, "holds a 'df' model, not a 'diffuser' one")
    # Other shapes: the JSON's model config no longer fits the weights.
    meta_path = Path(f"{stem}.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "n_embd": 32}}))
    assert_clear_error(run_main(capfd, *bench("--checkpoint", stem)), "does not match the model")
    meta_path.write_text(json.dumps(meta)[:-20])  # cut short: corrupt JSON
    assert_clear_error(run_main(capfd, *bench("--checkpoint", stem)), "tiny.json is corrupt")


def test_pickle_checkpoint_is_refused_and_never_unpickled(capfd, tiny_checkpoint, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:  # unpickling this calls open(marker, "w"): the file appears if it ever runs
        def __reduce__(self):
            return (open, (str(marker), "w"))

    Path(f"{tiny_checkpoint}.safetensors").write_bytes(pickle.dumps(Payload()))
    r = run_main(capfd, *bench("--checkpoint", str(tiny_checkpoint)))
    assert_clear_error(r, "tiny.safetensors is a pickle", "dfplan never unpickles")
    assert not marker.exists()


def test_no_shipped_checkpoint_says_how_to_train(capfd, monkeypatch, tmp_path):
    from dfplan import checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "none")  # whatever ships later
    r = run_main(capfd, "bench", "maze2d-large", "--episodes", "1", "--device", "cpu")
    assert_clear_error(r, "no trained checkpoint ships for maze2d-large", "dfplan train maze2d-")


def test_output_folder_that_is_a_file_or_not_writable(capfd, tiny_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    checkpoint = ["--checkpoint", str(tiny_checkpoint)]
    r = run_main(capfd, *bench(*checkpoint, "--out", str(blocker)))
    assert_clear_error(r, f"--out {blocker} exists and is a file; give a folder")
    r = run_main(capfd, *bench(*checkpoint, "--out", str(blocker / "sub")))
    assert_clear_error(r, "cannot write results to", "pass a writable --out")
    r = run_main(capfd, "train", "maze2d-umaze", "--out", str(blocker))
    assert_clear_error(r, f"--out {blocker} exists and is a file; give a folder")
    r = run_main(capfd, "train", "maze2d-umaze", "--out", str(blocker / "sub"))
    assert_clear_error(r, "cannot write the training run to", "pass a writable --out")
    ro = read_only_folder(tmp_path)
    r = run_main(capfd, *bench(*checkpoint, "--out", str(ro)))
    assert_clear_error(r, "cannot write results to")
    r = run_main(capfd, "train", "maze2d-umaze", "--out", str(ro / "run"))
    assert_clear_error(r, "cannot write the training run to")


def read_only_folder(tmp_path) -> Path:
    """A folder this process cannot write to: mode 0o500, or for root (who ignores permission
    bits) a read-only filesystem such as /sys."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    if os.geteuid() == 0:
        folder = Path("/sys")
    try:
        (folder / ".dfplan-write-probe").write_text("x")
    except OSError:
        return folder
    pytest.skip(f"no read-only folder to test with ({folder} is writable)")


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--lr", "-1"], ["--lr must be >= 0, got -1.0"]),
        (["--dropout", "1.5"], ["--dropout must be in [0, 1), got 1.5"]),
        (["--checkpoint-every", "0"], ["--checkpoint-every must be >= 1, got 0"]),
        (["--device", "gpu"], ["unknown device 'gpu'"]),
    ],
)
def test_bad_training_settings(capfd, tmp_path, args, fragments):
    data = write_random_dataset(tmp_path / "data.hdf5")
    r = run_main(capfd, "train", "maze2d-umaze", "--dataset", str(data), "--no-progress", *args)
    assert_clear_error(r, *fragments)


def test_truncated_dataset_through_train(capfd, tmp_path):
    data = write_random_dataset(tmp_path / "data.hdf5")
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    r = run_main(capfd, "train", "maze2d-umaze", "--dataset", str(truncated))
    assert_clear_error(r, "truncated.hdf5", "corrupt or truncated hdf5")
