"""A model's forward as an `.mlxfn` file (`mx.export_function`, weights included) that Swift, C++
and Python load with MLX's `import_function`, plus its tokenizer files beside it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx

from . import __version__
from .checks import integer_in
from .files import atomic_write, check_disjoint
from .hub import Checkpoint
from .loading import check_trained, load
from .tasks import get

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
    spec = get(task)  # any of its names: classify, text-classification, ...
    if shapeless:
        raise ValueError(
            "--shapeless is not supported: the forward reshapes by the traced batch and sequence sizes, "
            "so one file serves one shape; export one file per --batch/--seq you need"
        )
    out = Path(output)
    if out.suffix != ".mlxfn":
        raise ValueError(f"--output {output}: the file must end in .mlxfn")
    checkpoint = Checkpoint.open(model)
    check_disjoint({"--output": out}, {"--model": checkpoint.root})
    if out.exists() and not force:
        raise FileExistsError(f"--output {output} exists; pass --force to replace it")
    net, tokenizer = load(checkpoint, spec.architecture, return_tokenizer=True, dtype=dtype or "auto")
    if not allow_untrained_head:
        check_trained(net, spec.name, checkpoint.source, allow_pooler=not spec.needs_pooler({}))
    prepared = spec.prepare(checkpoint, net, tokenizer)
    seq = net.config.max_positions if seq is None else seq
    _check_sizes(seq, batch, choices, net.config.max_positions)
    shape = (batch, choices, seq) if spec.export.inputs_rank == 3 else (batch, seq)

    def forward(*arrays):
        return spec.export.run(net, prepared, dict(zip(INPUTS, arrays, strict=True)))

    example = [mx.zeros(shape, mx.int32), mx.ones(shape, mx.int32), mx.zeros(shape, mx.int32)]
    metadata = _metadata(spec, net, shape)
    tokenizer_dir = out.with_suffix(".tokenizer")
    if tokenizer_dir.exists() and not force:
        raise FileExistsError(f"{tokenizer_dir} exists; pass --force to replace it")
    atomic_write(
        out, lambda tmp: mx.export_function(str(tmp), forward, *example, metadata=json.dumps(metadata))
    )
    tokenizer_dir.mkdir(exist_ok=True)
    tokenizer.save_pretrained(tokenizer_dir)
    return out


def _check_sizes(seq, batch, choices, limit: int) -> None:
    for name, value, top in (
        ("--seq", seq, limit),
        ("--batch", batch, 1 << 16),
        ("--choices", choices, 1 << 10),
    ):
        if not integer_in(value, 1, top):
            raise ValueError(f"{name} must be an integer in [1, {top}], got {value!r}")


def load_exported(path: str | Path) -> tuple[Callable, dict]:
    """(function, metadata) of an .mlxfn file written by export(): the metadata read back as the
    dict it was written from (task, architecture, inputs, outputs, dtypes, config, versions)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass an .mlxfn file written by `mlx-albert export`")
    function, text = mx.import_function(str(path), return_metadata=True)
    try:
        metadata = json.loads(text) if text else None
    except (json.JSONDecodeError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict) or "task" not in metadata:
        raise ValueError(f"{path} was not written by mlx_albert's export: its metadata is not ours")
    return function, metadata


def _metadata(spec, net, shape: tuple[int, ...]) -> dict:
    """What the file says about itself: task, shapes, outputs, dtypes, config and versions."""
    return {
        "task": spec.name,
        "architecture": type(net).__name__,
        "inputs": {k: list(shape) for k in INPUTS},
        "outputs": list(spec.export.outputs),
        "dtype": "int32",
        "weights_dtype": str(net.dtype).removeprefix("mlx.core."),
        "config": net.config.to_hf(),
        "mlx_albert": __version__,
        "mlx": mx.__version__,
    }
