"""Seed chunks of one bench run merge into the result the whole run wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dfplan.benchmarks.bench import SUMMARY_FIELDS
from dfplan.benchmarks.merge import merge
from dfplan.errors import UserError

WHOLE = Path(__file__).parents[1] / "results" / "multi2d-large-keepout_expert.json"


def chunk(result: dict, start: int, count: int) -> dict:
    part = dict(result, seed=result["seed"] + start, episodes=count)
    part["per_episode"] = result["per_episode"][start : start + count]
    return part


def test_chunks_merge_into_the_whole_run():
    whole = json.loads(WHOLE.read_text())
    parts = [chunk(whole, 60, 40), chunk(whole, 0, 60)]
    merged = merge(parts)
    assert merged["episodes"] == whole["episodes"] and merged["seed"] == whole["seed"]
    for key in SUMMARY_FIELDS:  # results written before a field existed lack it
        assert key in merged
        if key in whole:
            assert merged[key] == pytest.approx(whole[key])
    assert merged["per_episode"] == whole["per_episode"]
    assert merged["chunks"] == [[0, 60], [60, 40]]
    assert merged["decisions_per_second"] == pytest.approx(whole["decisions_per_second"])


def test_merge_refuses_chunks_of_different_runs():
    whole = json.loads(WHOLE.read_text())
    other = dict(chunk(whole, 50, 50), objective="KeepOut*10")
    with pytest.raises(UserError, match="differ in 'objective'"):
        merge([chunk(whole, 0, 50), other])
    with pytest.raises(UserError, match="appears in two chunks"):
        merge([chunk(whole, 0, 50), chunk(whole, 40, 20)])


def test_merge_cli_bad_file_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    out = tmp_path / "merged.json"
    run = subprocess.run(
        [sys.executable, "-m", "dfplan.benchmarks.merge", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()
