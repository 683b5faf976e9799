"""Genetic programming over the proxy language (DEAP, strongly typed).

The package sees only a :class:`primitives.registry.Registry`, a terminal name -> type mapping and a
fitness callback over expression strings; it knows nothing of networks or benchmarks. Modules:
``creator`` (DEAP's creator classes), ``pset`` (primitive set, tree <-> text), ``config``
(:class:`GPConfig`), ``operators`` (generation and variation), ``halloffame`` and ``engine``
(:class:`Evolution`, resumable from plain JSON), ``islands`` (:class:`Islands`: several
Evolutions with ring migration, serially or on Ray actors).
"""
