"""Line numbers for validation errors in YAML documents: which line a msgspec error path points at."""

from __future__ import annotations

from typing import Any

import yaml

from edgeloop.errors import ConfigError

__all__ = ["line_of", "load_yaml"]


def line_of(node: Any, path: str) -> int | None:
    """The 1-based line of the YAML node at msgspec error path ``$.a[0].b`` (the deepest that exists)."""
    line: int = node.start_mark.line + 1
    for part in path.removeprefix("$").replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            if not isinstance(node, yaml.SequenceNode):
                break
            i = int(part[1:-1])
            if i >= len(node.value):
                break
            node = node.value[i]
        else:
            if not isinstance(node, yaml.MappingNode):
                break
            for key, value in node.value:
                if key.value == part:
                    node = value
                    break
            else:
                break
        line = node.start_mark.line + 1
    return line


def load_yaml(text: str, origin: str) -> tuple[Any, Any]:
    """The decoded document and its node tree (for :func:`line_of`); JSON is YAML too. Raises ``ConfigError``
    naming the line of a syntax error."""
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise ConfigError(f"{origin}, {where}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from None
