"""Waypoint graph: a roadmap of the dataset's own states, to cross a maze longer than one plan.

A model trained on hindsight goals (dfplan.relabel) reaches goals a few hundred steps away; an
OGBench giant-maze goal can be a thousand steps away, round walls the model has never seen
whole. The data has crossed the maze piece by piece, so its states, in their order in time, make
a roadmap:

- nodes: one dataset state per occupied cell of a grid of side `spacing` over the visited
  positions (the state nearest the cell's mean), so every visited place has a node nearby;
- edges: node i -> node j when some episode was at node i at step t and at node j at step
  t + k (k <= max_lag); "at" a node is within `reach` x spacing of it. The edge costs the steps
  from node to node: k plus the two offsets (node to state, state to node) at the data's median
  step length, least over every such pair. Without the offsets a chain of short edges would
  count steps the point never saves (an edge between nodes 0.9 apart could cost 1 step), and
  routes and lookahead would favour many short hops.

At plan time the route is the shortest path (Dijkstra) from the node nearest the agent to the
node nearest the goal, and the planner's goal becomes the first node on it at least `lookahead`
steps along (the goal itself once it is nearer). Nothing here reads the maze: only observations
and their order, which is all OGBench's datasets hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra


@dataclass(frozen=True)
class WaypointConfig:
    spacing: float = 1.0  # grid side for the nodes (env units; OGBench's maze cells are 4)
    max_lag: int = 40  # the longest step count an edge may stand for
    reach: float = 0.35  # a state is at a node within reach x spacing of it
    lookahead: int = 100  # steps along the route to the waypoint handed to the planner

    def validate(self) -> None:
        if (
            not self.spacing > 0
            or not 0 < self.reach <= 0.5
            or self.max_lag < 1
            or self.lookahead < 1
        ):
            raise ValueError(f"bad waypoint settings {asdict(self)}")


def nearest(points: torch.Tensor, nodes: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(N,) index of the node nearest each point (chunked: N can be millions)."""
    return torch.cat(
        [
            torch.cdist(points[i : i + chunk], nodes).argmin(dim=1)
            for i in range(0, len(points), chunk)
        ]
    )


class WaypointGraph:
    """nodes: (M, 2) positions; edges: (E, 2) rows [i, j]; steps: (E,) their costs in steps."""

    def __init__(self, nodes, edges, steps, config: WaypointConfig):
        config.validate()
        self.config = config
        self.nodes = torch.as_tensor(np.asarray(nodes, dtype=np.float32)).reshape(-1, 2)
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        m = len(self.nodes)
        self.steps = csr_matrix((steps, (edges[:, 0], edges[:, 1])), shape=(m, m))
        self._routes: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # goal node -> its tree

    @classmethod
    def build(cls, positions: np.ndarray, bounds: np.ndarray, config: WaypointConfig):
        """The graph of a dataset: positions (N, 2) row by row, bounds (E, 2) [start, end) rows
        of each episode."""
        config.validate()
        positions = np.asarray(positions, dtype=np.float32)
        cells = np.floor(positions / config.spacing).astype(np.int64)
        _, cell_of, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
        cell_of = cell_of.reshape(-1)
        means = np.zeros((len(counts), 2))
        np.add.at(means, cell_of, positions)
        means /= counts[:, None]
        # The node of a cell is a real state: the one nearest the cell's mean (a mean of an
        # L-shaped patch of free space can fall inside a wall).
        gap = np.linalg.norm(positions - means[cell_of], axis=1)
        order = np.lexsort((gap, cell_of))
        first = order[np.r_[0, np.flatnonzero(np.diff(cell_of[order])) + 1]]
        nodes = positions[first]
        node_of = nearest(torch.from_numpy(positions), torch.from_numpy(nodes)).numpy()
        offset = np.linalg.norm(positions - nodes[node_of], axis=1)
        node_of[offset > config.reach * config.spacing] = -1  # between nodes
        episode = np.zeros(len(positions), dtype=np.int64)
        episode[bounds[1:, 0]] = 1
        episode = np.cumsum(episode)
        moves = np.linalg.norm(np.diff(positions, axis=0), axis=1)[episode[1:] == episode[:-1]]
        offset_steps = offset / max(float(np.median(moves)), 1e-6)
        m = len(nodes)
        cost = np.full(m * m, np.inf)
        for lag in range(1, config.max_lag + 1):
            same = (episode[:-lag] == episode[lag:]) & (node_of[:-lag] >= 0) & (node_of[lag:] >= 0)
            pairs = node_of[:-lag][same] * m + node_of[lag:][same]
            steps = lag + offset_steps[:-lag][same] + offset_steps[lag:][same]
            order = np.lexsort((steps, pairs))  # per pair, its cheapest first
            pairs, steps = pairs[order], steps[order]
            first = np.r_[True, pairs[1:] != pairs[:-1]]
            cost[pairs[first]] = np.minimum(cost[pairs[first]], steps[first])
        cost[np.arange(m) * (m + 1)] = np.inf  # no self loops
        flat = np.flatnonzero(np.isfinite(cost))
        return cls(nodes, np.stack([flat // m, flat % m], axis=1), cost[flat], config)

    def to_meta(self) -> dict:
        """What a checkpoint stores: the settings (in its JSON), nodes and edges (tensors, in
        its safetensors file)."""
        coo = self.steps.tocoo()
        return {
            "config": asdict(self.config),
            "nodes": self.nodes.clone(),
            "edges": torch.from_numpy(np.stack([coo.row, coo.col], axis=1)).int(),
            "steps": torch.from_numpy(coo.data).float(),
        }

    @classmethod
    def from_meta(cls, meta: dict) -> WaypointGraph:
        return cls(meta["nodes"], meta["edges"], meta["steps"], WaypointConfig(**meta["config"]))

    def _tree(self, goal_nodes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(steps to the nearest of the goal nodes, next node toward it) for every node; cached
        per goal."""
        if goal_nodes not in self._routes:
            # Dijkstra from the goal over reversed edges: its predecessor of node n is the node
            # after n on n's shortest route to the goal.
            dist, pred, _ = dijkstra(
                self.steps.T.tocsr(),
                indices=list(goal_nodes),
                return_predecessors=True,
                min_only=True,
            )
            self._routes = dict(list(self._routes.items())[-63:])  # keep the cache small
            self._routes[goal_nodes] = (dist, pred)
        return self._routes[goal_nodes]

    def _around(self, points: torch.Tensor) -> list[np.ndarray]:
        """Per point, the nodes within 1.5 x spacing of it (at least the nearest one): all as
        reachable from it as the nearest node, and more likely to have a node or an edge where
        the data was thin."""
        dist = torch.cdist(points, self.nodes)
        near = dist <= 1.5 * self.config.spacing
        near[torch.arange(len(points)), dist.argmin(dim=1)] = True
        return [np.flatnonzero(row) for row in near.numpy()]

    def targets(self, xy: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """(B, 2) what each env should head for now: the node `lookahead` steps along its route
        from the nodes around it to those around its goal; the goal when that is nearer or the
        graph has no route."""
        xy_t = torch.as_tensor(np.asarray(xy, dtype=np.float32))
        goals_t = torch.as_tensor(np.asarray(goals, dtype=np.float32))
        out = np.array(goals, dtype=np.float64, copy=True)
        for k, (here, there) in enumerate(
            zip(self._around(xy_t), self._around(goals_t), strict=True)
        ):
            dist, pred = self._tree(tuple(int(n) for n in there))
            node = here[np.argmin(dist[here])]
            if not np.isfinite(dist[node]) or dist[node] <= self.config.lookahead:
                continue
            start = dist[node]
            while start - dist[node] < self.config.lookahead and pred[node] >= 0:
                node = pred[node]
            out[k] = self.nodes[node].numpy()
        return out
