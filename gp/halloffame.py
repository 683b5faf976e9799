"""The best distinct expressions of a run, one per canonical form.

The canonical form is ``str(to_sympy(parse(text)))``: sympy's automatic canonicalisation only
(argument order of commutative operations, constant folding, like terms), never ``simplify``, so it
is cheap and cannot hang. ``add(x, y)`` and ``add(y, x)`` share a form; per form the better, then
smaller, then alphabetically first expression is kept, so the result does not depend on input order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gp.pset import text_size
from primitives.expression import parse, to_sympy
from primitives.registry import Registry


def canonical_form(text: str, registry: Registry, terminals: Mapping[str, type]) -> str:
    """The sympy canonical string of ``text``, or ``text`` itself when sympy cannot build it."""
    node = parse(text, registry, terminals)
    try:
        return str(to_sympy(node))
    except Exception:  # sympy may fail on odd constant combinations: the entry is then only its own form
        return text


def _rank(entry: Mapping[str, Any]) -> tuple[float, int, str]:
    return -entry["fitness"], entry["size"], entry["expression"]


class HallOfFame:
    """At most ``capacity`` entries (expression, canonical, fitness, size, generation), best first."""

    def __init__(self, capacity: int, canonical: Callable[[str], str]) -> None:
        self.capacity, self._canonical = capacity, canonical
        self._entries: dict[str, dict[str, Any]] = {}  # canonical form -> entry

    def update(self, scored: Iterable[tuple[str, float]], generation: int) -> None:
        """Offer (expression, fitness) pairs found in ``generation``."""
        for text, fitness in scored:
            entry = {"expression": text, "fitness": float(fitness), "size": text_size(text), "generation": generation}
            if len(self._entries) >= self.capacity and _rank(entry) > max(map(_rank, self._entries.values())):
                continue  # worse than every entry: skip the sympy work
            entry["canonical"] = form = self._canonical(text)
            old = self._entries.get(form)
            if old is None or _rank(entry) < _rank(old):
                self._entries[form] = entry
            if len(self._entries) > self.capacity:
                worst = max(self._entries.values(), key=_rank)
                del self._entries[worst["canonical"]]

    def entries(self) -> list[dict[str, Any]]:
        """Copies of the entries, best first (plain JSON values)."""
        keys = ("expression", "canonical", "fitness", "size", "generation")
        return [{k: e[k] for k in keys} for e in sorted(self._entries.values(), key=_rank)]

    def state(self) -> list[dict[str, Any]]:
        """Plain-JSON state: the entries."""
        return self.entries()

    @classmethod
    def from_state(cls, entries: Iterable[Mapping[str, Any]], capacity: int,
                   canonical: Callable[[str], str]) -> HallOfFame:
        """The hall of fame saved by :meth:`state`; canonical forms are recomputed, so every expression
        is parsed against the primitive set (ZcpError if one does not parse)."""
        hof = cls(capacity, canonical)
        for e in entries:
            text = str(e["expression"])
            form = canonical(text)
            hof._entries[form] = {"expression": text, "canonical": form, "fitness": float(e["fitness"]),
                                  "size": int(e["size"]), "generation": int(e["generation"])}
        return hof
