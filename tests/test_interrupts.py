"""`kill -9` during `dfplan train` and `dfplan bench`, then the same command again (real processes).

Nothing partial may ever sit under a final file name, training must resume from its last
checkpoint (losing at most one checkpoint interval) and bench must restart cleanly. The kill
during `dfplan data` is in test_cli.py.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import DFPLAN, dfplan, save_tiny_checkpoint, write_random_dataset
from safetensors.torch import load_file

from dfplan.checkpoint import checkpoint_files, load_checkpoint, load_resume, resume_files
from dfplan.model import DiffusionForcingModel, ModelConfig
from dfplan.run_state import finish_interrupted_save, state_files

CHECKPOINT_EVERY = 10
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: an unread pipe could block the child
        return subprocess.Popen(
            [*DFPLAN, *args], stdout=f, stderr=subprocess.STDOUT, env=ONE_THREAD
        )


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_every_visible_file_is_whole(folder: Path) -> None:
    """Every file under a final name parses; only hidden temp files may be partial."""
    for path in folder.iterdir():
        if path.name.startswith("."):
            assert path.name.endswith(".tmp"), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            pytest.fail(f"unexpected file {path}")


def _pause_past_a_checkpoint(proc: subprocess.Popen, run: Path) -> tuple[int, int]:
    """Stop the run (SIGSTOP) once it has saved and trained past the save: (saved, logged) steps.

    Stopped, it cannot write, so what we read is what the kill leaves. Where it stops is up to
    the scheduler: sometimes in the middle of a save, which is the case worth testing most.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (run.parent / "train.log").read_text()
        if (run / "latest.resume.json").exists():
            proc.send_signal(signal.SIGSTOP)
            saved = json.loads((run / "latest.resume.json").read_text())["step"]
            logged = _metrics(run)[-1]["step"]
            if logged > saved:
                return saved, logged
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("training never got past its first checkpoint")


def test_kill_during_train_then_resume(tmp_path):
    data = write_random_dataset(tmp_path / "data.hdf5")
    run = tmp_path / "run"
    common = ["train", "maze2d-umaze", "--dataset", str(data), "--out", str(run)]
    common += ["--no-progress"]
    tiny = ["--window", "20", "--n-layer", "1", "--n-head", "2", "--n-embd", "16"]
    tiny += ["--batch-size", "4", "--log-every", "1", "--checkpoint-every", str(CHECKPOINT_EVERY)]
    proc = _start([*common, *tiny, "--steps", "1000000"], tmp_path / "train.log")
    try:
        saved, logged = _pause_past_a_checkpoint(proc, run)
    finally:
        _kill(proc)

    _assert_every_visible_file_is_whole(run)
    # A kill during the renames (rare) leaves a newer save half in temp files; --resume first
    # does this, which must leave the four files of one save either way.
    finish_interrupted_save(run / "latest")
    _, meta = load_checkpoint(run / "latest", task="maze2d-umaze")
    _, info = load_resume(run / "latest")
    assert meta["train_step"] == info["step"] in (saved, saved + CHECKPOINT_EVERY)
    assert info["checkpoint_save_id"] == meta["save_id"]  # the pair and its resume state match
    saved = info["step"]  # a finished save may be the one logged last: logged == saved
    assert logged - saved <= CHECKPOINT_EVERY  # at most one checkpoint interval is lost
    before = _metrics(run)
    # What a kill in the middle of writing a file leaves: the rerun must not trip over it.
    (run / ".latest.safetensors.x1y2z3.tmp").write_bytes(b"half a file")

    r = dfplan(*common, "--resume", "--steps", str(saved + 15), timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_every_visible_file_is_whole(run)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    _, info = load_resume(run / "latest")
    assert info["step"] == saved + 15
    after = _metrics(run)
    assert [m["step"] for m in after] == list(range(1, saved + 16))
    assert after[:saved] == before[:saved]
    # Resumed from step `saved`, exactly: the steps redone after it repeat the killed run's.
    redone = slice(saved, logged)
    assert [(m["loss"], m["grad_norm"]) for m in after[redone]] == [
        (m["loss"], m["grad_norm"]) for m in before[redone]
    ]


def test_kill_during_bench_then_rerun(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny", max_tokens=3, sampling_steps=3)
    res = tmp_path / "res"
    args = ["bench", "maze2d-umaze", "--checkpoint", str(checkpoint), "--episodes", "2"]
    args += ["--batch-size", "1", "--out", str(res), "--device", "cpu", "--workers", "1"]
    log = tmp_path / "bench.log"
    proc = _start(args, log)
    try:
        deadline = time.monotonic() + 120
        while "1/2" not in log.read_text():  # the progress bar: one episode of two done
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        _kill(proc)
    assert list(res.iterdir()) == []  # no result, not even a temp file

    (res / ".maze2d-umaze_df.json.x1y2z3.tmp").write_text('{"task": "maze2d-')  # a killed write
    r = dfplan(*args, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in res.iterdir()) == ["maze2d-umaze_df.json"]
    result = json.loads((res / "maze2d-umaze_df.json").read_text())
    assert [e["seed"] for e in result["per_episode"]] == [0, 1]
    assert result["episodes"] == 2 and result["checkpoint"] == str(checkpoint)


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; None once the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    kids = []
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields and fields[0] != "Z" and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_bench_workers_stop_when_the_bench_is_killed(tmp_path):
    checkpoint = save_tiny_checkpoint(
        tmp_path / "tiny", max_tokens=3, sampling_steps=3, task="maze2d-large"
    )
    # 200 episodes of 800 steps: minutes of work, so orphans that ran on would still be
    # running well after the deadline below.
    args = ["bench", "maze2d-large", "--checkpoint", str(checkpoint), "--episodes", "200"]
    args += ["--batch-size", "1", "--out", str(tmp_path / "res"), "--device", "cpu"]
    log = tmp_path / "bench.log"
    proc = _start([*args, "--workers", "2"], log)
    try:
        # Wait until the shared bar moves and both workers exist (under load, the second one
        # can start well after the first has begun stepping).
        deadline = time.monotonic() + 120
        workers = []
        while "step/s" not in log.read_text() or len(workers) < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (workers, log.read_text())
            time.sleep(0.05)
            workers = _children(proc.pid)  # the two workers (and the resource tracker)
    finally:
        _kill(proc)
    # A worker notices on its next progress message; a loaded machine may delay that.
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, [w for w in workers if _alive(w)]
        time.sleep(0.05)
    assert not (tmp_path / "res").exists() or list((tmp_path / "res").iterdir()) == []


def _save_files(stem: Path, step: int) -> dict[Path, bytes]:
    """The four files `save_state` writes for a tiny model at `step`, in its rename order."""
    model = DiffusionForcingModel(ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=3))
    files, save_id = checkpoint_files(stem, model, {"task": "maze2d-umaze", "train_step": step})
    info = {"step": step, "checkpoint_save_id": save_id}
    return {**files, **resume_files(stem, {"x": torch.zeros(2)}, info, save_id)}


@pytest.mark.parametrize("renamed", [0, 1, 2, 3, 4])
def test_a_save_killed_after_any_rename_is_finished_on_resume(tmp_path, renamed):
    """A kill after the first `renamed` of the four renames: the rest are complete temp files
    (written and synced before any rename), so the new save is finished; before any rename the
    old save stays, whatever partial temp files lie around."""
    stem = tmp_path / "latest"
    old, new = _save_files(stem, 10), _save_files(stem, 20)
    assert list(old) == state_files(stem) == list(new)
    for path, data in old.items():
        path.write_bytes(data)
    for i, (path, data) in enumerate(new.items()):
        if i < renamed:
            path.write_bytes(data)
        else:
            (tmp_path / f".{path.name}.k{i}.tmp").write_bytes(data)
    (tmp_path / ".latest.json.zz.tmp").write_bytes(b'{"format": "dfplan-che')  # a killed write

    finish_interrupted_save(stem)

    expected = new if renamed else old
    assert {p: p.read_bytes() for p in expected} == expected
    _, meta = load_checkpoint(stem, task="maze2d-umaze")
    _, info = load_resume(stem)
    assert meta["train_step"] == info["step"] == (20 if renamed else 10)
    assert info["checkpoint_save_id"] == meta["save_id"]
