"""The detectors by name: every module in ``edgeloop.detect.detectors`` registers its classes here.

A detector class is registered with ``@register`` and built with
``make(name, n_features, seed=..., warmup=..., **params)``; every registered detector passes the
shared conformance suite (``tests/test_detect_conformance.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from edgeloop.detect.protocol import Detector

__all__ = ["available", "make", "register"]

_REGISTRY: dict[str, Callable[..., Detector]] = {}
_state = {"loaded": False}
T = TypeVar("T")


def register(cls: type[T]) -> type[T]:
    """Class decorator: register a detector under its ``name`` class attribute."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty str class attribute 'name' to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"two detectors are registered as {name!r}")
    _REGISTRY[name] = cls  # type: ignore[assignment]  # checked by the conformance suite, not statically
    return cls


def _load() -> None:
    if _state["loaded"]:
        return
    import edgeloop.detect.detectors as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    _state["loaded"] = True


def available() -> list[str]:
    """The registered detector names, sorted."""
    _load()
    return sorted(_REGISTRY)


def make(name: str, n_features: int, *, seed: int = 0, warmup: int | None = None, **params: Any) -> Detector:
    """Build detector ``name`` for rows of ``n_features`` (``warmup``: rows before it scores)."""
    _load()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
    if warmup is not None:
        params["warmup"] = warmup
    return factory(n_features, seed=seed, **params)
