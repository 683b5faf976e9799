"""The knobs of an evolution run (the ``[gp]`` section of a campaign config).

Heights follow DEAP: the root is at depth 0, so ``params`` has height 0 and ``layer_sum(snip)`` 1.
Fields are plain ints and floats so that the config round-trips through TOML.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPConfig:
    """Defaults suit a small campaign (about a thousand distinct evaluations)."""

    population: int = 64
    generations: int = 20
    tournament_size: int = 3
    parsimony_size: float = 1.4
    """Size tournament of the double tournament, in [1, 2]: the smaller of two fitness-tournament
    winners is kept with probability parsimony_size / 2 (1 = no size pressure)."""
    init_min_depth: int = 1
    init_max_depth: int = 4
    crossover_prob: float = 0.6
    mutation_prob: float = 0.3
    mut_subtree_weight: float = 0.5
    mut_point_weight: float = 0.3
    mut_shrink_weight: float = 0.2
    mut_subtree_max_depth: int = 2
    max_height: int = 8
    max_size: int = 40
    elitism: int = 2
    hall_of_fame: int = 20
    initial_expressions: tuple[str, ...] = ()
    """Expressions placed in generation 0 before the random trees (e.g. known proxies); empty = all random."""
    seed: int = 0
    islands: int = 1
    """Subpopulations evolving apart (gp/islands.py); ``population`` is their total, split as evenly as
    possible. 1 = one population (gp/engine.py)."""
    migration_interval: int = 5
    """Generations between migrations when islands > 1."""
    migrants: int = 2
    """Best distinct expressions each island sends at a migration to the next island of the ring, where
    they replace the worst."""

    def __post_init__(self) -> None:
        per_island = self.population // max(1, self.islands)  # the smallest island
        problems = [
            (self.islands >= 1, "islands must be >= 1"),
            (self.islands <= self.population, f"islands ({self.islands}) is larger than population "
                                              f"({self.population}, the total over all islands)"),
            (self.population >= 2 * self.islands, "population must be at least 2 per island"),
            (self.generations >= 0, "generations must be >= 0"),
            (self.tournament_size >= 1, "tournament_size must be >= 1"),
            (1.0 <= self.parsimony_size <= 2.0, "parsimony_size must be in [1, 2]"),
            (0 <= self.init_min_depth <= self.init_max_depth <= self.max_height,
             "need 0 <= init_min_depth <= init_max_depth <= max_height"),
            (0.0 <= self.crossover_prob <= 1.0, "crossover_prob must be in [0, 1]"),
            (0.0 <= self.mutation_prob <= 1.0, "mutation_prob must be in [0, 1]"),
            (min(self.mutation_weights) >= 0 and sum(self.mutation_weights) > 0,
             "mutation weights must be >= 0 with a positive sum"),
            (0 <= self.mut_subtree_max_depth <= self.max_height, "need 0 <= mut_subtree_max_depth <= max_height"),
            (self.max_size >= 1, "max_size must be >= 1"),
            (0 <= self.elitism < per_island, "need 0 <= elitism < population (per island)"),
            (self.hall_of_fame >= 1, "hall_of_fame must be >= 1"),
            (len(self.initial_expressions) < per_island, "need fewer initial_expressions than population (per island)"),
            (self.migration_interval >= 1, "migration_interval must be >= 1"),
            (0 <= self.migrants and (self.islands == 1 or self.migrants < per_island),
             "need 0 <= migrants < population (per island)"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)

    @property
    def mutation_weights(self) -> tuple[float, float, float]:
        """Relative weights of subtree, point and shrink mutation."""
        return self.mut_subtree_weight, self.mut_point_weight, self.mut_shrink_weight
