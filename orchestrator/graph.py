"""The constraint graph: who depends on whom, and who excludes whom.

Two graphs, kept apart because they mean different things:

* ``dependencies``, a networkx ``DiGraph`` with an edge ``a -> b`` when ``a`` depends on
  ``b`` (``b`` must have succeeded before ``a`` starts). It must stay acyclic.
* ``exclusions``, an undirected networkx ``Graph`` with an edge ``a - b`` when ``a`` and
  ``b`` must never run at the same time, whichever of them declared it. A conflict is not an
  ordering, so it never takes part in cycle detection.

Names may be referenced before the worker they name is registered; such names are nodes
without a worker until :meth:`ConstraintGraph.unknown_names` is checked at start.
"""

from __future__ import annotations

import networkx as nx

from .errors import DependencyCycleError, UnknownWorkerError


class ConstraintGraph:
    """Owned by the dispatcher thread; every change is all-or-nothing."""

    def __init__(self) -> None:
        self.dependencies = nx.DiGraph()
        self.exclusions = nx.Graph()
        self._registered: set[str] = set()

    def add_worker(self, name: str, depends_on=(), blocks=()) -> None:
        """Add ``name`` with its edges, or change nothing and raise.

        :raises DependencyCycleError: if a ``depends_on`` edge would close a cycle; the
            message lists it, e.g. ``a -> b -> c -> a``.
        """
        new_edges = [(name, dependency) for dependency in depends_on
                     if not self.dependencies.has_edge(name, dependency)]
        # A cycle through the new edges exists iff some dependency already reaches `name`.
        for dependency in depends_on:
            if dependency in self.dependencies and name in self.dependencies and \
                    nx.has_path(self.dependencies, dependency, name):
                path = nx.shortest_path(self.dependencies, dependency, name)
                cycle = [name, *path]
                raise DependencyCycleError(
                    f"worker {name!r}: depends_on would create a dependency cycle: "
                    f"{' -> '.join(cycle)}; remove one of these dependencies",
                    worker=name, cycle=cycle)
        self.dependencies.add_node(name)
        self.dependencies.add_edges_from(new_edges)
        self.exclusions.add_node(name)
        self.exclusions.add_edges_from((name, other) for other in blocks)
        self._registered.add(name)

    def unknown_names(self) -> dict[str, list[str]]:
        """``{unregistered name: [workers referring to it]}``."""
        unknown: dict[str, list[str]] = {}
        for node in self.dependencies.nodes:
            if node not in self._registered:
                unknown[node] = sorted(self.dependencies.predecessors(node))
        for node in self.exclusions.nodes:
            if node not in self._registered:
                unknown.setdefault(node, [])
                unknown[node] = sorted(set(unknown[node]) | set(self.exclusions.neighbors(node)))
        return unknown

    def check_known(self) -> None:
        """:raises UnknownWorkerError: naming the first reference to an unregistered worker."""
        for missing, referrers in sorted(self.unknown_names().items()):
            referrer = referrers[0] if referrers else "?"
            field = "depends_on" if self.dependencies.has_edge(referrer, missing) else "blocks"
            raise UnknownWorkerError(
                f"worker {referrer!r}: {field} names {missing!r}, which is not registered; "
                f"register it or remove it from {field}", worker=referrer, field=field)

    def dependencies_of(self, name: str) -> list[str]:
        return list(self.dependencies.successors(name)) if name in self.dependencies else []

    def dependents_of(self, name: str) -> list[str]:
        return list(self.dependencies.predecessors(name)) if name in self.dependencies else []

    def conflicts_of(self, name: str) -> list[str]:
        return list(self.exclusions.neighbors(name)) if name in self.exclusions else []
