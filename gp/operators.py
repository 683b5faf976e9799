"""Generation, selection and variation of typed trees under the size and height limits of a run.

Crossover is :func:`one_point` (DEAP's cxOnePoint made process-independent); mutation is one of
subtree (``mutUniform`` with a grown subtree of height <= ``mut_subtree_max_depth``), point
(``mutNodeReplacement``) and shrink (``mutShrink``), drawn by the config's weights.
Bloat control is twofold: Koza's static limits (``gp.staticLimit`` on height and on size: a child
over a limit is replaced by a copy of a parent) and Luke & Panait's double tournament (fitness
tournaments produce two aspirants, a size tournament of ``parsimony_size`` prefers the smaller).
Offspring are new: a child repeating an evaluated expression or a sibling is varied again (``breed``).
Every operator draws from the global ``random``, whose state the engine swaps in around each generation.
"""
from __future__ import annotations

import copy
import functools
import operator
import random
from collections import defaultdict
from collections.abc import Callable, Container

from deap import gp, tools

from evaluation.errors import ZcpError
from gp.config import GPConfig
from gp.creator import Individual
from gp.pset import ProxySet, from_text, to_text
from primitives.expression import parse, to_string

ATTEMPTS = 100
"""Tries before giving up on generating a tree (each failure is a fresh random draw)."""
NOVELTY_TRIES = 4
"""Mutations tried on an invalid or already known child before a random tree replaces it."""


def generate(pset: gp.PrimitiveSetTyped, min_depth: int, max_depth: int, type_: type | None = None,
             method: Callable[..., list] = gp.genHalfAndHalf) -> list:
    """A node list from ``method`` (DEAP's genHalfAndHalf by default), retried on DEAP's IndexError.

    DEAP raises IndexError when the drawn shape needs a leaf or a primitive of a type that has none
    (e.g. a type with terminals but no primitive, above the drawn height); another draw may fit."""
    for _ in range(ATTEMPTS):
        try:
            return method(pset, min_depth, max_depth, type_)
        except IndexError:
            continue
    want = (type_ or pset.ret).__name__
    raise ZcpError(f"could not generate a {want} tree of height {min_depth}..{max_depth} in {ATTEMPTS} tries:"
                   " some type lacks a terminal or a primitive")


def one_point(ind1: Individual, ind2: Individual) -> tuple[Individual, Individual]:
    """Typed one-point crossover: swap a random subtree of ``ind1`` with one of the same type in ``ind2``.

    DEAP's cxOnePoint, except that the common types are drawn in name order: DEAP draws from a set of
    classes, whose order follows their memory addresses and so differs from process to process."""
    if len(ind1) < 2 or len(ind2) < 2:
        return ind1, ind2
    where1: dict[type, list[int]] = defaultdict(list)
    where2: dict[type, list[int]] = defaultdict(list)
    for where, ind in ((where1, ind1), (where2, ind2)):
        for i in range(1, len(ind)):
            where[ind[i].ret].append(i)
    common = sorted(set(where1) & set(where2), key=lambda t: t.__name__)
    if common:
        type_ = random.choice(common)
        slice1 = ind1.searchSubtree(random.choice(where1[type_]))
        slice2 = ind2.searchSubtree(random.choice(where2[type_]))
        ind1[slice1], ind2[slice2] = ind2[slice2], ind1[slice1]
    return ind1, ind2


class Operators:
    """The variation pipeline of one run: initial trees, selection, crossover, mutation, validity."""

    def __init__(self, pset: ProxySet, config: GPConfig) -> None:
        self.pset, self.config = pset, config

        def limited(op: Callable) -> Callable:
            op = gp.staticLimit(operator.attrgetter("height"), config.max_height)(op)
            return gp.staticLimit(len, config.max_size)(op)

        subtree = functools.partial(generate, min_depth=0, max_depth=config.mut_subtree_max_depth, method=gp.genGrow)
        self._mate = limited(one_point)
        self._mutations = [limited(functools.partial(gp.mutUniform, expr=subtree, pset=pset)),
                           limited(functools.partial(gp.mutNodeReplacement, pset=pset)),
                           limited(gp.mutShrink)]

    def valid_text(self, tree: gp.PrimitiveTree) -> str | None:
        """The text of ``tree`` if it is within the limits and parses back to itself, else None."""
        if tree.height > self.config.max_height or len(tree) > self.config.max_size:
            return None
        text = to_text(tree)
        try:
            ok = to_string(parse(text, self.pset.registry, self.pset.terminal_types)) == text
        except ZcpError:
            return None
        return text if ok else None

    def given_text(self, text: str) -> str:
        """``text`` normalised as a tree prints it; ZcpError if it does not parse or breaks a limit."""
        tree = from_text(text, self.pset)
        valid = self.valid_text(tree)
        if valid is None:
            raise ZcpError(f"initial expression {text!r} exceeds max_height {self.config.max_height} "
                           f"or max_size {self.config.max_size}")
        return valid

    def random_text(self) -> str:
        """A valid ramped half-and-half tree of the initial depth range, as text."""
        c = self.config
        for _ in range(ATTEMPTS):
            text = self.valid_text(Individual(generate(self.pset, c.init_min_depth, c.init_max_depth)))
            if text is not None:
                return text
        raise ZcpError(f"no valid tree in {ATTEMPTS} tries: max_size {c.max_size} is too small for"
                       f" init depths {c.init_min_depth}..{c.init_max_depth}")

    def initial(self, n: int) -> list[str]:
        """The config's initial expressions, then random trees up to ``n``, distinct while a bounded
        number of tries allows."""
        texts = dict.fromkeys(self.given_text(t) for t in self.config.initial_expressions)
        for _ in range(10 * n):
            if len(texts) == n:
                break
            texts[self.random_text()] = None
        return list(texts) + [self.random_text() for _ in range(n - len(texts))]

    def breed(self, parents: list[Individual], k: int, seen: Container[str] = ()) -> list[str]:
        """``k`` offspring texts: double tournament, then one-point crossover on consecutive pairs and
        one weighted mutation each (varAnd). A child that is invalid, already evaluated (in ``seen``) or
        equal to an earlier child is mutated again, up to ``NOVELTY_TRIES`` times, then replaced by a
        random tree that is new (if one is found in ``ATTEMPTS`` draws): without this most of a
        converged population re-breeds known expressions and a generation evaluates few new ones."""
        c = self.config
        chosen = tools.selDoubleTournament(parents, k, c.tournament_size, c.parsimony_size, fitness_first=True)
        kids = [copy.deepcopy(ind) for ind in chosen]
        for i in range(1, k, 2):
            if random.random() < c.crossover_prob:
                kids[i - 1], kids[i] = self._mate(kids[i - 1], kids[i])
        for i in range(k):
            if random.random() < c.mutation_prob:
                kids[i], = self._mutate(kids[i])
        texts: dict[str, None] = {}

        def fresh(text: str | None) -> bool:
            return text is not None and text not in seen and text not in texts

        for kid in kids:
            text = self.valid_text(kid)
            for _ in range(NOVELTY_TRIES):
                if fresh(text):
                    break
                kid, = self._mutate(kid)
                text = self.valid_text(kid)
            for _ in range(ATTEMPTS):
                if fresh(text):
                    break
                text = self.random_text()
            texts[text] = None
        return list(texts) + [self.random_text() for _ in range(k - len(texts))]

    def _mutate(self, ind: Individual) -> tuple[Individual]:
        return random.choices(self._mutations, weights=self.config.mutation_weights)[0](ind)
