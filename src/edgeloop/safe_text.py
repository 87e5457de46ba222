"""Text every store can keep: no NUL character, no lone surrogate.

PostgreSQL refuses a NUL character in ``text`` (``invalid byte sequence for encoding "UTF8": 0x00``), and no
driver can encode a lone surrogate (``\\ud800``) as UTF-8; SQLite keeps the first and refuses the second.
Ingest refuses such strings in a message (``bad_text``); what the platform writes about a refused message
(a dead letter's topic and detail) is made storable with :func:`storable`.

>>> text_problem("pump started")
>>> text_problem("a\\x00b")
'a NUL character at position 1'
>>> storable("a\\x00b\\ud800")
'a\\ufffdb\\ufffd'
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def text_problem(s: str) -> str | None:
    """Why ``s`` cannot be stored as text, or None when it can."""
    nul = s.find("\x00")
    if nul >= 0:
        return f"a NUL character at position {nul}"
    if s.isascii():
        return None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate (not UTF-8) at position {exc.start}"
    return None


def storable(s: str) -> str:
    """``s`` with every NUL character and lone surrogate replaced by U+FFFD."""
    if text_problem(s) is None:
        return s
    return "".join(REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in s)
