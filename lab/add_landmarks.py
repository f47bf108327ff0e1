"""Write route-search landmarks (the clustered goals of the maze's dataset) into a checkpoint JSON.

    python -m lab.add_landmarks dfplan/checkpoints/maze2d-large   # needs `dfplan data maze2d-large`

`dfplan train` writes them itself; this adds them to a checkpoint trained before it did. The
weights and every other entry stay as they are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dfplan.envs import get_task
from dfplan.envs.datasets import dataset_path, load_trajectories
from dfplan.files import atomic_write_bytes
from dfplan.routes import landmarks_meta


def main(stem: str) -> None:
    path = Path(stem).with_suffix(".json")
    meta = json.loads(path.read_text())
    task = get_task(meta["task"])
    data = load_trajectories(dataset_path(task.dataset_id), task)
    meta["landmarks"] = landmarks_meta(data.infos["goal"])
    atomic_write_bytes(path, (json.dumps(meta, indent=1) + "\n").encode())  # as shipped
    print(f"{path}: {len(meta['landmarks'])} landmarks")


if __name__ == "__main__":
    main(sys.argv[1])
