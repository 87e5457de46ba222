"""EdgeLoop benchmarks, run with ``edgeloop bench ...`` (see docs/benchmarks.md). They are part of the package, so
they import like any module; their JSON results go to the source checkout's ``bench/results/``
(:data:`~edgeloop.bench.harness.RESULTS_DIR`)."""
