"""AlbertConfig: spec defaults, HF translation both ways, validation, every field used."""

import dataclasses
import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import needs_torch
from tolerances import forward_tol

from mlx_albert import AlbertConfig, AlbertForSequenceClassification, AlbertModel
from mlx_albert.config import HF_NAMES

SPEC_DEFAULTS = dict(
    vocab_size=30000,
    max_positions=512,
    max_token_types=2,
    embedding_size=128,
    hidden_size=768,
    num_blocks=12,
    num_groups=1,
    block_depth=1,
    num_attention_heads=12,
    intermediate_size=16384,
    activation="gelu",
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    classifier_dropout_rate=None,
    layer_norm_epsilon=1e-12,
    initializer_scale=0.02,
    output_hidden_states=False,
    output_attentions=False,
    num_labels=2,
    id_to_label={},
)


def test_spec_defaults():
    config = AlbertConfig()
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert config.classifier_dropout == config.dropout_rate


def test_hf_round_trip():
    hf = {
        "model_type": "albert",
        "vocab_size": 99,
        "embedding_size": 16,
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_hidden_groups": 2,
        "inner_group_num": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.05,
        "classifier_dropout_prob": 0.2,
        "max_position_embeddings": 64,
        "type_vocab_size": 3,
        "layer_norm_eps": 1e-5,
        "initializer_range": 0.01,
        "id2label": {"0": "neg", "1": "neu", "2": "pos"},
        "label2id": {"neg": 0, "neu": 1, "pos": 2},
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "architectures": ["AlbertForSequenceClassification"],
    }
    config = AlbertConfig.from_hf(hf)
    assert (config.num_blocks, config.num_groups, config.block_depth) == (4, 2, 2)
    assert (config.max_positions, config.max_token_types, config.activation) == (64, 3, "gelu_new")
    assert (config.dropout_rate, config.attention_dropout_rate, config.classifier_dropout) == (0.1, 0.05, 0.2)
    assert config.num_labels == 3 and config.id_to_label == {0: "neg", 1: "neu", 2: "pos"}
    assert config.extra == {"bos_token_id": 2, "eos_token_id": 3}  # unknown keys kept, not dropped
    back = config.to_hf()
    for key, value in hf.items():
        assert back[key] == value, key
    assert AlbertConfig.from_hf(back) == config


def test_generic_labels_are_not_names():
    config = AlbertConfig.from_hf({"id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}})
    assert config.num_labels == 3 and config.id_to_label == {}


@needs_torch
def test_to_hf_loads_in_transformers(tmp_path):
    import transformers

    config = AlbertConfig(
        vocab_size=99,
        hidden_size=32,
        num_attention_heads=4,
        num_blocks=4,
        num_groups=2,
        block_depth=2,
        num_labels=3,
        id_to_label={0: "a", 1: "b", 2: "c"},
    )
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf()))
    hf = transformers.AlbertConfig.from_pretrained(tmp_path)
    assert (hf.num_hidden_layers, hf.num_hidden_groups, hf.inner_group_num, hf.num_labels) == (4, 2, 2, 3)
    assert hf.id2label == {0: "a", 1: "b", 2: "c"} and hf.hidden_act == "gelu"


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
        (dict(num_blocks=5, num_groups=2), "num_blocks"),
        (dict(activation="gelu_magic"), "activation"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(dropout_rate=1.5), "dropout_rate"),
        (dict(layer_norm_epsilon=0.0), "layer_norm_epsilon"),
        (dict(num_labels=2, id_to_label={0: "a", 5: "b"}), "id_to_label"),
        (dict(problem_type="ranking"), "problem_type"),
        (dict(pad_token_id=30000), "pad_token_id"),
    ],
)
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        AlbertConfig(**changes)


def test_wrong_model_type():
    with pytest.raises(ValueError, match="bert"):
        AlbertConfig.from_hf({"model_type": "bert"})


def _small(**changes):
    base = dict(
        vocab_size=40,
        embedding_size=8,
        hidden_size=16,
        num_blocks=2,
        num_attention_heads=2,
        intermediate_size=12,
        max_positions=12,
        # weights large enough that attention is far from uniform: every option's effect on the
        # output then stands thousands of times above rounding (at 0.02, two heads or four give
        # outputs within 4e-5)
        initializer_scale=0.2,
    )
    return AlbertConfig(**{**base, **changes})


def test_every_option_is_used():
    """Each option changes the parameters, the output or behaviour (mlx-examples' bert forgot eps)."""
    ids = np.array([[2, 7, 9, 11, 3, 0]])
    mask = np.array([[1, 1, 1, 1, 1, 0]])

    def run(config, seed=0, cls=AlbertModel, **kw):
        mx.random.seed(seed)
        model = cls(config)
        model.eval()
        return model(ids, attention_mask=mask, **kw)

    ref = run(_small())
    # "changes the output": by more than rounding could (a reordering of the same sums; the widest
    # option below has 13 terms, 4 blocks x 2 layers)
    ROUNDING = forward_tol(
        _small(num_blocks=4, block_depth=2), 13, np.abs(np.array(ref.last_hidden_state)).max()
    )
    shapes = {f.name: None for f in dataclasses.fields(AlbertConfig)}
    structural = dict(
        vocab_size=41,
        max_positions=13,
        max_token_types=3,
        embedding_size=9,
        hidden_size=20,
        num_blocks=4,
        num_groups=2,
        block_depth=2,
        num_attention_heads=4,
        intermediate_size=13,
    )
    for name, value in structural.items():
        out = run(_small(**{name: value}))
        differs = out.last_hidden_state.shape != ref.last_hidden_state.shape or not np.allclose(
            np.array(out.last_hidden_state), np.array(ref.last_hidden_state), rtol=0, atol=ROUNDING
        )
        assert differs, name
        shapes.pop(name)
    for name, value in dict(activation="relu", layer_norm_epsilon=1.0, initializer_scale=0.5).items():
        assert not np.allclose(
            np.array(run(_small(**{name: value})).last_hidden_state),
            np.array(ref.last_hidden_state),
            rtol=0,
            atol=ROUNDING,
        ), name
        shapes.pop(name)
    assert len(run(_small(output_hidden_states=True)).hidden_states) == 3
    assert len(run(_small(output_attentions=True)).attentions) == 2
    # Dropout rates: active in training mode only.
    for name in ("dropout_rate", "attention_dropout_rate", "classifier_dropout_rate"):
        mx.random.seed(0)
        model = AlbertForSequenceClassification(_small(**{name: 0.5}))
        model.train()
        a, b = model(ids).logits, model(ids).logits
        assert not np.allclose(np.array(a), np.array(b), rtol=0, atol=ROUNDING), name
        model.eval()  # no dropout: the same arithmetic twice, bit for bit
        assert np.array_equal(np.array(model(ids).logits), np.array(model(ids).logits))
    assert run(_small(num_labels=5), cls=AlbertForSequenceClassification).logits.shape == (1, 5)
    for name in (
        "output_hidden_states",
        "output_attentions",
        "num_labels",
        "dropout_rate",
        "attention_dropout_rate",
        "classifier_dropout_rate",
    ):
        shapes.pop(name)
    # Metadata options, checked by the config and HF tests above.
    for name in (
        "id_to_label",
        "label_to_id",
        "pad_token_id",
        "problem_type",
        "architectures",
        "quantization",
        "extra",
    ):
        shapes.pop(name)
    assert not shapes, f"options without a test: {list(shapes)}"


def test_every_hf_name_is_a_field():
    names = {f.name for f in dataclasses.fields(AlbertConfig)}
    assert all(ours in names for ours, _ in HF_NAMES)
    assert len({hf for _, hf in HF_NAMES}) == len(HF_NAMES)


def test_optimised_blas_was_preloaded_for_this_session():
    """conftest imports mlx_albert before mlx.core, so the suite runs on the fast BLAS when one is
    installed (CI installs OpenBLAS or MKL); where none is, there is nothing to check."""
    import glob
    import os
    import sys

    import mlx_albert._blas as blas

    candidates = [p for pattern in blas._CANDIDATES for p in glob.glob(pattern)]
    if candidates and sys.platform.startswith("linux") and os.environ.get("MLX_ALBERT_BLAS") is None:
        assert blas.loaded in candidates


def test_sizes_are_checked_before_anything_is_allocated(tmp_path, capsys):
    """num_labels 10^9 (which segfaulted building the classifier) is refused in one line, from a
    config.json and through the CLI; sizes whose float32 weights pass the machine's memory are
    refused naming the option that makes most of them."""
    from mlx_albert.cli import main
    from mlx_albert.config import MAX_LABELS, _physical_memory

    with pytest.raises(ValueError, match=r"num_labels \(1000000000\) is past the limit of 1048576"):
        AlbertConfig.from_hf({"num_labels": 10**9})
    assert AlbertConfig(num_labels=MAX_LABELS, hidden_size=64, num_attention_heads=4).num_labels == MAX_LABELS
    memory = _physical_memory()
    if memory is not None:  # a classifier of 2^20 labels x 2^20 wide: 4 TiB of float32
        with pytest.raises(
            ValueError, match=r"more than this machine's .* most of it from num_labels=1048576"
        ):
            AlbertConfig(num_labels=MAX_LABELS, hidden_size=2**16, num_attention_heads=16)
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "albert", "num_labels": 10**9}))
    code = main(["classify", "--model", str(folder), "some text"])
    err = capsys.readouterr().err
    assert (
        code == 1
        and "num_labels (1000000000) is past the limit" in err
        and len(err.strip().splitlines()) == 1
    )


def test_parameter_count_is_the_models_own():
    """The estimate that the memory check uses counts what the model builds: within the few
    LayerNorm and bias vectors it rounds (under 1%) of the pre-training model's parameters."""
    from mlx.utils import tree_flatten

    from mlx_albert import AlbertForPreTraining

    config = AlbertConfig(vocab_size=500, embedding_size=24, hidden_size=64, num_attention_heads=4,
                          intermediate_size=96, num_blocks=4, num_groups=2, max_positions=64)  # fmt: skip
    real = sum(v.size for _, v in tree_flatten(AlbertForPreTraining(config).parameters()))
    assert abs(config.parameter_count() - real) <= 0.01 * real, (config.parameter_count(), real)
