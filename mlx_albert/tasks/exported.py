"""How a task's forward is exported (`mlx-albert export`, mlx_albert/export.py): an optional object
on the task, naming the function's outputs and the rank of its inputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Export:
    """The exported function: `outputs` (the model output's fields, in order) for inputs of
    `inputs_rank` (2: (batch, seq); 3: (batch, choices, seq))."""

    outputs: tuple[str, ...] = ("logits",)
    inputs_rank: int = 2

    def run(self, model, prepared: dict, inputs: dict) -> tuple:
        """The outputs for the traced inputs (input_ids, attention_mask, token_type_ids; not
        range-checked: a host sync cannot be traced; `exportable`: the plain ops export can
        serialise). `prepared`: what the task's prepare() gave."""
        result = model(**inputs, check_inputs=False, exportable=True)
        return tuple(getattr(result, f) for f in self.outputs)
