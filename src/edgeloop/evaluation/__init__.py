"""How good the detectors and the RUL model are: readers of the public benchmarks (NAB, SKAB, C-MAPSS), their
scorers, and the runners that stream a corpus or a simulated fleet through the platform's own detectors.

This is where the file I/O and the simulator live, so that :mod:`edgeloop.detect` and :mod:`edgeloop.rul` stay
pure algorithms; ``edgeloop eval ...`` is the command line over it."""
