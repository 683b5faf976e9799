"""The only module that touches ``deap.creator``: the maximising fitness and the tree individual.

``deap.creator`` classes are process-global, so they are created once, on first import, and reused.
Individuals are never pickled: they travel between processes and checkpoints as expression strings.
"""
from __future__ import annotations

from deap import base, creator, gp

if not hasattr(creator, "FitnessMax"):
    creator.create("FitnessMax", base.Fitness, weights=(1.0,))
if not hasattr(creator, "Individual"):
    creator.create("Individual", gp.PrimitiveTree, fitness=creator.FitnessMax)
if creator.FitnessMax.weights != (1.0,) or not issubclass(creator.Individual, gp.PrimitiveTree):
    raise RuntimeError("deap.creator holds a different FitnessMax or Individual: only gp.creator may create them")

FitnessMax: type = creator.FitnessMax
"""Single-objective fitness, higher is better."""
Individual: type = creator.Individual
"""A ``gp.PrimitiveTree`` with a ``fitness`` of type :data:`FitnessMax`."""
