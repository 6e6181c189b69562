"""Strings from files (label names, words, tokens, paths) made safe to print on a terminal."""

from __future__ import annotations


def escape(text: str) -> str:
    """`text` with control and other non-printable characters (escape sequences, bells, lone
    surrogates) written as Python escapes; printable text, accents and CJK included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def escape_all(value):
    """escape() applied to every string inside nested lists/dicts (for printing parsed results)."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list | tuple):
        return [escape_all(v) for v in value]
    if isinstance(value, dict):
        return {escape_all(k) if isinstance(k, str) else k: escape_all(v) for k, v in value.items()}
    return value
