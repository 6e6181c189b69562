"""A task's options, declared once as data: name, type, range, help and CLI flag, the default read
from the task function's own signature. The command line's flags, the server's checks and the
README's option tables are generated from these declarations (Bumblebee declares its options so)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, replace


class RequestError(ValueError):
    """A server request's input is wrong (HTTP 400), naming the field (`param`)."""

    def __init__(self, message: str, param: str = "inputs"):
        super().__init__(message)
        self.param = param


_SIGNATURE = object()  # the default comes from the task function's signature


@dataclass(frozen=True)
class Option:
    """One option of a task.

    `lo`/`hi` bound numbers (a string names a server limit: "max_length", "vocab_size");
    `flag` is the command line's spelling ("" for --name-with-dashes, None: not on the command
    line); `server`: whether a request may set it; `cli_default`: where the command line's default
    differs from the function's (ner aggregates by default, as a reader of its output expects)."""

    name: str
    kind: type  # int, float, bool, str or list (of strings)
    help: str
    lo: float | str | None = None
    hi: float | str | None = None
    choices: tuple | None = None
    flag: str | None = ""
    server: bool = True
    max_items: int = 1000  # lists: at most this many strings
    single: bool = False  # lists: one string stands for a list of one
    default: object = _SIGNATURE
    cli_default: object = _SIGNATURE

    @property
    def optional(self) -> bool:
        """None is allowed (and means: the function decides)."""
        return self.default is None

    @property
    def dest(self) -> str:
        return self.flag_name.lstrip("-").replace("-", "_")

    def bounds(self, limits) -> tuple:
        return tuple(getattr(limits, b) if isinstance(b, str) else b for b in (self.lo, self.hi))

    def check(self, value, limits) -> None:
        """A request's value of this option, or a RequestError naming it (booleans are not
        integers here, nor integers floats)."""
        if value is None and self.optional:
            return
        if self.kind is list:
            ok = isinstance(value, str) or (
                isinstance(value, list)
                and all(isinstance(v, str) for v in value)
                and len(value) <= self.max_items
            )
            if not ok:
                raise RequestError(
                    f"{self.name} must be a string or a list of at most {self.max_items} strings", self.name
                )
            return
        lo, hi = self.bounds(limits)
        check_option(self.name, value, self.kind, lo, hi, self.choices, self.optional)

    @property
    def flag_default(self) -> object:
        """The command line's default."""
        return self.default if self.cli_default is _SIGNATURE else self.cli_default

    def add_flag(self, parser: argparse.ArgumentParser) -> None:
        default = self.flag_default
        text = self.help
        if self.kind is bool:
            if default is False:  # a switch
                parser.add_argument(self.flag_name, dest=self.dest, action="store_true", help=text)
            else:
                parser.add_argument(
                    self.flag_name, dest=self.dest, action=argparse.BooleanOptionalAction, default=default,
                    help=text,
                )  # fmt: skip
        elif self.kind is list:  # repeatable, comma-separated
            parser.add_argument(
                self.flag_name, dest=self.dest, action="append", help=f"{text}, comma-separated (repeatable)"
            )
        else:
            shown = f" (default {default})" if default is not None else ""
            parser.add_argument(
                self.flag_name, dest=self.dest, type=self.kind, default=default, choices=self.choices,
                help=text + shown,
            )  # fmt: skip

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def from_args(self, args: argparse.Namespace):
        value = getattr(args, self.dest)
        if self.kind is list and value is not None:
            value = [t for group in value for t in group.split(",") if t] or None
        return value


def declare(function, *options: Option) -> tuple[Option, ...]:
    """The options with their defaults read from `function`'s signature (one home for each
    default); an option the function does not take is refused here, at import."""
    parameters = inspect.signature(function).parameters
    out = []
    for o in options:
        if o.name not in parameters:
            raise TypeError(f"{function.__name__} takes no option {o.name!r}")
        if o.default is _SIGNATURE:
            default = parameters[o.name].default
            # a private sentinel (text-classification's legacy top_k) reads as "unset"
            plain = default is None or isinstance(default, bool | int | float | str | tuple)
            o = replace(o, default=default if plain else None)
        out.append(o)
    return tuple(out)


def check_option(
    name: str, value, kind: type, lo=None, hi=None, choices=None, optional: bool = False
) -> None:
    """A request option of the right type and range, or a RequestError naming it (booleans are not
    integers here, nor integers floats)."""
    if value is None and optional:
        return
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if ok and kind in (int, float):
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok and choices is not None:
        ok = value in choices
    if not ok:
        want = (
            f"one of {list(choices)}"
            if choices
            else f"{'an integer' if kind is int else 'a ' + kind.__name__}"
        )
        if kind in (int, float) and (lo is not None or hi is not None):
            want += f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise RequestError(
            f"{name} must be {want}{' or null' if optional else ''}, got {str(value)[:40]!r}", name
        )


def table(options: tuple[Option, ...]) -> str:
    """A Markdown table of the options (README's option tables are this, checked by a test)."""
    rows = [
        "| option | CLI flag | in a request | type | default | range | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in options:
        flag = f"`{o.flag_name}`" if o.flag is not None else "-"
        kind = "list of strings" if o.kind is list else o.kind.__name__
        default = "unset" if o.default is None else f"`{o.default!r}`"
        if o.cli_default is not _SIGNATURE:
            default += f" (CLI: `{o.cli_default!r}`)"
        if o.choices:
            span = ", ".join(f"`{c}`" for c in o.choices)
        elif o.lo is not None or o.hi is not None:
            span = f"{o.lo if o.lo is not None else ''}..{o.hi if o.hi is not None else ''}"
        else:
            span = ""
        server = "yes" if o.server else "-"
        rows.append(f"| `{o.name}` | {flag} | {server} | {kind} | {default} | {span} | {o.help} |")
    return "\n".join(rows)
