"""Strings from files (label names, words, tokens, paths) made safe to print on a terminal."""

from __future__ import annotations


def escape(text: str) -> str:
    """`text` with control and other non-printable characters (escape sequences, bells, lone
    surrogates) written as Python escapes; printable text, accents and CJK included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
