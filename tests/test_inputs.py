"""Bad inputs get errors that name the problem and the fix; good ones in any array type work."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import tiny_config
from tolerances import forward_tol

from mlx_albert import (
    AlbertForMultipleChoice,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
)


@pytest.fixture(scope="module")
def model():
    return AlbertModel(tiny_config())


IDS = np.array([[2, 5, 9, 3], [2, 7, 3, 0]])


@pytest.mark.parametrize(
    "ids, match",
    [
        (np.array([[2, 50, 3]]), r"input_ids must be in \[0, 50\).*\[2, 50\]"),
        (np.array([[2, -1, 3]]), r"input_ids must be in \[0, 50\)"),
        (np.ones((1, 17), int), "exceeds max_positions=16: truncate"),
        (np.array([2, 5, 3]), r"shape \(batch, seq\).*input_ids\[None\]"),
        (np.array([[2.0, 5.0]]), "must hold integers"),
        (None, "input_ids is required"),
        (np.zeros((1, 0), int), r"input_ids has shape \(1, 0\): every batch needs at least one sequence"),
        (np.zeros((0, 4), int), r"input_ids has shape \(0, 4\)"),
    ],
)
def test_bad_input_ids(model, ids, match):
    with pytest.raises((ValueError, TypeError), match=match):
        model(ids)


@pytest.mark.parametrize("name", ["attention_mask", "token_type_ids", "position_ids"])
def test_mismatched_shapes(model, name):
    with pytest.raises(ValueError, match=rf"{name} has shape \(2, 3\) but input_ids has \(2, 4\)"):
        model(IDS, **{name: np.zeros((2, 3), int)})


def test_out_of_range_types_and_positions(model):
    with pytest.raises(ValueError, match="token_type_ids must be in .*max_token_types=2"):
        model(IDS, token_type_ids=np.full(IDS.shape, 2))
    with pytest.raises(ValueError, match="position_ids must be in .*max_positions=16"):
        model(IDS, position_ids=np.full(IDS.shape, 16))


def test_array_types_agree(model):
    ref = np.array(model(mx.array(IDS)).last_hidden_state)
    # the same ids and masks in other containers: the same arithmetic, bit for bit
    for ids in (IDS, IDS.tolist(), IDS.astype(np.int32), mx.array(IDS, dtype=mx.uint16)):
        assert np.array_equal(np.array(model(ids).last_hidden_state), ref)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    as_bool = np.array(model(IDS, attention_mask=mask.astype(bool)).last_hidden_state)
    assert np.array_equal(as_bool, np.array(model(IDS, attention_mask=mask).last_hidden_state))


def test_padding_does_not_leak(model):
    """Padded positions must not change the real tokens' outputs."""
    short = np.array(model(np.array([[2, 7, 3]])).last_hidden_state)[0]
    padded = np.array(
        model(np.array([[2, 7, 3, 0, 0]]), attention_mask=np.array([[1, 1, 1, 0, 0]])).last_hidden_state
    )[0, :3]
    # a wider row: the same sums over other widths (masked keys add exact zeros)
    assert np.abs(short - padded).max() <= forward_tol(model.config, 5, np.abs(short).max())


def test_multiple_choice_rank():
    config = tiny_config(num_blocks=1)
    mc = AlbertForMultipleChoice(config)
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq\)"):
        mc(IDS)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        mc(IDS[None], attention_mask=np.ones((1, 2, 3), int))
    assert mc(np.stack([IDS, IDS])).logits.shape == (2, 2)


def test_label_ranges():
    config = tiny_config(num_blocks=1, num_labels=3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        AlbertForSequenceClassification(config)(IDS, labels=np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) or -100"):
        AlbertForTokenClassification(config)(IDS, labels=np.full(IDS.shape, 7))
    with pytest.raises(ValueError, match="multi-label labels must have shape"):
        AlbertForSequenceClassification(config)(IDS, labels=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_labels=2"):
        AlbertForQuestionAnswering(config)


def test_chunked_attention_equals_whole(model, monkeypatch):
    """Long inputs split queries into chunks on the explicit path; the result must not change."""
    from mlx_albert.attention import AlbertAttention

    ids = np.random.default_rng(0).integers(0, 50, (2, 13))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    whole = np.array(model(ids, attention_mask=mask).last_hidden_state)
    monkeypatch.setattr(AlbertAttention, "SCORES_BUDGET", 2 * 2 * 13 * 4 * 3)  # 3 queries a chunk
    chunked = np.array(model(ids, attention_mask=mask).last_hidden_state)
    assert np.abs(whole - chunked).max() <= forward_tol(model.config, 13, np.abs(whole).max())


def test_pairwise_mask_packs_sequences(model):
    """A (batch, seq, seq) mask with restarted positions runs two sequences in one row: each gets
    its own forward's states (the packing `embed` uses); chunked queries slice the mask too."""
    from mlx_albert.attention import AlbertAttention

    a, b = [2, 7, 9, 11, 3], [2, 5, 3]
    ids = np.array([a + b + [0]])
    segment = np.array([0] * 5 + [1] * 3 + [-1])
    mask = segment[:, None] == segment[None, :]
    positions = np.array([list(range(5)) + list(range(3)) + [0]])
    packed = np.array(model(ids, attention_mask=mask[None], position_ids=positions).last_hidden_state)[0]
    for seq, part in ((a, packed[:5]), (b, packed[5:8])):
        alone = np.array(model(np.array([seq])).last_hidden_state)[0]
        assert np.abs(alone - part).max() <= forward_tol(model.config, 9, np.abs(alone).max())
    original = AlbertAttention.SCORES_BUDGET
    try:
        AlbertAttention.SCORES_BUDGET = 1 * 2 * 9 * 4 * 2  # 2 queries a chunk on the explicit path
        chunked = model(ids, attention_mask=mask[None], position_ids=positions).last_hidden_state
    finally:
        AlbertAttention.SCORES_BUDGET = original
    assert np.abs(np.array(chunked)[0] - packed).max() <= forward_tol(model.config, 9, np.abs(packed).max())
    with pytest.raises(ValueError, match=r"or \(1, 9, 9\) for a query-by-key mask"):
        model(ids, attention_mask=mask[None, :4])


def test_every_door_checks_token_ids_alike(model):
    """One check (inputs.check_bounds), one message: the model, the pipelines' host check, training
    data and a server request's token id lists."""
    from types import SimpleNamespace

    from mlx_albert.batching import check_ranges
    from mlx_albert.records import DataError
    from mlx_albert.service import RequestError, Settings
    from mlx_albert.service.embeddings import inputs
    from mlx_albert.tasks import Dataset

    want = r"input_ids must be in \[0, 50\) \(vocab_size=50\), found values in \[2, 77\]"
    ids = np.array([[2, 77, 3]])
    with pytest.raises(ValueError, match=want):
        model(ids)
    with pytest.raises(ValueError, match=want):
        check_ranges(model.config, {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})
    one = r"holds token id 77 outside the model's vocabulary \(input_ids outside \[0, 50\), vocab_size=50\)"
    with pytest.raises(DataError, match="training example 1 " + one):
        Dataset(None, [{"input_ids": [2, 3]}, {"input_ids": ids[0].tolist()}]).check_ids(model.config)
    served = SimpleNamespace(encoder=SimpleNamespace(max_seq_length=16), model=model)
    with pytest.raises(RequestError, match="input 0 " + one) as e:
        inputs([ids[0].tolist()], served, Settings())
    assert e.value.param == "input"
