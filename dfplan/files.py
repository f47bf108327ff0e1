"""Writing files safely: every write is atomic (readers see the old file or the new one, never
a partial one), temp files a killed write left behind can be cleaned, output folders are checked
before the work starts. Checkpoints, results, metrics, datasets and figures all go through here.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

from dfplan.errors import UserError


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write files so that readers see each one old or new, never partial.

    Each file goes to a hidden temp file next to it (`.NAME.*.tmp`) and is synced; only then are
    they renamed into place, in the given order. The slow part is over before the first rename.
    """
    temps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps[path] = Path(tmp)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(fd, 0o644)  # mkstemp makes 0600; a checkpoint is meant to be shared
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_files({path: data})


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def temp_files(path: Path) -> list[Path]:
    """The temp files that atomic writes of `path` left behind (killed before their rename)."""
    path = Path(path)
    return list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def remove_stale_temps(*paths: Path) -> None:
    """Delete the temp files that a killed atomic write of these paths left behind."""
    for path in paths:
        for tmp in temp_files(path):
            tmp.unlink(missing_ok=True)


def ensure_writable_dir(path: Path, flag: str, what: str) -> None:
    """Create folder `path` if needed and check that files can be written in it, so a bad
    output flag fails at once with one line (UserError), not with a traceback after the work."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot write {what} to {path} ({e.strerror}); pass a writable {flag}"
        ) from None
