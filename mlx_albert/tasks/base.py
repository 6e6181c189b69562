"""What a task is: one object holding every name it goes by (pipeline, CLI command, HTTP route,
training spelling), the head it needs, how it answers texts and how a server request for it is
checked; how it trains is its optional recipe (recipe.py), how it is exported its optional Export
(exported.py). Each task file
declares one; the registry (tasks/__init__.py) finds them by any name."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from ..text import escape
from .exported import Export
from .options import Option, RequestError
from .recipe import Recipe


@dataclass
class Limits:
    """What a server request may hold, and what checks it on the event loop."""

    max_input_chars: int
    max_length: int  # tokens the model reads
    front: object = None  # the event loop's own tokenizer (the worker thread has another)
    vocab_size: int = 1 << 31


def tokens_at_most(text: str, limits: Limits) -> int:
    """An upper bound on a text's tokens as the model reads it: every token but [CLS] and [SEP]
    holds at least one character, and texts are cut to max_length."""
    return min(len(text) + 3, limits.max_length)


def text_of(item, what: str, limits: Limits) -> str:
    """A non-empty string within the server's character limit, or a RequestError."""
    if not isinstance(item, str) or not item.strip():
        raise RequestError(f"{what} must be a non-empty string")
    if len(item) > limits.max_input_chars:
        raise RequestError(f"{what} has {len(item)} characters; the limit is {limits.max_input_chars}")
    return item


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def label_name(config, i: int) -> str:
    return config.id_to_label.get(int(i), f"LABEL_{int(i)}")


def scores(items: list[dict], key: str) -> str:
    """'label=0.9512  other=0.0488': a plain-text answer line."""
    return "  ".join(f"{escape(str(d[key]))}={d['score']:.4f}" for d in items)


class Task:
    """A task: its names, its head, and every room's view of it (see the module docstring). The
    defaults serve a classifier over rows; task files override what differs."""

    name: str = ""  # the pipeline's name, the canonical one
    help: str = ""  # the command's one-line help
    texts_help: str = "texts"  # what the command's positional arguments are
    architecture: str = "base"  # spec name of the head it needs
    aliases: tuple[str, ...] = ()  # other pipeline names (transformers')
    command: str | None = None  # the CLI's command
    route: str | None = None  # the server's path
    recipe: Recipe | None = None  # how it trains (`mlx-albert train --task recipe.name`)
    accepts: tuple[str, ...] = ()  # other architectures whose checkpoints answer it too
    needs_head: bool = True  # False: the backbone alone answers
    fields: tuple[str, ...] = ("text",)  # what an input record holds (CLI files)
    optional_fields: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()  # declared once (options.py): flags, server checks, docs
    export: Export | None = Export()  # how its forward is exported (None: it is not)
    vectors: bool = False  # one vector per input: the command writes them to .npy or shard folders
    batch_size: int = 8  # the pipeline's default

    @property
    def training(self) -> str | None:
        """The training spelling (`mlx-albert train --task`), when the task trains."""
        return self.recipe.name if self.recipe else None

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in (self.name, *self.aliases, self.command, self.training) if n))

    # -- answering texts (the pipeline) -----------------------------------------------------------
    def predict(self, model, tokenizer, inputs, **options):
        raise NotImplementedError

    def prepare(self, checkpoint, model, tokenizer) -> dict:
        """Defaults a checkpoint sets for this task's calls (embed: its sentence-transformers head)."""
        return {}

    def runs_on(self, model) -> bool:
        """Whether `model` carries this task's head (or needs none): its architecture or one it accepts."""
        from ..heads import ARCHITECTURES

        if not self.needs_head:
            return True
        return any(isinstance(model, ARCHITECTURES[n]) for n in (self.architecture, *self.accepts))

    def needs_pooler(self, options: dict) -> bool:
        """Whether answering uses the pooler (a checkpoint may lack a trained one)."""
        return self.needs_head

    @property
    def request_options(self) -> frozenset[str]:
        """What a server request may set."""
        return frozenset(o.name for o in self.options if o.server)

    # -- the command line -------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own flags (beside those of every task command): one per declared option
        that has one, then the task's input flags."""
        for option in self.options:
            if option.flag is not None:
                option.add_flag(parser)
        self.add_input_arguments(parser)

    def add_input_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags that give inputs rather than options (qa's --context)."""

    def cli_options(self, args: argparse.Namespace) -> dict:
        """The declared options the command line set (unset ones are left to the function)."""
        values = {o.name: o.from_args(args) for o in self.options if o.flag is not None}
        return {k: v for k, v in values.items() if v is not None}

    def cli_inputs(self, args: argparse.Namespace, records, open_records):
        """(records, inputs) of a command: by default its records as they are."""
        records = open_records(self.fields, self.optional_fields)
        return records, records.start()

    def human(self, result, args: argparse.Namespace) -> str:
        """One answer as a plain-text line."""
        return str(result)

    # -- the server -------------------------------------------------------------------------------
    def request_inputs(self, body: dict) -> dict:
        """The request body with shorthand fields folded into `inputs` (QA's question/context)."""
        return body

    def check_options(self, options: dict, limits: Limits) -> None:
        """A request's options checked for type and range, as declared (RequestError naming the
        option)."""
        for option in self.options:
            if option.server and option.name in options:
                option.check(options[option.name], limits)

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        """One input of a request checked before it is batched with others (RequestError), and what
        it costs: (tokens at most the model will run, answers at most it will return)."""
        return tokens_at_most(text_of(item, "inputs", limits), limits), 1

    def single_result(self, result, inputs, options: dict):
        """The answer to a request whose `inputs` was one item, not a list."""
        return result
