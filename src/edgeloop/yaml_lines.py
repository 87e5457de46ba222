"""Line numbers for validation errors in YAML documents: which line a msgspec error path points at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from edgeloop.errors import ConfigError

__all__ = ["convert", "item_label", "line_of", "load_yaml", "read_text", "where"]

T = TypeVar("T")
MAX_DEPTH = 64  # levels of nesting a document may have; deeper is refused before it is built


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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _depth_over(node, MAX_DEPTH):
            raise ConfigError(f"{origin}: nested more than {MAX_DEPTH} levels deep")
        return yaml.safe_load(text), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise ConfigError(f"{origin}, {where}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:  # the parser recurses per level: far too deep to be a configuration
        raise ConfigError(f"{origin}: nested more than {MAX_DEPTH} levels deep") from None


def _depth_over(root: Any, limit: int) -> bool:
    """Whether the node tree nests deeper than ``limit``, or an alias refers to its own ancestor. Iterative
    (depth itself is the danger) and each node once (aliases share nodes, so a walk of paths could explode)."""
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            on_path.discard(id(node))
            heights[id(node)] = 1 + max((heights[id(c)] for c in children), default=0)
            if heights[id(node)] > limit:
                return True
        elif id(node) in on_path:
            return True
        elif id(node) not in heights:
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in heights)
    return False


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def where(origin: str, node: Any) -> Callable[[str], str]:
    """``where(path)``: ``"origin, line N"`` for a msgspec error path (just ``origin`` without a node tree)."""

    def at(path: str) -> str:
        line = line_of(node, path) if node is not None else None
        return f"{origin}, line {line}" if line else origin

    return at


def convert(doc: Any, tp: type[T], *, origin: str, node: Any,
            label: Callable[[str], str] | None = None) -> T:
    """``msgspec.convert(doc, tp)``; a validation error becomes a ``ConfigError`` naming the origin, the line,
    the field (``label(path)``, default the path without ``$.``) and the problem."""
    try:
        return msgspec.convert(doc, tp)
    except msgspec.ValidationError as exc:
        what, _, path = str(exc).partition(" - at `")
        path = path.rstrip("`") or "$"
        name = label(path) if label is not None else (path.removeprefix("$.") if path != "$" else "document")
        raise ConfigError(f"{where(origin, node)(path)} ({name}): {what}") from None


def read_text(path: Path, what: str) -> str:
    """The file's text; ``ConfigError`` ("cannot read the <what> <path>: ...") when it cannot be read."""
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def item_label(doc: Any, key: str, field: str) -> Callable[[str], str]:
    """A ``label`` for :func:`convert` over a document holding a list under ``key``: the error's path, with the
    ``field`` of the item it points into (``rules[2] 'hot', above``), when that item has one."""

    def label(path: str) -> str:
        text = path.removeprefix("$.") if path != "$" else "document"
        named = _field_at(doc, key, field, path)
        if named:
            head, _, rest = text.partition("].")
            text = f"{head}] {named!r}, {rest}" if rest else f"{text} {named!r}"
        return text

    return label


def _field_at(doc: Any, key: str, field: str, path: str) -> str | None:
    prefix = f"$.{key}["
    if not path.startswith(prefix):
        return None
    try:
        item = doc[key][int(path[len(prefix):].partition("]")[0])]
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    value = item.get(field) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None

