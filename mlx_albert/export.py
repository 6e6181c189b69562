"""A model's forward as an `.mlxfn` file (`mx.export_function`, weights included) that Swift, C++
and Python load with MLX's `import_function`, plus its tokenizer files beside it."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from . import __version__
from .files import atomic_write, check_disjoint
from .hub import resolve
from .kernels import plain_ops
from .loading import check_trained, load
from .pipelines import ALIASES, TASKS

# task -> the output fields the exported function returns, in order
OUTPUTS = {
    "fill-mask": ("logits",),
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "multiple-choice": ("logits",),
    "feature-extraction": ("last_hidden_state",),
    "embed": ("last_hidden_state",),
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(
    model: str,
    task: str,
    output: str,
    seq: int | None = None,
    batch: int = 1,
    choices: int = 2,
    shapeless: bool = False,
    force: bool = False,
    allow_untrained_head: bool = False,
    dtype: str | None = None,
) -> Path:
    """Writes `output` (.mlxfn): f(input_ids, attention_mask, token_type_ids) -> the task's outputs,
    int32 inputs of shape (batch, seq), or (batch, choices, seq) for multiple choice (seq defaults to
    the model's max_positions). The weights keep the checkpoint's dtype unless `dtype` names one.
    The task's name, the shapes and the config are stored as the file's metadata. Returns the path.

    Raises:
        ValueError: a shape the model cannot serve, --shapeless, an untrained head, an output that
            exists (without force) or overlaps the checkpoint.
    """
    task = ALIASES.get(task, task)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASKS)}")
    if shapeless:
        raise ValueError(
            "--shapeless is not supported: the forward reshapes by the traced batch and sequence sizes, "
            "so one file serves one shape; export one file per --batch/--seq you need"
        )
    out = Path(output)
    if out.suffix != ".mlxfn":
        raise ValueError(f"--output {output}: the file must end in .mlxfn")
    folder = resolve(model)
    check_disjoint({"--output": out}, {"--model": folder})
    if out.exists() and not force:
        raise FileExistsError(f"--output {output} exists; pass --force to replace it")
    net, tokenizer = load(folder, TASKS[task][1], return_tokenizer=True, dtype=dtype or "auto")
    if not allow_untrained_head:
        check_trained(net, task, str(model), allow_pooler=task in ("feature-extraction", "embed"))
    limit = net.config.max_positions
    seq = limit if seq is None else seq
    for name, value, top in (
        ("--seq", seq, limit),
        ("--batch", batch, 1 << 16),
        ("--choices", choices, 1 << 10),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"{name} must be an integer in [1, {top}], got {value!r}")
    shape = (batch, choices, seq) if task == "multiple-choice" else (batch, seq)
    fields = OUTPUTS[task]

    def forward(input_ids, attention_mask, token_type_ids):
        # a host sync cannot be traced: the ids are not range-checked (callers use the tokenizer)
        result = net(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, check_inputs=False
        )
        if task in ("feature-extraction", "embed"):
            return result.last_hidden_state
        return tuple(getattr(result, f) for f in fields)

    example = [mx.zeros(shape, mx.int32), mx.ones(shape, mx.int32), mx.zeros(shape, mx.int32)]
    metadata = {
        "task": task,
        "architecture": type(net).__name__,
        "inputs": {k: list(shape) for k in INPUTS},
        "outputs": list(fields),
        "dtype": "int32",
        "weights_dtype": str(net.dtype).removeprefix("mlx.core."),
        "config": net.config.to_hf(),
        "mlx_albert": __version__,
        "mlx": mx.__version__,
    }
    tokenizer_dir = out.with_suffix(".tokenizer")
    if tokenizer_dir.exists() and not force:
        raise FileExistsError(f"{tokenizer_dir} exists; pass --force to replace it")
    with plain_ops():
        atomic_write(
            out, lambda tmp: mx.export_function(str(tmp), forward, *example, metadata=json.dumps(metadata))
        )
    tokenizer_dir.mkdir(exist_ok=True)
    tokenizer.save_pretrained(tokenizer_dir)
    return out
