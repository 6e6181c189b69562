"""The command line's inputs and outputs: records from arguments, a file or stdin (plain text, JSON
lines or CSV, strictly checked with file:line), and results printed safely (strings from models and
files escaped, JSON kept valid)."""

from __future__ import annotations

import difflib
import itertools
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import records
from ..text import escape

# Fields an inference command ignores in a record (training files carry them).
IGNORED = {"label", "labels", "id", "answers", "answer", "answer_start", "tags", "tokens"}


class UserError(Exception):
    """A problem with the command line or its inputs: reported in one line, no traceback."""


class Records:
    """The inputs of one command, read lazily (records.read); checked against the task's fields;
    remembers the ones handed out but not yet answered, so each printed result can say which input
    it answers."""

    def __init__(self, path, texts, required: tuple[str, ...], optional: tuple[str, ...] = (), fmt="auto"):
        self.path, self.texts, self.required, self.optional, self.fmt = path, texts, required, optional, fmt
        self.pending: deque = deque()
        self.keep = True  # remember inputs until answered (a rank that prints nothing does not)
        self.keep_blank = False  # blank lines of plain text are inputs too (embed: one row a line)

    def __iter__(self) -> Iterator:
        for _, record in self.located():
            yield record

    def located(self) -> Iterator[tuple[int, object]]:
        """(line number, or argument number, record) pairs."""
        count = 0
        for where, value in self._read():
            record = self._record(value, where)
            count += not (isinstance(record, str) and not record.strip())
            if self.keep:
                self.pending.append(record)
            yield records.line_number(where), record
        if count == 0:
            where = "stdin" if self.path in (None, "-") else self.path
            raise UserError(f"no inputs: {where} holds no non-empty line")

    def start(self) -> Iterator:
        """The records as an iterator whose first one is already read, so a missing file, an empty
        input or a bad header is reported before any model is loaded."""
        it = iter(self)
        first = next(it)
        return itertools.chain([first], it)

    def answered(self):
        """The input that the next result answers."""
        return self.pending.popleft() if self.pending else None

    def _read(self) -> Iterator:
        if self.texts:
            return ((f"argument {i}", t) for i, t in enumerate(self.texts, 1))
        if self.path in (None, "-") and sys.stdin.isatty():
            raise UserError("no input: give texts as arguments, --file FILE, or pipe text on stdin")
        if self.path not in (None, "-") and not Path(self.path).is_file():
            raise UserError(f"--file {self.path}: no such file")
        return records.read(self.path, self.fmt, keep_blank=self.keep_blank)

    def _check_keys(self, keys, where: str) -> None:
        known = set(self.required) | set(self.optional)
        for key in keys:
            if key not in known and key not in IGNORED:
                near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else f"; expected {sorted(known)}"
                raise UserError(f"{where}: unknown field {escape(str(key))!r}{hint}")
        missing = [k for k in self.required if k not in keys]
        if missing:
            raise UserError(
                f"{where}: missing field {missing[0]!r} (has {escape(str(sorted(map(str, keys))))})"
            )

    def _record(self, value, where: str):
        if isinstance(value, str):
            if self.required in (("text",), ("question",)):
                return value
            raise UserError(
                f"{where}: this command needs {' and '.join(self.required)} per input: use .jsonl or .csv"
            )
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object or a string, got {type(value).__name__}")
        if self._csv():  # every row holds the header's fields: checked once, as the header's
            if not self._header_checked:
                self._check_keys(list(value), where.rsplit(":", 1)[0] + ":1 (header)")
                self._header_checked = True
            value = {k: v for k, v in value.items() if v and k not in IGNORED}  # empty cells: absent
        self._check_keys(list(value), where)
        record = {k: value[k] for k in (*self.required, *self.optional) if k in value}
        if self._csv() and isinstance(record.get("choices"), str):
            record["choices"] = record["choices"].split("|")
        for key, item in record.items():
            ok = (
                isinstance(item, list) and item and all(isinstance(c, str) for c in item)
                if key == "choices"
                else isinstance(item, str)
            )
            if not ok:
                kind = "a non-empty list of strings" if key == "choices" else "a string"
                raise UserError(f"{where}: field {key!r} must be {kind}, got {escape(repr(item)[:60])}")
        if len(record) == 1 and len(self.required) == 1:
            return record[self.required[0]]
        return record

    _header_checked = False

    def _csv(self) -> bool:
        return self.fmt == "csv" or (self.fmt == "auto" and str(self.path).lower().endswith(".csv"))


def safe_json(value) -> str:
    """One line of valid JSON with non-ASCII text kept readable but every control or non-printable
    character (terminal escape sequences, lone surrogates) written as a \\u escape. NaN and infinity,
    which JSON cannot hold, are an error rather than invalid output."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ValueError(
            "an answer holds NaN or infinity (the model overflowed): no valid JSON to print"
        ) from None
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _json_escape(c) for c in text)


def _json_escape(c: str) -> str:
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def describe(record) -> str:
    """A short, escaped label for an input, to prefix the plain-text answer to it."""
    if isinstance(record, dict):
        parts = [record.get("text") or record.get("question") or ""]
        if record.get("text_pair"):
            parts.append(record["text_pair"])
        text = " | ".join(parts)
    else:
        text = str(record)
    text = escape(text)
    return text if len(text) <= 60 else text[:57] + "..."


def write_lines(results: Iterable, records: Records, as_json: bool, human) -> None:
    """Prints one line per result (JSON, or the input then its answer), flushing as it goes."""
    for result in results:
        record = records.answered()
        line = safe_json(result) if as_json else f"{describe(record)}\t{human(result)}"
        print(line, flush=True)
