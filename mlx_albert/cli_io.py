"""The command line's inputs and outputs: records from arguments, a file or stdin (plain text, JSON
lines or CSV, strictly checked with file:line), and results printed safely (strings from models and
files escaped, JSON kept valid)."""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from .text import escape

FORMATS = ("auto", "txt", "jsonl", "csv")
# Fields an inference command ignores in a record (training files carry them).
IGNORED = {"label", "labels", "id", "answers", "answer", "answer_start", "tags", "tokens"}


class UserError(Exception):
    """A problem with the command line or its inputs: reported in one line, no traceback."""


class Records:
    """The inputs of one command, read lazily; remembers the ones handed out but not yet answered,
    so each printed result can say which input it answers."""

    def __init__(self, path, texts, required: tuple[str, ...], optional: tuple[str, ...] = (), fmt="auto"):
        self.path, self.texts, self.required, self.optional, self.fmt = path, texts, required, optional, fmt
        self.pending: deque = deque()
        self.keep = True  # remember inputs until answered (a rank that prints nothing does not)

    def __iter__(self) -> Iterator:
        count = 0
        for record in self._read():
            count += 1
            if self.keep:
                self.pending.append(record)
            yield record
        if count == 0:
            where = "stdin" if self.path is None else self.path
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
            yield from (self._record(t, "argument") for t in self.texts)
            return
        if self.path is None or self.path == "-":  # --file - is stdin, as for other Unix tools
            if sys.stdin.isatty():
                raise UserError("no input: give texts as arguments, --file FILE, or pipe text on stdin")
            source, name = _text_stream(sys.stdin.buffer, "<stdin>"), "<stdin>"
            kind = self.fmt if self.fmt != "auto" else None
        else:
            path = Path(self.path)
            if not path.is_file():
                raise UserError(f"--file {self.path}: no such file")
            source, name = _text_stream(open(path, "rb"), self.path), self.path
            suffix = path.suffix.lower().lstrip(".")
            kind = (
                self.fmt
                if self.fmt != "auto"
                else {"json": "jsonl", "jsonl": "jsonl", "csv": "csv"}.get(suffix)
            )
        with source:
            if kind is None:  # sniff: a first line holding a JSON object means JSON lines
                head = [source.readline()]
                while head[-1] and not head[-1].strip():
                    head.append(source.readline())
                kind = "jsonl" if _is_json_object(head[-1]) else "txt"
                source = itertools.chain(filter(None, head), source)  # blanks kept: line numbers stay right
            yield from getattr(self, f"_{kind}")(source, name)

    def _jsonl(self, source, name) -> Iterator:
        for number, line in enumerate(source, 1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{name}:{number}: not valid JSON ({e.msg})") from None
                yield self._record(value, f"{name}:{number}")

    def _csv(self, source, name) -> Iterator:
        reader = csv.DictReader(source)
        header = reader.fieldnames or []
        self._check_keys(header, f"{name}:1 (header)")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise UserError(
                    f"{name}:{reader.line_num}: has a different number of columns than the header"
                )
            record = {k: v for k, v in row.items() if v and k not in IGNORED}
            if "choices" in record:
                record["choices"] = record["choices"].split("|")
            yield self._record(record, f"{name}:{reader.line_num}")

    def _txt(self, source, name) -> Iterator:
        if self.required not in (("text",), ("question",)):
            raise UserError(
                f"{name}: this command needs {' and '.join(self.required)} per input: use .jsonl or .csv"
            )
        yield from (line.rstrip("\r\n") for line in source if line.strip())

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
            raise UserError(f"{where}: expected an object with {list(self.required)}, got a string")
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object or a string, got {type(value).__name__}")
        self._check_keys(list(value), where)
        record = {k: value[k] for k in (*self.required, *self.optional) if k in value}
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


def _text_stream(binary, name: str):
    """UTF-8 lines of a binary stream; a line that is not UTF-8 is an error naming file:line."""

    class Lines(io.TextIOBase):
        def __init__(self):
            self.number = 0

        def __iter__(self):
            return self

        def __next__(self):
            line = self.readline()
            if not line:
                raise StopIteration
            return line

        def readline(self, size=-1):
            raw = binary.readline()
            self.number += 1
            try:
                return raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{name}:{self.number}: not UTF-8 text (byte {e.start}); save the file as UTF-8"
                ) from None

        def close(self):
            binary.close()

    return Lines()


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def safe_json(value) -> str:
    """One line of JSON with non-ASCII text kept readable but every control or non-printable
    character (terminal escape sequences, lone surrogates) written as a \\u escape."""
    text = json.dumps(value, ensure_ascii=False)
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
