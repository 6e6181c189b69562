"""LoRA adapters where users run models: an adapter-only folder through every door (load, pipeline,
the task commands, embed, the server's loader), `fuse` writing the merged model in the base's dtype
or quantization, no false warnings, and adapter configs checked before anything is built."""

import json
import logging
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import HAS_TORCH
from test_training import separable, write_jsonl

import mlx_albert
from mlx_albert.cli import main
from mlx_albert.training import TrainingArgs
from mlx_albert.training.run import finetune

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
TEXTS = ["the cat sat on the mat", "a ship sails the sea"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter-only LoRA run of the tiny model on two labels, and its merged twin."""
    root = tmp_path_factory.mktemp("lora")
    train = write_jsonl(root / "train.jsonl", separable(64, 0))
    args = TrainingArgs(output_dir=str(root / "full"), progress=False, max_steps=3, batch_size=8,
                        learning_rate=5e-3, lora_rank=4)  # fmt: skip
    finetune(TINY, "sequence_classification", train, None, args)
    only = root / "only"
    only.mkdir()
    for name in ("adapters.safetensors", "adapter_config.json"):
        shutil.copy(root / "full" / name, only / name)
    return only, root / "full"


def _logits(model, texts=TEXTS):
    ids = mlx_albert.AlbertTokenizer.from_pretrained(TINY)(texts, padding=True, return_tensors="mlx")
    return np.array(model(**ids).logits)


def test_every_door_takes_adapter_path(adapter, capsys, caplog):
    """pipeline(path, adapter_path=) and `classify --adapter-path` answer as the merged model, with
    no "newly initialised" warning for the head the adapter holds; --model on the adapter folder
    itself says what to do."""
    only, merged = adapter
    want = mlx_albert.pipeline("classify", merged)(TEXTS)
    with caplog.at_level(logging.WARNING):
        pipe = mlx_albert.pipeline("classify", TINY, adapter_path=only)
    assert "newly initialised" not in caplog.text, caplog.text
    got = pipe(TEXTS)
    assert [r["label"] for r in got] == [r["label"] for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-6)
    code = main(["classify", "--model", str(TINY), "--adapter-path", str(only), "--json", *TEXTS])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["label"] for r in rows] == [r["label"] for r in want]
    code = main(["classify", "--model", str(only), "a text"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert (
        "holds LoRA adapters, not a model: load them onto their base model with --model BASE "
        f"--adapter-path {only}" in err
    )
    assert f"its base model: {TINY}" in err
    code = main(["embed", "--model", str(TINY), "--adapter-path", str(only), "--json", TEXTS[0]])
    vector = json.loads(capsys.readouterr().out)
    assert code == 0 and len(vector) == 64
    from mlx_albert.service.models import load_models, parse_adapters

    served = load_models({"tiny": str(TINY)}, adapters=parse_adapters([str(only)], {"tiny": str(TINY)}))
    np.testing.assert_allclose(_logits(served["tiny"].model), _logits(mlx_albert.load(merged)), atol=1e-6)
    with pytest.raises(ValueError, match="name the model it goes onto"):
        parse_adapters([str(only)], {"a": "x", "b": "y"})


def test_fuse_writes_the_merged_model_transformers_loads(adapter, tmp_path, capsys):
    only, merged = adapter
    out = tmp_path / "fused"
    assert main(["fuse", "--model", str(TINY), "--adapter-path", str(only), "--save-path", str(out)]) == 0
    np.testing.assert_allclose(_logits(mlx_albert.load(out)), _logits(mlx_albert.load(merged)), atol=1e-6)
    assert (out / "spiece.model").is_file() and json.loads((out / "config.json").read_text())[
        "torch_dtype"
    ] == "float32"
    code = main(["fuse", "--model", str(TINY), "--adapter-path", str(only), "--save-path", str(out)])
    assert code == 1 and "pass --force" in capsys.readouterr().err
    if HAS_TORCH:
        import torch
        from transformers import AlbertForSequenceClassification

        theirs = AlbertForSequenceClassification.from_pretrained(out).eval()
        ids = mlx_albert.AlbertTokenizer.from_pretrained(TINY)(TEXTS, padding=True, return_tensors="np")
        with torch.no_grad():
            ref = theirs(**{k: torch.tensor(v) for k, v in ids.items()}).logits.numpy()
        np.testing.assert_allclose(_logits(mlx_albert.load(out)), ref, atol=1e-4)  # f32 parity


def test_fuse_onto_a_quantized_base_quantizes_the_result_alike(adapter, tmp_path):
    """A 8-bit base: the adapters are merged into its dequantized weights and the result quantized
    as the base was; its logits are the float fuse's within 8-bit rounding of the weights."""
    only, merged = adapter
    from mlx_albert.convert import convert

    base = convert(str(TINY), str(tmp_path / "q8"), quantize=True, q_bits=8, q_group_size=32)
    out = tmp_path / "fused"
    assert main(["fuse", "--model", str(base), "--adapter-path", str(only), "--save-path", str(out)]) == 0
    fused = mlx_albert.load(out)
    assert fused.config.quantization == mlx_albert.load(base).config.quantization
    float_logits = _logits(mlx_albert.load(merged))
    assert np.abs(_logits(fused) - float_logits).max() < 0.05 * np.abs(float_logits).max() + 0.05


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lora_alpha", float("nan"), "lora_alpha must be a finite number"),
        ("lora_alpha", float("inf"), "lora_alpha must be a finite number"),
        ("lora_alpha", 1e308, "lora_alpha must be a finite number"),
        ("lora_rank", 10**12, "lora_rank must be an integer from 1 to 4096"),
        ("lora_rank", True, "lora_rank must be an integer from 1 to 4096"),
        ("lora_rank", 0, "lora_rank must be an integer from 1 to 4096"),
    ],
)
def test_absurd_adapter_configs_are_refused_before_loading(adapter, tmp_path, field, value, message):
    only, _ = adapter
    bad = tmp_path / "bad"
    shutil.copytree(only, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(
        json.dumps({**config, field: value})
    )  # NaN/Infinity as JSON does
    with pytest.raises(ValueError, match=message):
        mlx_albert.load(TINY, adapter_path=bad)


def test_a_huge_head_config_and_non_finite_merges_are_refused(adapter, tmp_path):
    only, _ = adapter
    bad = tmp_path / "bad"
    shutil.copytree(only, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    huge = {**config, "head_config": {**config["head_config"], "num_labels": 10**9, "id2label": {}}}
    (bad / "adapter_config.json").write_text(json.dumps(huge))
    with pytest.raises(ValueError, match=r"num_labels \(1000000000\) is past the limit"):
        mlx_albert.load(TINY, adapter_path=bad)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    weights = dict(mx.load(str(bad / "adapters.safetensors")))
    name = next(k for k in weights if k.endswith("lora_b")).removesuffix("lora_b")
    for part in ("lora_a", "lora_b"):  # each finite, their product past float32's 3.4e38
        weights[name + part] = mx.full(weights[name + part].shape, 1e30)
    mx.save_safetensors(str(bad / "adapters.safetensors"), weights)
    with pytest.raises(ValueError, match="merged into its base model gives NaN or infinity"):
        mlx_albert.load(TINY, adapter_path=bad)


def test_a_sentence_folder_with_mean_pooling_warns_of_no_pooler(tmp_path, caplog):
    """The pooler a mean-pooling folder never runs is not reported as untrained."""
    from sentence_folders import write

    folder = write(tmp_path / "st", ("mean",))
    with caplog.at_level(logging.WARNING):
        mlx_albert.SentenceEncoder.from_pretrained(folder)
        mlx_albert.pipeline("embed", folder)
    assert "newly initialised" not in caplog.text, caplog.text
