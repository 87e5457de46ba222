"""EdgeLoop benchmarks; run them with ``edgeloop bench ...`` from a source checkout (see docs/benchmarks.md)."""
