"""A user's objective with a mistake in it, for the CLI's error test (--objective mod:attr)."""

import torch


def wrong_shape(plan):
    """Returns one score per frame instead of one per plan."""
    return -torch.linalg.vector_norm(plan.positions, dim=-1)
