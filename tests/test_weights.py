"""The weight-name table, checkpoint formats and every way a checkpoint can be wrong."""

import builtins
import json
import logging
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import case_folder, get_case, needs_torch, write_hf_folder
from mlx.utils import tree_flatten
from oracle import ARCHITECTURES as HF_ARCHITECTURES
from safetensors.numpy import save_file
from tolerances import PARITY

import mlx_albert
from mlx_albert import ARCHITECTURES, AlbertConfig
from mlx_albert.files import atomic_write
from mlx_albert.weights import hf_to_mlx, mlx_to_hf


@pytest.mark.parametrize("arch", HF_ARCHITECTURES)
def test_every_checkpoint_key_maps_once_and_round_trips(arch, tmp_path):
    case = get_case("grouped_deep", arch, "golden")
    hf = {k: mx.array(v) for k, v in case["weights"].items() if not k.startswith("regression.")}
    ours, unknown = hf_to_mlx(hf)
    assert unknown == []
    tied = {k for k in hf if k.startswith("predictions.decoder.")}
    assert len(ours) == len(hf) - len(tied)  # nothing merged, nothing lost but the tied copies
    assert set(mlx_to_hf(ours)) == set(hf) - tied
    model = mlx_albert.load(case_folder(case, tmp_path))
    assert set(dict(tree_flatten(model.parameters()))) == set(ours)


@pytest.mark.parametrize("cls", ARCHITECTURES.values())
def test_every_parameter_has_a_transformers_name(cls):
    model = cls(
        AlbertConfig(
            vocab_size=40,
            embedding_size=8,
            hidden_size=16,
            num_blocks=4,
            num_groups=2,
            block_depth=2,
            num_attention_heads=2,
            intermediate_size=12,
        )
    )
    names = dict(tree_flatten(model.parameters()))
    assert hf_to_mlx(mlx_to_hf(names))[0].keys() == names.keys()


@pytest.fixture
def folder(tmp_path):
    return case_folder(get_case("factorised", "AlbertForSequenceClassification", "golden"), tmp_path / "m")


def test_truncated_safetensors(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        mlx_albert.load(folder)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="truncated"):
        mlx_albert.load(folder)


def test_corrupt_safetensors(folder):
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json!!!!"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        mlx_albert.load(folder)


def test_missing_config(folder):
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        mlx_albert.load(folder)


def test_invalid_config_json(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        mlx_albert.load(folder)


def test_missing_weights(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mlx_albert.load(folder)


def test_folder_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mlx_albert.load(tmp_path / "nowhere")


def test_config_weight_shape_mismatch(folder):
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"intermediate_size=99 but encoder\.groups\.0\.layers\.0\.ffn\.weight has 24 rows"
    ):
        mlx_albert.load(folder)


def test_num_labels_override_mismatch_names_the_fix(folder):
    with pytest.raises(ValueError, match="num_labels"):
        mlx_albert.AlbertForSequenceClassification.from_pretrained(folder, num_labels=5)


def test_unexpected_and_missing_backbone_weights(folder, tmp_path):
    case = get_case("factorised", "AlbertForSequenceClassification", "golden")
    weights = {k: v for k, v in case["weights"].items() if not k.startswith("regression.")}
    extra = dict(
        weights,
        **{"albert.encoder.albert_layer_groups.1.albert_layers.0.ffn.weight": np.zeros((24, 16), np.float32)},
    )
    write_hf_folder(tmp_path / "extra", case["hf_config"], extra)
    with pytest.raises(ValueError, match=r"num_hidden_groups=1 but the weights hold 2 group"):
        mlx_albert.load(tmp_path / "extra")
    extra = dict(weights, **{"albert.encoder.embedding_hidden_mapping_in.scales": np.zeros((2,), np.float32)})
    write_hf_folder(tmp_path / "extra", case["hf_config"], extra)
    with pytest.raises(ValueError, match=r"not in the model: \['albert\.encoder\.embedding_projection"):
        mlx_albert.load(tmp_path / "extra")
    missing = {k: v for k, v in weights.items() if "attention.query" not in k}
    write_hf_folder(tmp_path / "missing", case["hf_config"], missing)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: .*attention\.query\.bias"):
        mlx_albert.load(tmp_path / "missing")
    foreign = dict(weights, **{"bert.pooler.dense.weight": np.zeros((2, 2), np.float32)})
    write_hf_folder(tmp_path / "foreign", case["hf_config"], foreign)
    with pytest.raises(ValueError, match="not ALBERT's"):
        mlx_albert.load(tmp_path / "foreign")


def test_base_checkpoint_into_head_initialises_the_head(tmp_path, caplog):
    case = get_case("factorised", "AlbertModel", "golden")
    folder = case_folder(case, tmp_path)
    base = mlx_albert.load(folder)
    with caplog.at_level(logging.WARNING):
        head = mlx_albert.load(folder, "for_sequence_classification")
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    assert np.array_equal(
        np.array(head.albert.encoder.embedding_projection.weight),
        np.array(base.encoder.embedding_projection.weight),
    )
    std = float(np.array(head.classifier.weight).std())
    assert 0.01 < std < 0.03  # N(0, initializer_scale=0.02)
    # And a head checkpoint loads into the bare model, dropping the head: using part of a checkpoint
    # is expected (as the MLM head of a pre-training one), so that is said at INFO, not warned.
    head.save_pretrained(tmp_path / "head")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = mlx_albert.load(tmp_path / "head", "base")
    assert [r.levelno for r in caplog.records if "not used" in r.getMessage()] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the same backbone weights, saved and read back: the same arithmetic, bit for bit
    assert np.array_equal(
        np.array(again(case["inputs"]["input_ids"]).last_hidden_state),
        np.array(base(case["inputs"]["input_ids"]).last_hidden_state),
    )


def test_sharded_safetensors(tmp_path):
    case = get_case("grouped_deep", "AlbertForMaskedLM", "golden")
    weights = case["weights"]
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(case["hf_config"]))
    for file, keys in shards.items():
        save_file({k: np.ascontiguousarray(weights[k]) for k in keys}, str(tmp_path / file))
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = mlx_albert.load(tmp_path)
    out = model(**{k: case["inputs"][k] for k in ("input_ids", "attention_mask")})
    single = mlx_albert.load(case_folder(case, tmp_path / "single"))
    assert np.array_equal(
        np.array(out.logits),
        np.array(single(**{k: case["inputs"][k] for k in ("input_ids", "attention_mask")}).logits),
    )
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="00002"):
        mlx_albert.load(tmp_path)


@needs_torch
def test_pytorch_bin(tmp_path):
    import torch

    case = get_case("factorised", "AlbertForTokenClassification", "golden")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(case["hf_config"]))
    torch.save({k: torch.tensor(v) for k, v in case["weights"].items()}, tmp_path / "pytorch_model.bin")
    model = mlx_albert.load(tmp_path)
    out = model(
        **{k: case["inputs"][k] for k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
    )
    assert np.abs(np.array(out.logits) - case["outputs"]["logits"]).max() < PARITY


def test_pytorch_bin_without_torch(tmp_path, monkeypatch):
    case = get_case("factorised", "AlbertModel", "golden")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(case["hf_config"]))
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK")
    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (
            (_ for _ in ()).throw(ImportError()) if name == "torch" else real_import(name, *a, **k)
        ),
    )
    with pytest.raises(ImportError, match="needs torch"):
        mlx_albert.load(tmp_path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind


def test_num_labels_override_on_a_base_checkpoint(tmp_path):
    case = get_case("grouped_deep", "AlbertModel", "golden")  # config has 3 named labels
    folder = case_folder(case, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "a", "1": "b", "2": "c"}, {"a": 0, "b": 1, "c": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    model = mlx_albert.AlbertForSequenceClassification.from_pretrained(folder, num_labels=5)
    assert model.config.num_labels == 5 and model.config.id_to_label == {}
    assert model(case["inputs"]["input_ids"]).logits.shape == (3, 5)


# -- hostile and stale files -------------------------------------------------------------------


def _config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_hidden_groups": 20000, "num_hidden_layers": 20000}, "20000 layers is past the limit"),
        (
            {"num_hidden_groups": 4, "num_hidden_layers": 4},
            "num_hidden_groups=4 but the weights hold 1 group",
        ),
        ({"inner_group_num": 100000}, "layers is past the limit|inner_group_num=100000"),
        ({"num_hidden_layers": 10**9}, "past the limit of 1024"),
        ({"vocab_size": 10**12}, "vocab_size must be a positive integer up to"),
        # over this machine's memory (else, on a larger one, against the weights)
        (
            {"vocab_size": 2**31 - 1},
            "most of it from vocab_size=2147483647|vocab_size=2147483647 but embeddings",
        ),
        ({"vocab_size": 10**6}, "vocab_size=1000000 but embeddings.word_embeddings.weight has"),
        ({"hidden_act": ["gelu"]}, "wrong type|activation"),
    ],
)
def test_config_sizes_are_checked_before_anything_is_built(folder, changes, message, monkeypatch):
    """Refused before any model is constructed (a bound on the work, not on seconds: one such
    config once allocated for 36 s before failing)."""
    built = []
    monkeypatch.setattr(mlx_albert.AlbertModel, "__init__", lambda self, *a, **k: built.append(1))
    _config(folder, **changes)
    with pytest.raises(ValueError, match=message):
        mlx_albert.load(folder)
    assert not built


def test_config_json_that_is_not_an_object(folder):
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: config.json must hold a JSON object, got a list"):
        mlx_albert.load(folder)
    (folder / "config.json").write_text('{"id2label": [1]}')
    with pytest.raises(ValueError, match="id2label and label2id must be objects"):
        mlx_albert.load(folder)


def test_misspelt_config_key_warns_with_the_nearest_name(folder, caplog):
    _config(folder, num_hiden_layers=4, bos_token_id=2)
    with caplog.at_level(logging.WARNING, logger="mlx_albert"):
        mlx_albert.load(folder)
    warnings = [r.getMessage() for r in caplog.records if "unknown key" in r.getMessage()]
    assert warnings == [
        "config.json: unknown key 'num_hiden_layers' is ignored (did you mean 'num_hidden_layers'?)"
    ]


@pytest.mark.parametrize(
    "header",
    [b"[1, 2]", b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}', b'{"a": 5}'],
)
def test_malformed_safetensors_headers(folder, header):
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        mlx_albert.load(folder)


@needs_torch
@pytest.mark.parametrize("content", [[1, 2], None, {"a": {"b": 1}}, {1: 2}])
def test_pytorch_bin_that_is_not_a_state_dict(folder, content):
    import torch

    (folder / "model.safetensors").unlink()
    torch.save(content, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="not a state dict of named tensors"):
        mlx_albert.load(folder)


def _shard(folder, weights: dict, index_entries: dict | None = None):
    save_file(
        {k: np.ascontiguousarray(v) for k, v in weights.items()},
        str(folder / "model-00001-of-00001.safetensors"),
    )
    weight_map = index_entries or {k: "model-00001-of-00001.safetensors" for k in weights}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_shard_index_entries_stay_inside_the_folder(folder):
    case = get_case("factorised", "AlbertForSequenceClassification", "golden")
    (folder / "model.safetensors").rename(folder.parent / "outside.safetensors")
    for bad in ("../outside.safetensors", str(folder.parent / "outside.safetensors"), "sub/../x"):
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {k: bad for k in case["weights"]}})
        )
        with pytest.raises(ValueError, match="not a file in the checkpoint folder"):
            mlx_albert.load(folder)


def test_a_save_replaces_a_sharded_checkpoint_and_loading_refuses_both(folder):
    case = get_case("factorised", "AlbertForSequenceClassification", "golden")
    old = mlx_albert.load(folder)
    (folder / "model.safetensors").unlink()
    _shard(folder, {k: v for k, v in case["weights"].items() if not k.startswith("regression.")})
    (folder / "tokenizer_config.json").write_text("{}")  # the user's other files stay
    new = mlx_albert.AlbertForSequenceClassification(old.config)  # other (random) weights
    new.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
    ]
    again = mlx_albert.load(folder)
    np.testing.assert_array_equal(np.array(again.classifier.weight), np.array(new.classifier.weight))
    _shard(folder, {k: v for k, v in case["weights"].items() if not k.startswith("regression.")})
    with pytest.raises(ValueError, match="holds both model.safetensors and model.safetensors.index.json"):
        mlx_albert.load(folder)


def test_a_kill_during_save_pretrained_leaves_the_old_model(folder):
    import subprocess
    import sys

    before = np.array(mlx_albert.load(folder).classifier.weight)
    script = f"""
import os, signal
import mlx_albert, mlx_albert.weights as w
config = mlx_albert.load({str(folder)!r}).config
three = config.replace(num_labels=3, id_to_label={{}}, label_to_id={{}})
model = mlx_albert.AlbertForSequenceClassification(three)
w.write_json = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies between weights and config
import mlx_albert.pretrained as p
p.write_json = w.write_json
model.save_pretrained({str(folder)!r})
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, cwd=folder.parent.parent
    )
    assert done.returncode == -9
    after = mlx_albert.load(folder)  # (3, H) weights with a (2, H) config would not load
    np.testing.assert_array_equal(np.array(after.classifier.weight), before)
    leftovers = [p for p in folder.parent.iterdir() if p.name.startswith(".m.tmp-")]
    assert leftovers  # the killed writer's staging folder ...
    after.save_pretrained(folder)
    assert not [
        p for p in folder.parent.iterdir() if p.name.startswith(".m.")
    ]  # ... cleaned by the next save


def test_half_precision_checkpoints_compute_in_float32_on_the_cpu(caplog, monkeypatch):
    """The shipped model is float16: on the CPU backend (no fast half-precision kernels) it loads as
    float32 unless half precision is asked for, said once at INFO; GPU backends keep the stored dtype.
    dtype takes the CLI's names as well as mx dtypes."""
    import mlx.core as mx

    from mlx_albert import pretrained

    monkeypatch.setattr(pretrained, "_told_float32", False)
    with caplog.at_level(logging.INFO, logger="mlx_albert.pretrained"):
        model = mlx_albert.load("pydoc-small")
        mlx_albert.load("pydoc-small")
    said = [r for r in caplog.records if "computing in float32" in r.getMessage()]
    assert model.dtype == (mx.float32 if mx.default_device() == mx.cpu else mx.float16)
    assert len(said) == (1 if mx.default_device() == mx.cpu else 0) and said[0].levelno == logging.INFO
    for asked, got in (("float16", mx.float16), (mx.bfloat16, mx.bfloat16), ("auto", mx.float16)):
        assert mlx_albert.load("pydoc-small", dtype=asked).dtype == got, asked
    assert mlx_albert.pipeline("fill-mask", "pydoc-small", dtype="float32").model.dtype == mx.float32
    with pytest.raises(ValueError, match=r"must be one of \['float32', 'float16', 'bfloat16', 'auto'\]"):
        mlx_albert.load("pydoc-small", dtype="float64")
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))  # the rule on a GPU backend
    assert pretrained.compute_dtype(None, mx.float16, "x") == mx.float16
    assert pretrained.compute_dtype(None, mx.float32, "x") == mx.float32


def test_the_shipped_model_has_a_short_name_that_works_in_any_folder(tmp_path, monkeypatch):
    from mlx_albert.hub import bundled, resolve

    monkeypatch.chdir(tmp_path)
    assert resolve("pydoc-small") == resolve("albert-pydoc-small") == bundled("pydoc-small")
    assert (bundled("pydoc-small") / "model.safetensors").is_file()
    (tmp_path / "pydoc-small").mkdir()  # a folder of that name where the user is: theirs wins
    assert resolve("pydoc-small") == Path("pydoc-small")
