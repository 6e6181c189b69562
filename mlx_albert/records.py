"""Reading inputs and training data: plain text (one record a line), JSON lines and CSV with a
header, from a file or stdin, streamed, strictly checked (UTF-8, JSON, columns) with file:line in
every error, and bounded: no record, line or CSV field may pass MAX_RECORD bytes, so one huge line
costs an error, not the machine's memory. Pre-training text is read as documents."""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

from .files import open_regular
from .text import escape

FORMATS = ("auto", "txt", "jsonl", "csv")
MAX_RECORD = 16 << 20  # bytes per line, record or CSV field (a long document is ~100 KB)
_SUFFIXES = {".json": "jsonl", ".jsonl": "jsonl", ".csv": "csv", ".txt": "txt"}


class DataError(ValueError):
    """A problem in an input or data file, reported with its file and line."""


def _lines(binary, name: str, limit: int) -> Iterator[str]:
    """UTF-8 lines of a binary stream, each at most `limit` bytes; a line that is not UTF-8 or too
    long is an error naming file:line."""
    for number in itertools.count(1):
        raw = binary.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise DataError(
                f"{name}:{number}: a line of over {limit} bytes: split the record (or pass fewer, shorter "
                "texts); nothing this long can be read as one input"
            )
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name}:{number}: not UTF-8 text (byte {e.start}); save the file as UTF-8"
            ) from None


def _open(path: str | Path | None) -> tuple[object, str, str | None]:
    """(binary stream, name, format from the suffix or None) of a file, or stdin for None or "-"."""
    if path is None or str(path) == "-":
        return sys.stdin.buffer, "<stdin>", None
    try:
        stream = open_regular(Path(path), "data file")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    return stream, str(path), _SUFFIXES.get(Path(path).suffix.lower(), "txt")


def read(
    path: str | Path | None, fmt: str = "auto", keep_blank: bool = False, limit: int = MAX_RECORD
) -> Iterator[tuple[str, object]]:
    """(where, value) pairs of a file or stdin, lazily: a string per line of plain text (blank lines
    skipped unless keep_blank), the JSON value of each non-blank line of JSON lines, a dict of
    strings per CSV row (every header field; empty cells are ""). `fmt` "auto" goes by the suffix; stdin
    whose first non-blank line is a JSON object is read as JSON lines."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    binary, name, by_suffix = _open(path)
    with binary if binary is not sys.stdin.buffer else _kept_open(binary):
        source = _lines(binary, name, limit)
        kind = fmt if fmt != "auto" else by_suffix
        if kind is None:  # sniff stdin: blank lines kept, so line numbers stay right
            head = []
            for line in source:
                head.append(line)
                if line.strip():
                    break
            kind = "jsonl" if head and _is_json_object(head[-1]) else "txt"
            source = itertools.chain(head, source)
        yield from {"txt": _txt, "jsonl": _jsonl, "csv": _csv}[kind](source, name, keep_blank, limit)


class _kept_open:
    """A context manager that leaves stdin open."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        return False


def _txt(source, name: str, keep_blank: bool, limit: int) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(source, 1):
        text = line.rstrip("\r\n")
        if keep_blank or text.strip():
            yield f"{name}:{number}", text


def _jsonl(source, name: str, keep_blank: bool, limit: int) -> Iterator[tuple[str, object]]:
    for number, line in enumerate(source, 1):
        if line.strip():
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise DataError(
                    f"{name}:{number}: not valid JSON ({getattr(e, 'msg', 'too deep')})"
                ) from None
            yield f"{name}:{number}", value


def _csv(source, name: str, keep_blank: bool, limit: int) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(limit)
    reader = csv.DictReader(source)
    try:
        header = reader.fieldnames or []
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise DataError(
                f"{name}:1 (header): the column {escape(duplicates[0])!r} appears twice: each field "
                "may have one column"
            )
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{where}: has a different number of columns than the header")
            yield where, row
    except csv.Error as e:
        raise DataError(
            f"{name}:{reader.line_num}: not valid CSV ({e}; fields hold at most {limit} bytes)"
        ) from None


def line_number(where: str) -> int:
    """The number in a record's "file:line" (or "argument N")."""
    return int(where.rsplit(":", 1)[-1].rsplit(" ", 1)[-1])


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def number(text: str):
    """A CSV cell as an int or a finite float when it reads as one, else the string."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is int or math.isfinite(value):
            return value
    return text


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """(where, record) pairs of a training file, .jsonl or .csv; `where` is "file:line" for error
    messages. CSV labels that read as numbers become numbers (regression needs them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind not in ("jsonl", "csv"):
        raise DataError(f"{path}: unsupported data file type {path.suffix!r}; use .jsonl or .csv")
    records = []
    for where, record in read(path, kind):
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if kind == "csv":  # an empty cell is an absent field
            record = {k: v for k, v in record.items() if v != ""}
        if kind == "csv" and "label" in record:
            record["label"] = number(record["label"])
        records.append((where, record))
    if not records:
        raise DataError(f"{path} holds no examples")
    return records


def read_documents(path: str | Path) -> list[list[str]]:
    """Documents of a plain text file: one sentence (or paragraph) per line, blank lines between
    documents."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pre-training text {path} does not exist")
    documents, current = [], []
    for _, line in read(path, "txt", keep_blank=True):
        if line.strip():
            current.append(line.strip())
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    if not documents:
        raise DataError(f"{path} holds no text")
    return documents
