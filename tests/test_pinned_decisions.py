"""Every shipped planner still makes the decisions pinned for its checkpoint (refactors change
no result). A changed checkpoint must be re-pinned on its own: python tests/pinned_decisions.py."""

import json

import numpy as np
import pytest
from pinned_decisions import PINS, checkpoint_hash, decisions, shipped

PINNED = json.loads(PINS.read_text())


def test_every_shipped_checkpoint_is_pinned():
    assert sorted(PINNED) == sorted(shipped())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_planner_decisions_are_unchanged(name):
    stem = shipped()[name]
    assert checkpoint_hash(stem) == PINNED[name]["hash"], (
        f"{name} changed: re-pin it alone with 'python tests/pinned_decisions.py {name}'"
    )
    actions = np.array(decisions(name))
    np.testing.assert_allclose(actions, np.array(PINNED[name]["actions"]), rtol=0, atol=1e-5)
