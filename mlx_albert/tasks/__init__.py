"""The tasks, one file each, and their registry: every name a task goes by (pipeline, CLI command,
HTTP route, training spelling) leads to one Task object, and `pipeline()` loads a checkpoint for one.
The trainer, the command line, the server and export are built from this registry."""

from __future__ import annotations

import os

from ..hub import Checkpoint
from ..loading import UntrainedHeadError, check_tokenizer, check_trained, load, missing_keys
from ..tokenizer import AlbertTokenizer
from . import embed as _embed
from . import feature_extraction as _features
from . import fill_mask as _fill_mask
from . import multiple_choice as _multiple_choice
from . import pretraining as _pretraining
from . import question_answering as _qa
from . import text_classification as _classification
from . import token_classification as _tokens
from .base import Limits, RequestError, Task
from .recipe import Dataset, Recipe

TASKS: list[Task] = [  # every door reads this list when it starts: register() appends to it
    _fill_mask.TASK,
    _classification.TASK,
    _tokens.TASK,
    _qa.TASK,
    _multiple_choice.TASK,
    _features.TASK,
    _embed.TASK,
    _pretraining.TASK,
]
# the pooler's weights, which a task that never runs it need not be warned are untrained
POOLER = frozenset({"pooler.weight", "pooler.bias", "albert.pooler.weight", "albert.pooler.bias"})
_BY_NAME: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Adds a task to the registry: its pipeline, command, route and training spelling (each door
    is built from the registry when it starts). A name another task holds is refused."""
    taken = [n for n in task.names() if _BY_NAME.get(n, task) is not task]
    if taken:
        raise ValueError(f"task name {taken[0]!r} is taken by {_BY_NAME[taken[0]].name!r}")
    for name in task.names():
        _BY_NAME[name] = task
    if task not in TASKS:
        TASKS.append(task)
    return task


for _task in TASKS:
    register(_task)

# the pipeline functions, `task(model, tokenizer, inputs, **options)`
fill_mask = _fill_mask.fill_mask
text_classification = _classification.text_classification
token_classification = _tokens.token_classification
question_answering = _qa.question_answering
multiple_choice = _multiple_choice.multiple_choice
feature_extraction = _features.feature_extraction
embed = _embed.embed
similarity = _embed.similarity


def get(name: str) -> Task:
    """The task of any of its names ("text-classification", "classify", "sentiment-analysis",
    "sequence_classification", ...)."""
    task = _BY_NAME.get(name)
    if task is None:
        raise ValueError(f"unknown task {name!r}; use one of {sorted(_BY_NAME)}")
    return task


def trainable() -> list[str]:
    """The training spellings (`mlx-albert train --task`)."""
    return [t.training for t in TASKS if t.training]


def option_docs() -> str:
    """README's option tables: one per task command, generated from the declarations."""
    from .options import table

    parts = []
    for task in TASKS:
        if task.command and task.options:
            where = f"`mlx-albert {task.command}`" + (f", `POST {task.route}`" if task.route else "")
            parts.append(f"{where}, `pipeline({task.name!r})`:\n\n{table(task.options)}")
    return "\n\n".join(parts)


class Pipeline:
    """A model, its tokenizer and default options for one task: `pipe(inputs, **options)`."""

    def __init__(
        self, task: Task, model, tokenizer: AlbertTokenizer, allow_untrained_head: bool = False, **defaults
    ):
        self.task, self.model, self.tokenizer, self.defaults = task, model, tokenizer, defaults
        self.allow_untrained_head = allow_untrained_head

    def __call__(self, inputs=None, **options):
        options = {**self.defaults, **options}
        if not self.allow_untrained_head and not self.task.needs_head and self.task.needs_pooler(options):
            if any(k.removeprefix("albert.").startswith("pooler.") for k in missing_keys(self.model)):
                raise UntrainedHeadError(
                    "this checkpoint has no trained pooler: pooling='pooler' would be random; "
                    "use 'mean' or 'cls' (or allow_untrained_head=True)"
                )
        return self.task.predict(self.model, self.tokenizer, inputs, **options)

    def __repr__(self) -> str:
        return f"Pipeline(task={self.task.name!r}, model={type(self.model).__name__})"


def pipeline(
    task: str,
    model: str | os.PathLike | Checkpoint | object,
    tokenizer: AlbertTokenizer | None = None,
    allow_untrained_head: bool = False,
    adapter_path: str | os.PathLike | None = None,
    **defaults,
) -> Pipeline:
    """Builds a pipeline for a task, by any of its names ("fill-mask", "text-classification" /
    "classify" / "sentiment-analysis", "token-classification" / "ner", "question-answering" / "qa",
    "multiple-choice", "feature-extraction", "embed").

    Args:
        model: a checkpoint folder, Hub repo id or shipped model's short name (loaded with the task's
            head), or a model object.
        tokenizer: default: the checkpoint's own (a model object needs one passed).
        allow_untrained_head: run even when the checkpoint lacks the task's head (e.g. question
            answering on a masked-LM checkpoint), whose new weights give random answers.
        adapter_path: a folder of LoRA adapters (written by `mlx-albert train --lora-rank R`) merged
            onto `model`, its base; the adapter's head answers.
        **defaults: options for every call, e.g. top_k=3, batch_size=32; `dtype`, `revision` and
            `cache_dir` go to loading instead.

    Raises:
        UntrainedHeadError: the checkpoint has no trained weights for the task's head.
        ValueError: an unknown task, or a tokenizer with more tokens than the model's vocabulary.
    """
    spec = get(task)
    load_options = {k: defaults.pop(k) for k in ("dtype", "revision", "cache_dir") if k in defaults}
    if isinstance(model, str | os.PathLike | Checkpoint):
        checkpoint = Checkpoint.open(
            model, load_options.pop("revision", None), load_options.pop("cache_dir", None)
        )
        if not spec.needs_head and not spec.needs_pooler(defaults):  # a pooler it never runs
            load_options["quiet"] = POOLER
        architecture = None if adapter_path is not None else spec.architecture  # the adapter's own
        model = load(checkpoint, architecture, adapter_path=adapter_path, **load_options)
        if adapter_path is not None and not spec.runs_on(model):  # an adapter carries its own head
            raise ValueError(
                f"the adapter {adapter_path} was trained for {type(model).__name__}, not for "
                f"{spec.name}: use it with its own task's command"
            )
        tokenizer = tokenizer or AlbertTokenizer.from_pretrained(checkpoint)
        if not allow_untrained_head:
            check_trained(model, spec.name, checkpoint.source, allow_pooler=not spec.needs_pooler(defaults))
        defaults = {**spec.prepare(checkpoint, model, tokenizer), **defaults}
    elif tokenizer is None:
        raise ValueError("pass tokenizer= along with a model object (or give a checkpoint path instead)")
    elif adapter_path is not None:
        raise ValueError("adapter_path= needs a checkpoint path, not a model object (load it with load())")
    check_tokenizer(model, tokenizer)
    return Pipeline(spec, model, tokenizer, allow_untrained_head, **defaults)


__all__ = [
    "TASKS",
    "Dataset",
    "Limits",
    "Pipeline",
    "Recipe",
    "RequestError",
    "Task",
    "UntrainedHeadError",
    "embed",
    "feature_extraction",
    "fill_mask",
    "get",
    "multiple_choice",
    "option_docs",
    "pipeline",
    "question_answering",
    "register",
    "similarity",
    "text_classification",
    "token_classification",
    "trainable",
]
