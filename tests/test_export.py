"""`mlx-albert export`: an .mlxfn file that mx.import_function runs with the model's own outputs."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from test_pipelines import _head_checkpoint
from tolerances import PARITY

import mlx_albert
from mlx_albert.cli import main

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"


@pytest.mark.parametrize(
    "task, architecture, shape",
    [
        ("fill-mask", None, (2, 16)),
        ("question-answering", "for_question_answering", (1, 24)),
        ("multiple-choice", "for_multiple_choice", (1, 3, 8)),
        ("embed", None, (1, 8)),
    ],
)
def test_imported_function_equals_the_model(task, architecture, shape, tmp_path, capsys):
    folder = TINY if architecture is None else _head_checkpoint(tmp_path / "m", architecture)
    out = tmp_path / "exported" / "model.mlxfn"
    out.parent.mkdir()
    seq = ["--seq", str(shape[-1]), "--batch", str(shape[0])] + (
        ["--choices", str(shape[1])] if len(shape) == 3 else []
    )
    assert main(["export", "--model", str(folder), "--task", task, "--output", str(out), *seq]) == 0
    forward, metadata = mx.import_function(str(out), return_metadata=True)
    metadata = json.loads(metadata)
    assert metadata["task"] == task and metadata["inputs"]["input_ids"] == list(shape)
    rng = np.random.default_rng(0)
    ids = mx.array(rng.integers(5, 100, shape).astype(np.int32))
    mask = mx.array((np.arange(shape[-1]) < shape[-1] - 2).astype(np.int32) * np.ones(shape, np.int32))
    types = mx.zeros(shape, mx.int32)
    got = forward(ids, mask, types)
    name = {"fill-mask": None, "embed": "base"}.get(task, architecture)
    model = mlx_albert.load(folder, name)
    want = model(ids, attention_mask=mask, token_type_ids=types)
    if task == "embed":  # the checkpoint's own sentence vectors (its SentenceEncoder's head)
        encoder = mlx_albert.SentenceEncoder.from_pretrained(folder, model=model)
        want.sentence_embedding = encoder.head(want.last_hidden_state, mask)
    fields = metadata["outputs"]
    for array, field in zip(got, fields, strict=True):
        # the exported graph is another implementation of the forward (plain ops: MLX's exact-rounded
        # softmax and activations instead of the fused kernels), held to float32 parity
        assert np.abs(np.array(array) - np.array(getattr(want, field))).max() <= PARITY, field
    assert (out.with_suffix(".tokenizer") / "tokenizer.json").exists()
    assert mlx_albert.AlbertTokenizer.from_pretrained(out.with_suffix(".tokenizer"))("a b")["input_ids"]


def test_shapes_it_cannot_serve_are_one_line(tmp_path, capsys):
    out = tmp_path / "m.mlxfn"
    for extra, message in (
        (["--seq", "500"], "--seq must be an integer in [1, 128]"),
        (["--shapeless"], "--shapeless is not supported"),
        (["--batch", "0"], "--batch must be an integer"),
    ):
        code = main(["export", "--model", str(TINY), "--task", "fill-mask", "--output", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, extra
    code = main(["export", "--model", str(TINY), "--task", "question-answering", "--output", str(out)])
    assert code == 1 and "no trained qa_outputs" in capsys.readouterr().err
    out.write_text("mine")
    code = main(["export", "--model", str(TINY), "--task", "fill-mask", "--output", str(out), "--seq", "8"])
    assert code == 1 and "pass --force" in capsys.readouterr().err and out.read_text() == "mine"


def test_defaults_follow_the_model_and_the_cli_names_its_tasks(tmp_path, capsys):
    """--seq defaults to the model's max_positions (a fixed 128 was refused by the 64-token
    shipped model); the CLI's command names are export's task names; --dtype sets the weights'."""
    out = tmp_path / "pydoc.mlxfn"
    assert main(["export", "--model", "pydoc-small", "--task", "fill-mask", "--output", str(out)]) == 0
    _, metadata = mx.import_function(str(out), return_metadata=True)
    metadata = json.loads(metadata)
    assert metadata["inputs"]["input_ids"] == [1, 64] and metadata["weights_dtype"] == "float16"  # as stored
    cls = _head_checkpoint(tmp_path / "cls", "for_sequence_classification")
    for task, dtype in (("classify", "float32"), ("embed", "float16")):
        out = tmp_path / f"{task}.mlxfn"
        assert (
            main(["export", "--model", str(cls), "--task", task, "--output", str(out), "--dtype", dtype]) == 0
        )
        metadata = json.loads(mx.import_function(str(out), return_metadata=True)[1])
        assert metadata["weights_dtype"] == dtype and metadata["inputs"]["input_ids"] == [1, 128]
    assert metadata["task"] == "embed"
    classify = json.loads(mx.import_function(str(tmp_path / "classify.mlxfn"), return_metadata=True)[1])
    assert classify["task"] == "text-classification"


def test_metadata_reads_back_as_a_dict(tmp_path, capsys):
    from mlx_albert.export import load_exported

    out = tmp_path / "fm.mlxfn"
    assert (
        main(
            ["export", "--model", str(TINY_MODEL), "--task", "fill-mask", "--output", str(out), "--seq", "16"]
        )
        == 0
    )
    function, metadata = load_exported(out)
    assert metadata["task"] == "fill-mask" and metadata["inputs"]["input_ids"] == [1, 16]
    assert callable(function)
    mx.export_function(str(tmp_path / "other.mlxfn"), lambda x: x + 1, mx.array([1]), metadata="not json")
    with pytest.raises(ValueError, match="was not written by mlx_albert's export"):
        load_exported(tmp_path / "other.mlxfn")


TINY_MODEL = Path(__file__).parent.parent / "models" / "tiny-albert"
