"""Keep every test away from the user's real data folders and from the source tree.

Tests run in a fresh temporary working directory, so subprocesses (`python -m dfplan ...`) import
the installed package, never the source folder of the same name.
"""

import pytest


@pytest.fixture(autouse=True)
def isolated_homes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("DFPLAN_HOME", str(tmp_path / "dfplan_home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
