"""Every architecture equals transformers (float32): outputs, hidden states, attentions, losses.

Tolerances: PARITY (1e-4) absolute for activations (float32 through a few layers accumulates ~1e-6;
the erf/tanh approximations add <2e-6), PARITY relative for losses (tolerances.py)."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import MODES, case_folder, get_case
from oracle import ARCHITECTURES, CONFIGS
from tolerances import PARITY

import mlx_albert

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
LABEL_INPUTS = ("labels", "sentence_order_label", "start_positions", "end_positions")


def assert_close(name, ours, ref, atol=PARITY):
    ours = np.array(ours.astype(mx.float32) if isinstance(ours, mx.array) else ours)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs transformers {ref.shape}"
    err = np.abs(ours - ref).max() if ref.size else 0.0
    assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"


def assert_loss_close(name, ours, ref):
    ours, ref = float(ours), float(np.asarray(ref).reshape(-1)[0])  # safetensors stores 0-d as (1,)
    assert abs(ours - ref) <= PARITY * max(1.0, abs(ref)), f"{name}: {ours} vs transformers {ref}"


def compare(out, expected: dict, prefix: str = ""):
    for key, ref in expected.items():
        field, _, index = key.partition(".")
        value = out[field] if not index else out[field][int(index)]
        if field == "loss":
            assert_loss_close(prefix + key, value, ref)
        else:
            assert_close(prefix + key, value, ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_transformers(name, arch, mode, tmp_path):
    case = get_case(name, arch, mode)
    model = mlx_albert.load(case_folder(case, tmp_path / "hf"))
    assert type(model).__name__ == arch
    inputs = {k: v for k, v in case["inputs"].items() if k in MODEL_INPUTS + LABEL_INPUTS}
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    expected = {k: v for k, v in case["outputs"].items() if k.split(".")[0] in out.__dataclass_fields__}
    n_layers = case["hf_config"]["num_hidden_layers"] * case["hf_config"]["inner_group_num"]
    assert len(out.hidden_states) == 1 + n_layers and len(out.attentions) == n_layers
    compare(out, expected)
    if arch == "AlbertForSequenceClassification":
        base = {k: case["inputs"][k] for k in MODEL_INPUTS}
        multi = model(**base, labels=case["inputs"]["labels_multi"])
        assert_loss_close("loss_multi", multi.loss, case["outputs"]["loss_multi"])
        reg_model = mlx_albert.load(case_folder(case, tmp_path / "reg", regression=True))
        reg = reg_model(**base, labels=case["inputs"]["labels_regression"])
        compare(
            reg,
            {
                k.removeprefix("regression."): v
                for k, v in case["outputs"].items()
                if k.startswith("regression.")
            },
            "regression.",
        )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_defaults_match_explicit_inputs(arch, tmp_path):
    """Missing inputs default like transformers: mask of ones, token types 0, positions 0..L-1."""
    case = get_case("factorised", arch, "golden")
    model = mlx_albert.load(case_folder(case, tmp_path))
    ids = case["inputs"]["input_ids"]
    implicit = model(ids)
    explicit = model(
        ids,
        attention_mask=np.ones_like(ids),
        token_type_ids=np.zeros_like(ids),
        position_ids=np.broadcast_to(np.arange(ids.shape[-1]), ids.shape),
    )
    for key in implicit.keys():
        assert np.array_equal(np.array(implicit[key]), np.array(explicit[key])), key
