"""Arrange a step DAG as nested sequences and parallel groups.

Step Functions has no "run when these finish" primitive; the only ways to order work
are ``Next`` chains and ``Parallel`` states. Running whole topological levels one after
another is always correct but makes a step wait for unrelated work in the level before
it. A series-parallel decomposition avoids that: independent parts of the graph become
parallel branches, and within a part, a point where everything before must finish
before anything after becomes a sequence boundary. When a part of the graph is not
series-parallel (an "N" shape), that part falls back to level-by-level, which waits
more than strictly needed but never runs a step before its dependencies.

Nesting is capped so deeply nested graphs cannot produce JSON or interpreter recursion
too deep to handle; below the cap the same level fallback applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm_orchestrator.workflows.models import ancestor_masks, topological_order

__all__ = ["MAX_PARALLEL_NESTING", "Parallel", "Plan", "StepTask", "group_items", "plan_layout"]

MAX_PARALLEL_NESTING = 8


@dataclass(frozen=True)
class StepTask:
    """One step, by its index in the definition."""

    index: int


@dataclass(frozen=True)
class Parallel:
    """Branches that run at the same time; each branch is a sequence."""

    branches: tuple[Plan, ...]


Plan = tuple[StepTask | Parallel, ...]
"""Items run one after another."""


def plan_layout(parents: Sequence[Sequence[int]]) -> Plan:
    """Lay out the DAG given as each node's parents (dependency indexes); must be acyclic."""
    return _Planner(parents).series(list(range(len(parents))), depth=0)


class _Planner:
    def __init__(self, parents: Sequence[Sequence[int]]) -> None:
        self._parents = parents
        self._ancestors = ancestor_masks(parents)
        self._rank = [0] * len(parents)
        for rank, node in enumerate(topological_order(parents)):
            self._rank[node] = rank

    def series(self, nodes: list[int], depth: int) -> Plan:
        """``nodes`` (sorted, convex: every path between two of them stays inside)."""
        if len(nodes) == 1:
            return (StepTask(nodes[0]),)
        components = self._components(nodes)
        if len(components) > 1:
            if depth >= MAX_PARALLEL_NESTING:
                return self._by_levels(nodes)
            return (Parallel(tuple(self.series(part, depth + 1) for part in components)),)
        segments = self._segments(self._levels(nodes))
        if len(segments) == 1:
            return self._by_levels(nodes)
        return tuple(item for segment in segments for item in self.series(segment, depth))

    def _components(self, nodes: list[int]) -> list[list[int]]:
        """Weakly connected parts, each sorted, ordered by their first node."""
        root = {node: node for node in nodes}

        def find(node: int) -> int:
            while root[node] != node:
                root[node] = root[root[node]]
                node = root[node]
            return node

        for node in nodes:
            for parent in self._parents[node]:
                if parent in root:
                    root[find(parent)] = find(node)
        parts: dict[int, list[int]] = {}
        for node in nodes:
            parts.setdefault(find(node), []).append(node)
        return list(parts.values())

    def _levels(self, nodes: list[int]) -> list[list[int]]:
        """Longest-path depth inside ``nodes``; each level sorted by definition order."""
        depth: dict[int, int] = {}
        for node in sorted(nodes, key=self._rank.__getitem__):
            depth[node] = max(
                (depth[parent] + 1 for parent in self._parents[node] if parent in depth),
                default=0,
            )
        levels: list[list[int]] = [[] for _ in range(max(depth.values()) + 1)]
        for node in nodes:
            levels[depth[node]].append(node)
        return levels

    def _segments(self, levels: list[list[int]]) -> list[list[int]]:
        """Split between levels wherever everything above depends on everything below.

        Every node at depth ``k + 1`` has a parent at depth ``k``, so if each of them
        descends from every node at depth ``<= k``, so does everything deeper: checking
        the next level is enough.
        """
        segments: list[list[int]] = []
        current: list[int] = []
        below = 0
        for position, level in enumerate(levels):
            current.extend(level)
            for node in level:
                below |= 1 << node
            following = levels[position + 1] if position + 1 < len(levels) else None
            if following is None or all(
                self._ancestors[node] & below == below for node in following
            ):
                segments.append(current)
                current = []
        return segments

    def _by_levels(self, nodes: list[int]) -> Plan:
        return tuple(
            StepTask(level[0])
            if len(level) == 1
            else Parallel(tuple((StepTask(node),) for node in level))
            for level in self._levels(nodes)
        )


def group_items(plan: Plan, size: int) -> Plan:
    """Wrap every ``size`` consecutive items of ``plan`` into a one-branch Parallel.

    The compiler gives each top-level item its own pause and failure states; grouping
    shares them between ``size`` items, which is what keeps a 1,000-step chain inside Step
    Functions' definition quota.
    """
    chunks = (plan[start : start + size] for start in range(0, len(plan), size))
    return tuple(chunk[0] if len(chunk) == 1 else Parallel((chunk,)) for chunk in chunks)
