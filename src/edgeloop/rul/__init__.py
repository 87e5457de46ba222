"""Remaining useful life: the features (:mod:`~edgeloop.rul.features`) and model (:mod:`~edgeloop.rul.model`), pure
code like :mod:`edgeloop.detect`, and the platform's monitor that runs the trained models on live telemetry
(:mod:`~edgeloop.rul.monitor`). Evaluation on C-MAPSS is in :mod:`edgeloop.evaluation`."""
