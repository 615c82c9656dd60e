"""Test oracles and published-structure baselines, shared by tests/ and benchmarks/.

Not part of the installed package (setup.py packages only ``pyreid``; the
tests check it): the conftest.py files of tests/ and benchmarks/ put the
repository root on ``sys.path`` so ``from references.distances import ...``
works from both, and pyreid itself never imports this folder.

- ``distances``, ``dbscan``, ``cluster_memory``, ``kreciprocal``: slow,
  obviously-correct references written from the definitions (float64, dense,
  loops), one module per family of ops; keep the sizes small.
- ``published``: the structure of the code pyreid replaces, the baselines of
  the benchmarks; independent of pyreid.
"""
